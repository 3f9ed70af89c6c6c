/**
 * Where Linux and BSD distributions keep the system's trusted CA bundle.
 * Deno verifies against Mozilla's roots unless started with
 * `DENO_TLS_CA_STORE=system`; a CA an administrator installed lives here.
 */
const BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
  "/etc/pki/tls/certs/ca-bundle.crt", // Fedora, RHEL
  "/etc/ssl/ca-bundle.pem", // openSUSE
  "/etc/ssl/cert.pem", // macOS (a snapshot), the BSDs, Alpine
];

/**
 * The system's trusted CA certificates as PEM strings, for `caCerts`, so a
 * client trusts what the operating system trusts (an administrator's own
 * CA included) on top of Deno's built-in roots. Empty where no bundle file
 * is found (Windows, or a minimal container).
 *
 * @example Trust the system roots plus a development CA
 * ```ts
 * import { systemCaCerts } from "@netkit/netkit/tls";
 *
 * const caCerts = await systemCaCerts();
 * console.log(caCerts.length > 0 ? "system bundle found" : "Deno's roots only");
 * ```
 */
export async function systemCaCerts(): Promise<string[]> {
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
