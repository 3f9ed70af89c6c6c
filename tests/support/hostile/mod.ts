/**
 * The hostile-peer suite's toolkit, one job per file:
 *
 * - `target.ts`: the server program under attack (spawned, its log kept);
 * - `peer.ts`: a raw attacking connection;
 * - `wire.ts`: the bytes attackers send (garbage, upgrade requests, a ClientHello);
 * - `describe.ts`: what came back, in words;
 * - `attacks.ts`: how a hostile peer behaves (send, trickle, reset, vanish, …);
 * - `byte_attacks.ts`, `ws_attacks.ts`: the attack lists with the outcome each server must show;
 * - `probe.ts`: the well-behaved client run after every attack;
 * - `matrix.ts`: the runner, and a whole test around it; `table.ts`: the outcome table it prints.
 *
 * @module
 */
export {
  type Attack,
  echoExchange,
  halfClose,
  type Hit,
  hit,
  resetMidWrite,
  sendBytes,
  stopReading,
  trickle,
  vanish,
} from "./attacks.ts";
export { byteAttacks } from "./byte_attacks.ts";
export { closeCodeOf, describeBytes, describeFrames, type End, endText } from "./describe.ts";
export { runMatrix, survives } from "./matrix.ts";
export { RawPeer } from "./peer.ts";
export { probe } from "./probe.ts";
export { type Outcome, printMatrix, shortLog } from "./table.ts";
export {
  type CertFiles,
  isTls,
  isWs,
  launch,
  makeCertFiles,
  type ServerKind,
  type Target,
} from "./target.ts";
export { captureClientHello, garbage, upgradeRequest, withRsv } from "./wire.ts";
export { frameAttacks, upgradeAttacks, wsBytesToEchoServer } from "./ws_attacks.ts";
