/**
 * What the bench needs besides its servers: a throwaway certificate, Node
 * with its `ws` package (installed on first use), Bun (from npm when it is
 * not installed), and the open-files limit its children start with.
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { run } from "./_processes.ts";
import type { Ctx } from "./_types.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * A throwaway self-signed certificate for localhost / 127.0.0.1. The one
 * function to swap for netkit's certs module once it exists.
 */
export async function makeCert(dir: string): Promise<Ctx> {
  const certFile = `${dir}/server.pem`;
  const keyFile = `${dir}/server-key.pem`;
  const args = [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout",
    keyFile,
    "-out",
    certFile,
  ];
  const out = await run("openssl", args, 30_000);
  if (out.code !== 0) throw new Error(`openssl req failed: ${out.stderr.trim()}`);
  return { certFile, keyFile, caFile: certFile, serverName: "localhost" };
}

// Pinned, as deno.json pins the ws the tests use.
const NODE_WS = "ws@8.18.3";

/**
 * Node and its `ws` package for the Node broadcast server: `ws` is installed
 * on first use into bench/.build/node_modules (git-ignored). Resolves to why
 * Node cannot run, or `undefined` when it can.
 */
export async function ensureNodeWs(): Promise<string | undefined> {
  try {
    const v = await run("node", ["--version"], 30_000);
    if (v.code !== 0) return `node --version failed: ${v.stderr.trim()}`;
  } catch {
    return "node is not installed";
  }
  try {
    await Deno.stat(`${ROOT}/bench/.build/node_modules/ws/package.json`);
    return undefined;
  } catch {
    // not installed yet
  }
  await Deno.mkdir(`${ROOT}/bench/.build`, { recursive: true });
  const args = ["install", "--prefix", "bench/.build", NODE_WS, "--no-audit", "--no-fund"];
  console.error(`installing Node's ws package: npm ${args.join(" ")}`);
  let out;
  try {
    out = await run("npm", args, 180_000);
  } catch {
    return "npm is not installed (needed for the ws package)";
  }
  if (out.code !== 0) {
    return `npm install ${NODE_WS} failed: ${out.stderr.trim().split("\n").pop()}`;
  }
  return undefined;
}

/**
 * Bun for the Bun reference rows: `bun` on the PATH, else the npm package
 * `bun` (it ships the binary) installed on first use into bench/.build
 * (git-ignored). Resolves to the executable, or to why there is none — the
 * rows are then skipped, never the run.
 */
export async function ensureBun(): Promise<{ path: string } | { problem: string }> {
  const local = `${ROOT}/bench/.build/node_modules/.bin/bun`;
  const works = async (path: string) => {
    try {
      return (await run(path, ["--version"], 30_000)).code === 0;
    } catch {
      return false;
    }
  };
  for (const path of ["bun", local]) if (await works(path)) return { path };
  await Deno.mkdir(`${ROOT}/bench/.build`, { recursive: true });
  const args = ["install", "--prefix", "bench/.build", "bun@1.4.5", "--no-audit", "--no-fund"];
  console.error(`installing Bun: npm ${args.join(" ")}`);
  let out;
  try {
    out = await run("npm", args, 300_000);
  } catch {
    return { problem: "bun is not installed, and there is no npm to install it with" };
  }
  if (out.code !== 0) {
    return { problem: `npm install bun failed: ${out.stderr.trim().split("\n").pop()}` };
  }
  return (await works(local))
    ? { path: local }
    : { problem: "the npm package bun installed no working binary" };
}

/** The open-files limit (soft, hard) this process and so its children start with. */
export async function fdLimits(): Promise<[number, number] | undefined> {
  try {
    const text = await Deno.readTextFile("/proc/self/limits");
    const m = text.match(/^Max open files\s+(\S+)\s+(\S+)/m);
    if (!m) return undefined;
    const n = (v: string) => v === "unlimited" ? Infinity : Number(v);
    return [n(m[1]), n(m[2])];
  } catch {
    return undefined;
  }
}
