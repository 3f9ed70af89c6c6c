// deno-lint-ignore-file no-console
/**
 * `@netkit/netkit/certs`: imported, the certificate library (everything
 * `certs/mod.ts` exports, re-exported here); run, the `certs` program
 * (as std's `file_server.ts` is both). The program writes a development CA and a server certificate
 * signed by it — `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem` — into
 * `--out`, for `--hosts`, valid `--days`. Refuses to overwrite without
 * `--force`. The work is the library's ({@linkcode writeDevCerts}); this file
 * parses flags and prints.
 *
 * ```sh
 * deno task certs
 * deno run -A jsr:@netkit/netkit/certs --out certs --hosts localhost,127.0.0.1,::1 --days 30
 * ```
 *
 * @module
 */
import { intFlag, parseFlags, runMain, UsageError } from "./_common.ts";

export * from "../certs/mod.ts";
import { DEFAULT_HOSTS } from "../certs/create.ts";
import { InvalidCertOptionError } from "../certs/errors.ts";
import { writeDevCerts } from "../certs/write.ts";

const PROGRAM = "certs";

const USAGE = `
Usage: certs [--out DIR] [--hosts LIST] [--days N] [--force]

Writes a development CA and a server certificate signed by it:
ca.pem (trust this in clients), ca-key.pem, server.pem and server-key.pem.

  --out DIR     folder to write into, created when missing (default: certs/)
  --hosts LIST  comma-separated DNS names and IP addresses the server
                certificate covers (default: ${DEFAULT_HOSTS.join(",")})
  --days N      days of validity (default: 30)
  --force       overwrite files that are already there
  -h, --help    show this help
`;

/**
 * Runs the program on `args` (flags as on the command line) and prints what
 * it wrote. Throws {@linkcode UsageError} for a bad flag and the library's
 * errors for the rest; {@linkcode main} turns them into exit codes 2 and 1.
 *
 * @param args The command-line flags, e.g. `["--out", "certs", "--force"]`.
 *
 * @example
 * ```ts
 * import { run } from "./certs.ts";
 *
 * const out = await Deno.makeTempDir();
 * await run(["--out", out, "--hosts", "localhost,::1", "--days", "7"]);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function run(args: string[]): Promise<void> {
  const flags = parseFlags(args, {
    out: { type: "string" },
    hosts: { type: "string" },
    days: { type: "string" },
    force: { type: "boolean" },
  });
  const days = intFlag(flags.days, "days", 30, { min: 1, max: 36500 });
  const hosts = flags.hosts === undefined
    ? [...DEFAULT_HOSTS]
    : flags.hosts.split(",").map((h) => h.trim()).filter((h) => h !== "");
  const out = flags.out ?? "certs/";

  const written = await writeDevCerts({
    out,
    hosts,
    days,
    force: flags.force ?? false,
    forceHint: "pass --force to overwrite it",
  }).catch((err) => {
    // A host that is no host is a bad flag value: exit 2, like a bad --days.
    if (err instanceof InvalidCertOptionError) {
      throw new UsageError(`--${err.option}: ${err.message}`);
    }
    throw err;
  });

  const { files } = written;
  console.log(`wrote ${files.ca} (the CA certificate: trust it in clients)`);
  console.log(`wrote ${files.caKey} (the CA key: keep it private)`);
  console.log(`wrote ${files.cert} (the server certificate)`);
  console.log(`wrote ${files.key} (the server key)`);
  console.log(
    `for ${written.hosts.join(", ")}; valid until ${
      written.notAfter.toISOString().replace(".000Z", "Z")
    } (${days} days)`,
  );
}

/**
 * Runs the program on `Deno.args` and exits: 0 when the files are written, 2
 * for a bad flag, 1 for anything else (a file already there without
 * `--force`, an unwritable folder), with one line on stderr.
 *
 * @example
 * ```ts ignore
 * import { main } from "./certs.ts";
 * await main(); // as `deno run -A cli/certs.ts --out certs`
 * ```
 */
export function main(): Promise<never> {
  return runMain(PROGRAM, USAGE, run);
}

if (import.meta.main) await main();
