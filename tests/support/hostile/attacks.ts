/**
 * The ways a hostile peer behaves, each returning what it observed and its
 * local port (the server logs it): bytes sent on a chosen transport, a
 * slowloris trickle, a reset mid-write, a peer that vanishes, one that stops
 * reading, and half-closed exchanges.
 *
 * @module
 */
import { encodeFrame } from "../../../websocket/codec/mod.ts";
import { pseudoRandomBytes } from "../bytes.ts";
import { delay as sleep } from "../time.ts";
import { describeBytes } from "./describe.ts";
import { RawPeer } from "./peer.ts";
import { isWs, type ServerKind, type Target } from "./target.ts";

const encoder = new TextEncoder();

/** What one attack produced. */
export interface Hit {
  /** What the attacker observed. */
  observed: string;
  /** The attacker's local port (the server logs it). */
  port: number;
}

/** One row of the matrix: an attack and the outcome it must have on each server kind. */
export interface Attack {
  name: string;
  /** The outcome it must have, per server kind; a kind without an entry is not attacked. */
  expect: Partial<Record<ServerKind, RegExp>>;
  /** Also required of the server's log lines about the connection. */
  logged?: Partial<Record<ServerKind, RegExp>>;
  /** The bytes it sends, when it is one write (for the echo servers' combined step). */
  bytes?: Uint8Array;
  run(target: Target): Promise<Hit>;
}

/**
 * How an attacker connects: `"tcp"`, plain TCP whatever the server speaks;
 * `"native"`, TLS for the TLS kinds, after the handshake; `"upgraded"`, a
 * finished WebSocket upgrade.
 */
export type Transport = "tcp" | "native" | "upgraded";

/** Opens a raw connection to `target` over `transport`. */
function openPeer(target: Target, transport: Transport): Promise<RawPeer> {
  return transport === "tcp"
    ? RawPeer.tcp(target.port)
    : transport === "native"
    ? RawPeer.open(target)
    : RawPeer.upgraded(target);
}

/**
 * What a flooding attacker writes again and again: 64 KiB of bytes, or over
 * an upgraded connection a masked 32 KiB binary frame.
 */
function floodChunk(transport: Transport, seed: number): Uint8Array {
  return transport === "upgraded"
    ? encodeFrame(0x2, pseudoRandomBytes(32 * 1024, seed), { mask: true })
    : pseudoRandomBytes(64 * 1024, seed);
}

/**
 * Opens a raw connection over `transport` (see {@linkcode Transport}), lets
 * `act` attack, then observes the answer.
 */
