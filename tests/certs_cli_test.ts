// The certs program, run as a user runs it: `deno run -A cli/certs.ts ...` (the `./certs` entry point)
// from the repository root. Exit codes, stdout, stderr and the files it
// writes (or, without --force, leaves alone) are the contract.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FILES = ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function certs(...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/certs.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const entry of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
    files.set(entry.name, await Deno.readFile(`${dir}/${entry.name}`));
  }
  return files;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netkit_certs_cli_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Exit 2 with the problem on stderr's first line, no stack trace, nothing on stdout. */
function assertUsageError(run: Run, problem: RegExp): void {
  assert.equal(run.code, 2, run.stderr);
  assert.equal(run.stdout, "");
  const [first] = run.stderr.trim().split("\n");
  assert.match(first, /^certs: /);
  assert.match(first, problem);
  assert.doesNotMatch(run.stderr, /^\s+at /m, "no stack trace");
}

Deno.test("certs: writes the four files into a new --out folder and says so", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/a/b`;
    const run = await certs("--out", out);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.deepEqual([...(await snapshot(out)).keys()], [...FILES].sort());
    const lines = run.stdout.trim().split("\n");
    assert.equal(lines.length, 5, run.stdout);
    for (const name of FILES) assert.match(run.stdout, new RegExp(`^wrote ${out}/${name} `, "m"));
    assert.match(
      lines[4],
      /^for localhost, 127\.0\.0\.1, ::1; valid until \d{4}-\d\d-\d\dT[\d:]+Z \(30 days\)$/,
    );

    assert.match(await Deno.readTextFile(`${out}/ca.pem`), /^-----BEGIN CERTIFICATE-----\n/);
    assert.match(await Deno.readTextFile(`${out}/server.pem`), /^-----BEGIN CERTIFICATE-----\n/);
    assert.match(
      await Deno.readTextFile(`${out}/server-key.pem`),
      /^-----BEGIN PRIVATE KEY-----\n/,
    );
    assert.match(await Deno.readTextFile(`${out}/ca-key.pem`), /^-----BEGIN PRIVATE KEY-----\n/);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(`${out}/server-key.pem`)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(`${out}/ca-key.pem`)).mode! & 0o777, 0o600);
    }

    // What it wrote serves TLS to a client that trusts ca.pem.
    using listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(`${out}/server.pem`),
      key: await Deno.readTextFile(`${out}/server-key.pem`),
    });
    const accepted = listener.accept();
    using client = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      caCerts: [await Deno.readTextFile(`${out}/ca.pem`)],
    });
    using server = await accepted;
    await Promise.all([client.handshake(), server.handshake()]);
  });
});

Deno.test("certs: --hosts and --days", async () => {
  await withTempDir(async (dir) => {
    const run = await certs(
      "--out",
      dir,
      "--hosts",
      "app.example.test, 10.0.0.1,::1",
      "--days",
      "3",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stdout,
      /^for app\.example\.test, 10\.0\.0\.1, ::1; valid until .* \(3 days\)$/m,
    );
    const notAfter = Date.parse(/valid until (\S+)/.exec(run.stdout)![1]);
    const threeDays = 3 * 24 * 60 * 60 * 1000;
    assert.ok(Math.abs(notAfter - Date.now() - threeDays) < 5 * 60_000, run.stdout);
  });
});

Deno.test("certs: refuses to overwrite without --force, touching nothing; --force overwrites", async () => {
  await withTempDir(async (dir) => {
    const first = await certs("--out", dir);
    assert.equal(first.code, 0, first.stderr);
    const before = await snapshot(dir);
    const mtimes = FILES.map((name) => Deno.statSync(`${dir}/${name}`).mtime?.getTime());

    const again = await certs("--out", dir);
    assert.equal(again.code, 1, again.stderr);
    assert.equal(again.stdout, "");
    const lines = again.stderr.trim().split("\n");
    assert.equal(lines.length, 1, again.stderr);
    assert.equal(
      lines[0],
      `certs: ${dir}/ca.pem already exists: pass --force to overwrite it, or write to another folder`,
    );
    assert.deepEqual(await snapshot(dir), before);
    assert.deepEqual(FILES.map((name) => Deno.statSync(`${dir}/${name}`).mtime?.getTime()), mtimes);

    const forced = await certs("--out", dir, "--force");
    assert.equal(forced.code, 0, forced.stderr);
    const after = await snapshot(dir);
    assert.deepEqual([...after.keys()], [...before.keys()]);
    for (const [name, bytes] of before) assert.notDeepEqual(after.get(name), bytes, name);
  });
});

Deno.test("certs: any one file already there makes it refuse", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/server.pem`, "not mine to overwrite");
    const run = await certs("--out", dir);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /server\.pem already exists: pass --force/);
    assert.deepEqual([...(await snapshot(dir)).keys()], ["server.pem"]);
    assert.equal(await Deno.readTextFile(`${dir}/server.pem`), "not mine to overwrite");
  });
});

Deno.test("certs: bad flags exit 2 with the problem on stderr, writing nothing", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/out`;
    assertUsageError(await certs("--out", out, "--days", "abc"), /--days must be a whole number/);
    assertUsageError(await certs("--out", out, "--days", "0"), /--days must be between 1 and/);
    assertUsageError(await certs("--out", out, "--bogus"), /--bogus/);
    assertUsageError(await certs("--out", out, "extra"), /extra/);
    assertUsageError(
      await certs("--out", out, "--hosts", "localhost,not a host"),
      /--hosts: "not a host" is neither a DNS name nor an IP address/,
    );
    assertUsageError(await certs("--out", out, "--hosts", ","), /--hosts: no hosts given/);
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
  });
});

Deno.test("certs: --help prints usage and exits 0", async () => {
  const run = await certs("--help");
  assert.equal(run.code, 0, run.stderr);
  for (const flag of ["--out", "--hosts", "--days", "--force"]) {
    assert.match(run.stdout, new RegExp(flag));
  }
  assert.match(run.stdout, /default: certs\//);
  assert.match(run.stdout, /default: localhost,127\.0\.0\.1,::1/);
});

Deno.test("certs: an --out that cannot be made is one line and exit 1", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    const run = await certs("--out", `${dir}/file/sub`);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.match(run.stderr, /^certs: cannot write certificates to .*file\/sub: /);
  });
});
