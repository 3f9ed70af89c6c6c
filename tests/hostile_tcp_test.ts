// The hostile-peer matrix against tcp-server: garbage and TLS bytes are just
// bytes to an echo server (echoed exactly), resets cost their connection,
// half-closes get their whole echo, and a peer that vanishes is reaped by the
// idle timeout. After each attack a well-behaved client gets 64 KiB echoed
// byte-exact and the process is alive.
import assert from "node:assert/strict";
import {
  byteAttacks,
  captureClientHello,
  frameAttacks,
  launch,
  makeCertFiles,
  type Outcome,
  printMatrix,
  runMatrix,
  upgradeAttacks,
  wsBytesToEchoServer,
} from "./support/hostile/mod.ts";

Deno.test("tcp-server survives the hostile-peer matrix", async (t) => {
  const certs = await makeCertFiles();
  const rows: Outcome[] = [];
  try {
    const hello = await captureClientHello();
    await using target = await launch("tcp", certs, ["--idle-timeout", "0.5"]);
    await runMatrix(t, target, "tcp", byteAttacks(hello), rows);
    // The WebSocket attacks' bytes are bytes like any other to an echo server.
    await runMatrix(t, target, "tcp", [
      wsBytesToEchoServer([...upgradeAttacks(), ...frameAttacks(65536)]),
    ], rows);
    const { code } = await target.stop();
    assert.equal(code, 0);
  } finally {
    printMatrix("tcp-server: hostile peers", rows);
    await Deno.remove(certs.dir, { recursive: true });
  }
});