export async function hit(
  target: Target,
  transport: Transport,
  act: (peer: RawPeer) => Promise<Uint8Array | void>,
  { timeout = 3000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = await openPeer(target, transport);
  await using _peer = peer;
  let sent: Uint8Array | void;
  try {
    sent = await act(peer);
  } catch (err) {
    // The server may hang up while the attack is still writing.
    const what = err instanceof Error ? err.name : String(err);
    const rest = await peer.observe(timeout);
    return { observed: `write failed (${what}); ${rest}`, port: peer.localPort };
  }
  return {
    observed: await peer.observe(timeout, sent ?? undefined, transport === "upgraded"),
    port: peer.localPort,
  };
}

/** Sends `bytes` on the given transport (and a FIN when `fin`), then observes. */
export function sendBytes(
  target: Target,
  transport: "tcp" | "native" | "upgraded",
  bytes: Uint8Array | string,
  { fin = false, timeout = 3000 }: { fin?: boolean; timeout?: number } = {},
): Promise<Hit> {
  const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
  return hit(target, transport, async (peer) => {
    await peer.write(data);
    if (fin) await peer.closeWrite();
    return data;
  }, { timeout });
}

/**
 * Writes one byte every `everyMs` until the server cuts the peer off, or for
 * `maxMs`: a slowloris peer is never idle, so only a deadline stops it.
 */
export async function trickle(
  target: Target,
  transport: "tcp" | "native",
  bytes: Uint8Array,
  { everyMs = 100, maxMs = 4000 }: { everyMs?: number; maxMs?: number } = {},
): Promise<Hit> {
  const peer = transport === "tcp" ? await RawPeer.tcp(target.port) : await RawPeer.open(target);
  await using _peer = peer;
  const started = performance.now();
  let cut = false;
  const answer = peer.drain(maxMs + 1000).then((r) => {
    cut = r.end !== "timeout";
    return r;
  });
  let sent = 0;
  while (!cut && performance.now() - started < maxMs && sent < bytes.length) {
    try {
      await peer.write(bytes.subarray(sent, sent + 1));
    } catch {
      cut = true;
      break;
    }
    sent++;
    await sleep(everyMs);
  }
  const ms = performance.now() - started;
  const seconds = (ms / 1000).toFixed(1);
  if (!cut) {
    // Still served after maxMs: stop here (closing ends the drain too).
    peer.close();
    const { bytes: got } = await answer;
    const answered = got.length > 0 ? `${describeBytes(got)} back, ` : "";
    return {
      observed: `${answered}not cut off: ${sent} bytes in ${seconds}s`,
      port: peer.localPort,
    };
  }
  const { bytes: got } = await answer;
  const answered = got.length > 0 ? `${describeBytes(got)}, ` : "";
  return {
    observed: `${answered}cut off after ${sent} bytes in ${seconds}s`,
    port: peer.localPort,
  };
}

/**
 * Writes `total` bytes without reading any answer; after `afterMs` closes
 * with the echo unread, which sends a RST while the server is writing.
 */
export async function resetMidWrite(
  target: Target,
  transport: "native" | "upgraded",
  { total = 8 << 20, afterMs = 300 }: { total?: number; afterMs?: number } = {},
): Promise<Hit> {
  const peer = await openPeer(target, transport);
  const port = peer.localPort;
  let written = 0;
  const writing = (async () => {
    const chunk = floodChunk(transport, 9);
    try {
      while (written < total) {
        await peer.write(chunk);
        written += chunk.length;
      }
    } catch {
      // The socket was closed under the write: that is the point.
    }
  })();
  await sleep(afterMs);
  // Unread bytes in the receive buffer: closing now sends a RST.
  peer.close();
  await writing;
  await peer.reader.cancel().catch(() => {});
  return { observed: `RST sent after writing ${(written / 1024).toFixed(0)} KiB`, port };
}

/**
 * Sends a little, then goes silent without closing: never reads, never
 * writes, never sends a FIN. The server's idle timeout must reap it; the
 * outcome is what reached the attacker and when the server ended it.
 */
export async function vanish(
  target: Target,
  transport: "native" | "upgraded",
  { timeout = 9000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = await openPeer(target, transport);
  await using _peer = peer;
  if (transport === "upgraded") await peer.send(0x1, "last words");
  else await peer.write("last words\n");
  // Not reading is part of vanishing; the kernel still buffers what arrives.
  const started = performance.now();
  // Reaped means released: wait for the session's end, not only the idle notice.
  const lines = await target.settled(
    peer.localPort,
    timeout,
    new RegExp(`: (close|error:) 127\\.0\\.0\\.1:${peer.localPort}\\b`),
  );
  const ms = performance.now() - started;
  const { bytes } = await peer.drain(100);
  const got = bytes.length > 0 ? `got ${describeBytes(bytes)}; ` : "";
  const reaped = lines.some((l) => /: close 127|closed idle|error: 127/.test(l));
  return {
    observed: `${got}${
      reaped ? `server ended it after ${(ms / 1000).toFixed(1)}s` : "never reaped"
    }`,
    port: peer.localPort,
  };
}

/**
 * Stops reading while the server has lots to send it, and never closes: the
 * server's write blocks. tcp/tls: the idle timeout must reap it; ws: the
 * slow-consumer policy.
 */
export async function stopReading(
  target: Target,
  transport: "native" | "upgraded",
  { timeout = 9000 }: { timeout?: number } = {},
): Promise<Hit> {
  const peer = await openPeer(target, transport);
  await using _peer = peer;
  const started = performance.now();
  let written = 0;
  const writing = (async () => {
    const chunk = floodChunk(transport, 5);
    try {
      while (written < 64 << 20 && performance.now() - started < timeout) {
        await peer.write(chunk);
        written += chunk.length;
      }
    } catch {
      // Cut off by the server.
    }
  })();
  const lines = await target.settled(peer.localPort, timeout);
  const ms = performance.now() - started;
  peer.close();
  await writing;
  const what = lines.some((l) => /closed idle/.test(l))
    ? "idle timeout"
    : lines.some((l) => /slow client/.test(l))
    ? "slow-consumer policy"
    : lines.length > 0
    ? "closed"
    : undefined;
  return {
    observed: what
      ? `wrote ${(written / 1024 / 1024).toFixed(1)} MiB unread; server ended it (${what}) after ${
        (ms / 1000).toFixed(1)
      }s`
      : "never reaped",
    port: peer.localPort,
  };
}

/**
 * Sends, half-closes, and reads everything that comes back until the server
 * closes: tcp/tls 256 KiB echoed byte-exact; ws/wss three 60 kB messages.
 */
export function halfClose(target: Target): Promise<Hit> {
  if (isWs(target.kind)) {
    return hit(target, "upgraded", async (peer) => {
      for (let i = 0; i < 3; i++) await peer.send(0x2, pseudoRandomBytes(60_000, i));
      await peer.closeWrite();
    });
  }
  return echoExchange(target, pseudoRandomBytes(256 * 1024, 4));
}

/** Sends `data` over the server's own transport, half-closes, reads to the end. */
export async function echoExchange(target: Target, data: Uint8Array): Promise<Hit> {
  const peer = await RawPeer.open(target);
  await using _peer = peer;
  // Read while writing: the echo would otherwise fill both buffers.
  const reading = peer.drain(5000);
  await peer.write(data);
  await peer.closeWrite();
  const { bytes, end } = await reading;
  return {
    observed: `${describeBytes(bytes, data)}, ${end === "fin" ? "closed (FIN)" : end}`,
    port: peer.localPort,
  };
}
