// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { systemCaCerts } from "../tls/mod.ts";

Deno.test("systemCaCerts() returns the distribution's CA bundle where there is one", async () => {
  const bundle = "/etc/ssl/certs/ca-certificates.crt";
  const exists = await Deno.stat(bundle).then(() => true, () => false);
  const certs = await systemCaCerts();
  if (!exists) {
    console.warn(`SKIPPED: no ${bundle} on this machine`);
    return;
  }
  assert.equal(certs.length, 1);
  assert.equal(certs[0], await Deno.readTextFile(bundle));
  assert.ok(certs[0].split("-----BEGIN CERTIFICATE-----").length > 10, "a real bundle of roots");
});
