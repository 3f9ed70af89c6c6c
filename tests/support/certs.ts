/**
 * Development certificates written to a temporary folder, for the tests that
 * hand files to a program (`--cert`, `--key`, `--ca`): made by the certs
 * module (`writeDevCerts`), read back as PEM for in-process clients, and
 * removed on dispose (or when the test process ends).
 *
 * @module
 */
import { DEFAULT_HOSTS, writeDevCerts, type WrittenDevCerts } from "../../certs/mod.ts";

/** Options for {@linkcode tempDevCerts}. */
export interface TempDevCertsOptions {
  /** The hosts the server certificate covers. @default {DEFAULT_HOSTS} */
  hosts?: string[];
  /** The temporary folder's name prefix. @default {"netkit-certs-"} */
  prefix?: string;
  /**
   * Remove the folder when the test process ends rather than on dispose: for
   * one set shared by a whole test file. @default {false}
   */
  removeOnUnload?: boolean;
}

/** What {@linkcode tempDevCerts} wrote, as paths and as PEM. */
export interface TempDevCerts extends AsyncDisposable {
  /** The temporary folder. */
  dir: string;
  /** The paths: `ca` (ca.pem), `caKey`, `cert` (server.pem), `key` (server-key.pem). */
  files: WrittenDevCerts["files"];
  /** The CA certificate, PEM: what an in-process client trusts. */
  ca: string;
  /** The server certificate, PEM. */
  cert: string;
  /** The server's private key, PEM. */
  key: string;
  /** `["--cert", files.cert, "--key", files.key]`: the flags a server program takes. */
  serverArgs: string[];
}

/**
 * Writes a development CA and server certificate into a new temporary folder.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tempDevCerts } from "./certs.ts";
 *
 * let dir: string;
 * {
 *   await using certs = await tempDevCerts({ hosts: ["localhost"] });
 *   dir = certs.dir;
 *   assert.equal(await Deno.readTextFile(`${dir}/ca.pem`), certs.ca);
 *   assert.deepEqual(certs.serverArgs, ["--cert", `${dir}/server.pem`, "--key", `${dir}/server-key.pem`]);
 * }
 * await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
 * ```
 */
export async function tempDevCerts(options: TempDevCertsOptions = {}): Promise<TempDevCerts> {
  const dir = await Deno.makeTempDir({ prefix: options.prefix ?? "netkit-certs-" });
  const remove = () => Deno.removeSync(dir, { recursive: true });
  if (options.removeOnUnload) globalThis.addEventListener("unload", remove);
  const { files } = await writeDevCerts({ out: dir, hosts: options.hosts ?? [...DEFAULT_HOSTS] });
  const [ca, cert, key] = await Promise.all(
    [files.ca, files.cert, files.key].map((path) => Deno.readTextFile(path)),
  );
  return {
    dir,
    files,
    ca,
    cert,
    key,
    serverArgs: ["--cert", files.cert, "--key", files.key],
    [Symbol.asyncDispose]: async () => {
      if (!options.removeOnUnload) await Deno.remove(dir, { recursive: true });
    },
  };
}
