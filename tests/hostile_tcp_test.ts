// The hostile-peer matrix against tcp-server: garbage and TLS bytes are just
// bytes to an echo server (echoed exactly), resets cost their connection,
// half-closes get their whole echo, and a peer that vanishes is reaped by the
// idle timeout. After each attack a well-behaved client gets 64 KiB echoed
// byte-exact and the process is alive.
import assert from "node:assert/strict";
import {
  byteAttacks,
  frameAttacks,
  survives,
  upgradeAttacks,
  wsBytesToEchoServer,
} from "./support/hostile/mod.ts";

Deno.test("tcp-server survives the hostile-peer matrix", async (t) => {
  const { code } = await survives(t, {
    kind: "tcp",
    args: ["--idle-timeout", "0.5"],
    attacks: (hello) => [
      ...byteAttacks(hello),
      // The WebSocket attacks' bytes are bytes like any other to an echo server.
      wsBytesToEchoServer([...upgradeAttacks(), ...frameAttacks(65536)]),
    ],
    title: "tcp-server: hostile peers",
  });
  assert.equal(code, 0);
});
