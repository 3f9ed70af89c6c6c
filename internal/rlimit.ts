/**
 * The open-files limit of this process. A server holds one descriptor per
 * connection, and a soft limit of 1,024 (Linux's default) refuses the
 * 1,025th client however much memory is free. nginx
 * (`worker_rlimit_nofile`) and Go (since 1.19, at start) raise the soft
 * limit to the hard one; netkit's server programs do the same at start.
 *
 * Deno has no setrlimit API, so this goes through FFI to libc, on Linux
 * only and only when FFI is already permitted: without the permission, on
 * another OS, or if anything fails, it does nothing (the limit stays what
 * it was, and an accept over it reports an error as before). The Deno CLI
 * itself raises the limit at start today; this keeps the programs right
 * wherever it does not, and tells them what the limit is.
 *
 * @module
 */

/** A process's open-files limits: `soft` is enforced, `hard` is as far as it may be raised. */
export interface OpenFilesLimit {
  /** The limit in force: the most descriptors the process may hold. */
  soft: number;
  /** The ceiling an unprivileged process may raise `soft` to. */
  hard: number;
}

/** `RLIMIT_NOFILE` on Linux. */
const RLIMIT_NOFILE = 7;
/** `RLIM_INFINITY`: all bits set in a 64-bit `rlim_t`. */
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

const SYMBOLS = {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

const toNumber = (v: bigint): number => v === RLIM_INFINITY ? Infinity : Number(v);

/**
 * Raises this process's soft open-files limit to its hard limit (best
 * effort: Linux, with FFI permitted). Never prompts for a permission.
 *
 * @returns The limits after the call, or `undefined` when they cannot be
 *   read here (not Linux, no FFI permission, no libc).
 *
 * @example
 * ```ts
 * import { raiseOpenFilesLimit } from "./rlimit.ts";
 * import assert from "node:assert/strict";
 *
 * const limit = raiseOpenFilesLimit();
 * // Where it can act, the soft limit ends up at the hard one.
 * if (limit !== undefined) assert.equal(limit.soft, limit.hard);
 * ```
 */
export function raiseOpenFilesLimit(): OpenFilesLimit | undefined {
  if (Deno.build.os !== "linux" || typeof Deno.dlopen !== "function") return undefined;
  try {
    // Only when already granted: a program must not stop to ask for FFI.
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
  } catch {
    return undefined;
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
    // struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }: two u64 on 64-bit Linux.
    const limits = new BigUint64Array(2);
    const bytes = new Uint8Array(limits.buffer);
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, bytes) !== 0) return undefined;
    if (limits[0] < limits[1]) {
      const soft = limits[0];
      limits[0] = limits[1];
      // An unlimited hard limit is not a valid soft one for open files (the
      // kernel caps it at fs.nr_open): keep what there was then.
      if (lib.symbols.setrlimit(RLIMIT_NOFILE, bytes) !== 0) limits[0] = soft;
    }
    return { soft: toNumber(limits[0]), hard: toNumber(limits[1]) };
  } catch {
    return undefined;
  } finally {
    lib?.close();
  }
}
