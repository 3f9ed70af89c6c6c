/**
 * Writing a development CA and server certificate to a folder: what the
 * `certs` program (`deno task certs`) does.
 *
 * @module
 */
import { join } from "node:path";
import { createDevCerts, DEFAULT_HOSTS, type KeyAlgorithm } from "./create.ts";
import { NetkitError } from "../errors.ts";
import { CertFileExistsError } from "./errors.ts";

/**
 * The file names {@linkcode writeDevCerts} writes in its folder.
 *
 * @example Where a TLS server finds its files
 * ```ts
 * import { DEV_CERT_FILES } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * // In the output folder (certs/ for the certs program):
 * assert.equal(DEV_CERT_FILES.cert, "server.pem");
 * assert.equal(DEV_CERT_FILES.key, "server-key.pem");
 * ```
 */
export const DEV_CERT_FILES: Readonly<{
  ca: "ca.pem";
  caKey: "ca-key.pem";
  cert: "server.pem";
  key: "server-key.pem";
}> = Object.freeze(
  {
    /** The CA certificate: what clients trust. */
    ca: "ca.pem",
    /** The CA's private key, to issue more certificates. */
    caKey: "ca-key.pem",
    /** The server certificate. */
    cert: "server.pem",
    /** The server's private key. */
    key: "server-key.pem",
  } as const,
);

/** Options for {@linkcode writeDevCerts}. */
export interface WriteDevCertsOptions {
  /** The folder to write into; created (with parents) when missing. Default `"certs"`. */
  out?: string;
  /** The DNS names and IP addresses the server certificate covers. Default `["localhost", "127.0.0.1", "::1"]`. */
  hosts?: string[];
  /** Days of validity, a whole number from 1 to 36500. Default `30`. */
  days?: number;
  /** The key type: `"ECDSA"` (P-256) or `"RSA"` (2048 bits). Default `"ECDSA"`. */
  algorithm?: KeyAlgorithm;
  /** Overwrite files that are already there. Default `false`: refuse, writing nothing. */
  force?: boolean;
  /**
   * How the "already exists" error says to overwrite. Default
   * `"pass force: true to overwrite it"`; the program says `--force`.
   */
  forceHint?: string;
}

/** What {@linkcode writeDevCerts} wrote. */
export interface WrittenDevCerts {
  /** The paths written, in `out`: `ca`, `caKey`, `cert`, `key`. */
  files: { ca: string; caKey: string; cert: string; key: string };
  /** The hosts the server certificate covers. */
  hosts: string[];
  /** When the certificates expire. */
  notAfter: Date;
}

/**
 * Makes a development CA and a server certificate signed by it
 * ({@linkcode createDevCerts}) and writes them to `out`: `ca.pem`,
 * `ca-key.pem`, `server.pem` and `server-key.pem`, key files readable by
 * their owner only (mode 0o600).
 *
 * `out` is created when missing. When any of the four files is already there
 * and `force` is not set, it throws {@linkcode CertFileExistsError} (code
 * `"EEXIST"`) naming the file, and writes nothing. Each file is written to a
 * temporary name and renamed into place, so a reader never sees half a file.
 *
 * @param options The folder, hosts, lifetime, key type and whether to overwrite; all optional.
 * @returns The paths written, the hosts and the expiry.
 * @throws {CertFileExistsError} A file is there and `force` is not set.
 * @throws {InvalidCertOptionError} No hosts, a bad host, or `days` out of range.
 * @throws {NetkitError} `out` cannot be made or written (code from the system, e.g. `"ENOTDIR"`).
 *
 * @example Certificates for a TLS server, in a temporary folder
 * ```ts
 * import { writeDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const out = await Deno.makeTempDir();
 * const written = await writeDevCerts({ out, hosts: ["localhost", "::1"], days: 7 });
 * assert.match(written.files.cert, /server\.pem$/); // <out>/server.pem
 * const cert = await Deno.readTextFile(written.files.cert);
 * assert.match(cert, /^-----BEGIN CERTIFICATE-----/);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function writeDevCerts(options: WriteDevCertsOptions = {}): Promise<WrittenDevCerts> {
  const out = options.out ?? "certs";
  const files = {
    ca: join(out, DEV_CERT_FILES.ca),
    caKey: join(out, DEV_CERT_FILES.caKey),
    cert: join(out, DEV_CERT_FILES.cert),
    key: join(out, DEV_CERT_FILES.key),
  };

  // Make the certificates first: a bad option fails before anything is touched.
  const certs = await createDevCerts({
    hosts: options.hosts ?? [...DEFAULT_HOSTS],
    days: options.days,
    algorithm: options.algorithm,
  });

  try {
    if (!options.force) {
      for (const path of Object.values(files)) {
        if (await exists(path)) throw new CertFileExistsError(path, options.forceHint);
      }
    }
    await Deno.mkdir(out, { recursive: true });
    await writeFile(files.ca, certs.ca, 0o644);
    await writeFile(files.caKey, certs.caKey, 0o600);
    await writeFile(files.cert, certs.cert, 0o644);
    await writeFile(files.key, certs.key, 0o600);
  } catch (err) {
    if (err instanceof NetkitError) throw err;
    // The file system said no (not a folder, no permission, disk full): one
    // line that names the folder, with the system's code (ENOTDIR, EACCES, …).
    const code = (err as { code?: unknown })?.code;
    const reason = err instanceof Error ? err.message.split(": ")[0] : String(err);
    throw new NetkitError(
      typeof code === "string" ? code : "EIO",
      `cannot write certificates to ${out}: ${reason}: choose a folder you can write to`,
      { cause: err },
    );
  }
  return { files, hosts: certs.hosts, notAfter: certs.notAfter };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Writes `text` to a fresh temporary file beside `path` with `mode`, then renames it over `path`. */
async function writeFile(path: string, text: string, mode: number): Promise<void> {
  const suffix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16))
    .join("");
  const temp = `${path}.${suffix}.tmp`;
  try {
    await Deno.writeTextFile(temp, text, { createNew: true, mode });
    if (Deno.build.os !== "windows") await Deno.chmod(temp, mode); // the umask may have cut it
    await Deno.rename(temp, path);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
}
