// Reading the PEM files programs take (--cert, --key, --ca), with one clear
// line that says what to do when a file is missing or wrong.
import { NetkitError } from "../errors.ts";
import { trustedCaCerts } from "../tls/system_roots.ts";

/** Reads a server's `--cert` or `--key` file. */
export async function readPemFile(path: string, flag: "cert" | "key"): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const what = flag === "cert" ? "certificate" : "key";
    if (err instanceof Deno.errors.NotFound) {
      throw new NetkitError(
        "ENOENT",
        `${what} file ${path} not found: run \`deno task certs\` to make development certificates, or pass --${flag} with yours`,
      );
    }
    throw readError(err, path, flag);
  }
}

/** Reads a client's `--ca` file and checks that it holds a certificate. */
export async function readCaFile(path: string): Promise<string> {
  let pem: string;
  try {
    pem = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NetkitError(
        "ENOENT",
        `CA file ${path} not found (--ca): pass the CA certificate that signed the server's, ` +
          "e.g. certs/ca.pem made by `deno task certs`",
      );
    }
    throw readError(err, path, "ca");
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new NetkitError(
      "EINVAL",
      `CA file ${path} (--ca) holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`,
    );
  }
  return pem;
}

function readError(err: unknown, path: string, flag: string): NetkitError {
  if (err instanceof Deno.errors.PermissionDenied) {
    return new NetkitError("EACCES", `cannot read ${path} (--${flag}): permission denied`);
  }
  if (err instanceof Deno.errors.IsADirectory || /directory/i.test(String(err))) {
    return new NetkitError("EISDIR", `--${flag} ${path} is a directory: pass the PEM file`);
  }
  return new NetkitError(
    "EIO",
    `cannot read ${path} (--${flag}): ${err instanceof Error ? err.message : err}`,
  );
}

/**
 * The CAs a client program trusts (the one rule, tls/system_roots.ts):
 * the system's, plus `--ca FILE` when given, on top of Deno's root store.
 */
export async function clientCaCerts(caFile: string | undefined): Promise<string[]> {
  return await trustedCaCerts(caFile === undefined ? [] : [await readCaFile(caFile)]);
}
