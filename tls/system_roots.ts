/**
 * The one rule for which CAs a netkit client trusts, written once:
 *
 * - The library (`tls.connect`, `websocket.connect`, `http.get`, …) trusts
 *   Deno's root store — Mozilla's roots, or the system's with
 *   `DENO_TLS_CA_STORE=system` — plus the `caCerts` given. Deno has no way
 *   to trust *only* the CAs given.
 * - The programs (`tls-client`, `ws-client`, `http-get`) pass
 *   {@linkcode trustedCaCerts}: the operating system's trusted CAs (an
 *   administrator's own CA included), plus `--ca FILE` when given — on top
 *   of Deno's root store, as `curl` trusts the system and `--cacert`.
 *
 * @module
 */
import tls from "node:tls";

/** Where Linux and BSD distributions keep the system's CA bundle: the fallback. */
const BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
  "/etc/pki/tls/certs/ca-bundle.crt", // Fedora, RHEL
  "/etc/ssl/ca-bundle.pem", // openSUSE
  "/etc/ssl/cert.pem", // macOS (a snapshot), the BSDs, Alpine
];

type GetCACertificates = (store: "system" | "default" | "bundled") => string[];

/**
 * One of `node:tls`'s CA stores (PEM strings): empty where the runtime has
 * no `getCACertificates`; throws where the store cannot be read. Internal
 * (not re-exported by `tls/mod.ts`).
 */
export function caStore(store: "system" | "default" | "bundled"): string[] {
  const get = (tls as unknown as { getCACertificates?: GetCACertificates }).getCACertificates;
  return get?.(store) ?? [];
}

/**
 * The operating system's trusted CA certificates as PEM strings, for
 * `caCerts`: the platform's own store through `node:tls`'s
 * `getCACertificates("system")` (macOS keychain, Windows store, Linux
 * bundle), else the first Linux/BSD bundle file found. Empty where neither
 * has any.
 *
 * @example
 * ```ts
 * import { systemCaCerts } from "@netkit/netkit/tls";
 * import assert from "node:assert/strict";
 *
 * const caCerts = await systemCaCerts();
 * assert.ok(caCerts.every((pem) => pem.includes("-----BEGIN CERTIFICATE-----")));
 * ```
 */
export async function systemCaCerts(): Promise<string[]> {
  try {
    const certs = caStore("system");
    if (certs.length > 0) return certs;
  } catch {
    // Older runtimes, or no access to the store: try the files.
  }
  for (const path of BUNDLES) {
    try {
      const pem = await Deno.readTextFile(path);
      if (pem.includes("-----BEGIN CERTIFICATE-----")) return [pem];
    } catch {
      // Not this distribution's path, or not readable: try the next.
    }
  }
  return [];
}

/**
 * What the programs trust, on top of Deno's root store: the system's CAs
 * ({@linkcode systemCaCerts}) and `extra` (a `--ca` file's certificates).
 *
 * @example Trust the system plus a development CA
 * ```ts
 * import { trustedCaCerts } from "@netkit/netkit/tls";
 * import { createDevCerts } from "@netkit/netkit/certs";
 * import assert from "node:assert/strict";
 *
 * const { ca } = await createDevCerts();
 * const caCerts = await trustedCaCerts([ca]);
 * assert.equal(caCerts.at(-1), ca);
 * ```
 */
export async function trustedCaCerts(extra: string[] = []): Promise<string[]> {
  return [...await systemCaCerts(), ...extra];
}
