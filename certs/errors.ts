/**
 * The errors the certs module throws on purpose.
 *
 * @module
 */
import { NetkitError } from "../errors.ts";

/**
 * An option given to a certs function is not usable: no hosts, a host that is
 * neither a DNS name nor an IP address, a `days` that is not a whole number of
 * at least 1, an unknown key algorithm. Code `"EINVAL"`; `option` names the
 * option at fault (`"hosts"`, `"days"`, …).
 *
 * @example Telling a bad host from the rest
 * ```ts
 * import { createDevCerts, InvalidCertOptionError } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(createDevCerts({ hosts: ["not a host"] }), (err) => {
 *   assert.ok(err instanceof InvalidCertOptionError);
 *   assert.equal(err.option, "hosts");
 *   assert.match(err.message, /"not a host" is neither a DNS name nor an IP address/);
 *   return true;
 * });
 * ```
 */
export class InvalidCertOptionError extends NetkitError {
  /** The option at fault, e.g. `"hosts"` or `"days"`. */
  readonly option: string;

  /**
   * Makes the error for a bad option.
   *
   * @param option The option at fault, e.g. `"hosts"`.
   * @param message What is wrong with it and what to give instead.
   */
  constructor(option: string, message: string) {
    super("EINVAL", message);
    this.option = option;
  }
}

/**
 * A certificate authority handed to a certs function cannot issue
 * certificates: its PEM does not parse, it is not a CA, its key does not
 * match its certificate, or it uses a key type WebCrypto cannot sign with.
 * Code `"EBADCA"`.
 *
 * @example
 * ```ts
 * import { BadCertificateAuthorityError, createServerCert } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const notACa = { cert: "nonsense", key: "nonsense" };
 * await assert.rejects(
 *   createServerCert(notACa, { hosts: ["localhost"] }),
 *   BadCertificateAuthorityError,
 * );
 * ```
 */
export class BadCertificateAuthorityError extends NetkitError {
  /**
   * Makes the error for an unusable CA.
   *
   * @param message What is wrong with the CA and what to do about it.
   * @param options The underlying error, if any, as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super("EBADCA", message, options);
  }
}

/**
 * {@linkcode writeDevCerts} found a file it would write already there and was
 * not told to overwrite it. Nothing was written. Code `"EEXIST"`; `path` is
 * the file found.
 *
 * @example
 * ```ts
 * import { CertFileExistsError, writeDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const out = await Deno.makeTempDir();
 * await writeDevCerts({ out });
 * await assert.rejects(writeDevCerts({ out }), (err) => {
 *   assert.ok(err instanceof CertFileExistsError);
 *   assert.ok(err.path.startsWith(out)); // the first file already there
 *   return true;
 * });
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export class CertFileExistsError extends NetkitError {
  /** The file that is already there. */
  readonly path: string;

  /**
   * Makes the error for a file that is already there.
   *
   * @param path The file that is already there.
   * @param hint How to overwrite it, e.g. `"pass --force to overwrite it"`.
   */
  constructor(path: string, hint = "pass force: true to overwrite it") {
    super("EEXIST", `${path} already exists: ${hint}, or write to another folder`);
    this.path = path;
  }
}
