// The shared launcher (support/process.ts) on small `deno eval` programs:
// the listening line parsed (IPv6 too), stderr collected as it comes, every
// way of failing to start reported with the program's stderr, and a program
// that ignores SIGTERM still stopped — with nothing left behind for the
// sanitizers.
import assert from "node:assert/strict";
import { parseListeningLine, ProgramStartError, runCommand, startProgram } from "./process.ts";

/** `deno eval` of `code`, as startProgram/runCommand arguments. */
const evalArgs = (code: string) => ["eval", code];

/** A program that prints `line`, logs to stderr, and exits 0 on SIGTERM. */
const server = (line: string) =>
  evalArgs(`
    Deno.addSignalListener("SIGTERM", () => { console.error("stopping"); Deno.exit(0); });
    console.log(${JSON.stringify(line)});
    console.error("ready");
    setInterval(() => {}, 1000);
  `);

Deno.test("parseListeningLine() reads the four schemes, IPv6 in brackets, and nothing else", () => {
  assert.deepEqual(parseListeningLine("listening on tcp://127.0.0.1:7000"), {
    scheme: "tcp",
    hostname: "127.0.0.1",
    port: 7000,
  });
  assert.deepEqual(parseListeningLine("listening on wss://[::1]:8443"), {
    scheme: "wss",
    hostname: "::1",
    port: 8443,
  });
  assert.deepEqual(parseListeningLine("listening on tls://localhost:7443"), {
    scheme: "tls",
    hostname: "localhost",
    port: 7443,
  });
  for (
    const bad of [
      "listening on ws://127.0.0.1:8080/", // a path
      "listening on http://127.0.0.1:80", // another scheme
      "listening on tcp://::1:7000", // IPv6 without brackets
      "listening on tcp://127.0.0.1:0", // not a real port
      "listening on tcp://127.0.0.1:70000",
      "listening on tcp://127.0.0.1:7000 (extra)",
      "",
    ]
  ) {
    assert.equal(parseListeningLine(bad), undefined, bad);
  }
});

Deno.test("startProgram() waits for the listening line, collects stderr, and stop() reports the exit", async () => {
  await using program = await startProgram({ args: server("listening on tcp://[::1]:4321") });
  assert.equal(program.line, "listening on tcp://[::1]:4321");
  assert.deepEqual(program.address, { scheme: "tcp", hostname: "::1", port: 4321 });
  assert.equal(program.port, 4321);
  assert.equal(await program.waitForStderr(/^ready$/), "ready");
  const { code, signal, stdout, stderr } = await program.stop();
  assert.equal(code, 0);
  assert.equal(signal, null);
  assert.equal(stdout, "");
  assert.equal(stderr, "ready\nstopping\n");
  assert.deepEqual(program.stderrLines, ["ready", "stopping"]);
  assert.equal(program.exited?.code, 0);
  // stop() is idempotent.
  assert.equal((await program.stop()).code, 0);
});

Deno.test("startProgram() rejects with the exit code and stderr of a program that exits before listening", async () => {
  const err = await startProgram({
    name: "failing",
    args: evalArgs(`console.error("no such file: x.pem"); Deno.exit(3);`),
  }).catch((e) => e);
  assert.ok(err instanceof ProgramStartError);
  assert.equal(err.code, 3);
  assert.equal(err.stderr, "no such file: x.pem\n");
  assert.equal(err.reason, "exited with code 3 before listening");
  assert.match(err.message, /^failing exited with code 3 before listening; stderr:\nno such file/);
});

Deno.test("startProgram() rejects a first line that is not a listening line, and kills the program", async () => {
  const err = await startProgram({ args: server("hello") }).catch((e) => e);
  assert.ok(err instanceof ProgramStartError);
  assert.equal(err.line, "hello");
  assert.match(err.reason, /printed "hello" instead of a listening line/);
});

Deno.test("startProgram() gives up at its deadline when no line comes, and reaps the program", async () => {
  const err = await startProgram({
    args: evalArgs(`console.error("thinking"); setInterval(() => {}, 1000);`),
    listenTimeout: 1000,
  }).catch((e) => e);
  assert.ok(err instanceof ProgramStartError);
  assert.equal(err.code, undefined);
  assert.match(err.reason, /no listening line within 1 s/);
});

Deno.test("stop() SIGKILLs a program that ignores SIGTERM once its timeout passes", async () => {
  const program = await startProgram({
    args: evalArgs(`
      Deno.addSignalListener("SIGTERM", () => console.error("ignored"));
      console.log("listening on ws://127.0.0.1:9999");
      setInterval(() => {}, 1000);
    `),
  });
  const { code, signal } = await program.stop("SIGTERM", { timeout: 500 });
  assert.equal(code, 137);
  assert.equal(signal, "SIGKILL");
});

Deno.test("waitForStderr() rejects when stderr ends without a matching line", async () => {
  await using program = await startProgram({ args: server("listening on tls://127.0.0.1:1") });
  const never = assert.rejects(
    program.waitForStderr(/never logged/),
    /stderr ended without a line matching \/never logged\//,
  );
  await program.stop();
  await never;
});

Deno.test("an aborted signal takes a started program down", async () => {
  const aborter = new AbortController();
  const program = await startProgram({
    args: server("listening on tcp://127.0.0.1:2"),
    signal: aborter.signal,
  });
  aborter.abort();
  const { signal } = await program.stop(null);
  assert.equal(signal, "SIGKILL");
});

Deno.test("runCommand() feeds stdin, collects output, and kills a program past its timeout", async () => {
  const echo = await runCommand({
    args: evalArgs(`
      const text = await new Response(Deno.stdin.readable).text();
      console.log(text.toUpperCase());
      console.error("done");
    `),
    stdin: "shout",
  });
  assert.equal(echo.code, 0);
  assert.equal(echo.stdout, "SHOUT\n");
  assert.equal(echo.stderr, "done\n");
  assert.equal(echo.timedOut, false);

  const slow = await runCommand({ args: evalArgs(`setInterval(() => {}, 1000);`), timeout: 500 });
  assert.equal(slow.timedOut, true);
  assert.equal(slow.signal, "SIGKILL");

  await assert.rejects(
    runCommand({ command: "surely-no-such-program-here", args: [] }),
    Deno.errors.NotFound,
  );
});

Deno.test("runCommand({ holdStdinUntil }) ends stdin only once stdout shows the text", async () => {
  // Answers a moment after its input; says "eof" when stdin ends. Held, the
  // answer comes first whatever the timing (unheld, stdin would end at once
  // and "eof" would come first).
  const args = evalArgs(`
    const reader = Deno.stdin.readable.getReader();
    const { value } = await reader.read();
    const answered = new Promise((done) => setTimeout(() => {
      console.log("answer to " + new TextDecoder().decode(value).trim());
      done();
    }, 200));
    while (!(await reader.read()).done);
    console.log("eof");
    await answered;
  `);
  const held = await runCommand({ args, stdin: "hi\n", holdStdinUntil: "answer to hi" });
  assert.equal(held.code, 0, held.stderr);
  assert.equal(held.stdout, "answer to hi\neof\n");
});
