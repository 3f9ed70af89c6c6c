import assert from "node:assert/strict";
import { systemCaCerts, trustedCaCerts } from "../tls/mod.ts";
import { createDevCerts } from "../certs/mod.ts";

const bundle = "/etc/ssl/certs/ca-certificates.crt";
const exists = await Deno.stat(bundle).then(() => true, () => false);

Deno.test(
  "systemCaCerts() returns the platform's trusted CAs (node:tls getCACertificates), each a PEM certificate",
  {
    ignore: !exists,
  },
  async () => {
    const certs = await systemCaCerts();
    assert.ok(certs.length > 10, `a real set of roots, got ${certs.length}`);
    for (const pem of certs) assert.match(pem, /^-----BEGIN CERTIFICATE-----/);
    // The same certificates the distribution's bundle holds.
    const body = (pem: string) => pem.replace(/-----[A-Z ]+-----|\s/g, "");
    const fromBundle = body(await Deno.readTextFile(bundle));
    for (const pem of certs) assert.ok(fromBundle.includes(body(pem)), "each is in the bundle");
  },
);

Deno.test("trustedCaCerts() is the system's CAs plus the extra ones, extra last", async () => {
  const { ca } = await createDevCerts();
  const system = await systemCaCerts();
  const trusted = await trustedCaCerts([ca]);
  assert.equal(trusted.length, system.length + 1);
  assert.equal(trusted.at(-1), ca);
  assert.deepEqual(await trustedCaCerts(), system);
});
