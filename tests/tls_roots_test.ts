import assert from "node:assert/strict";
import { systemCaCerts } from "../tls/mod.ts";

const bundle = "/etc/ssl/certs/ca-certificates.crt";
const exists = await Deno.stat(bundle).then(() => true, () => false);

Deno.test("systemCaCerts() returns the distribution's CA bundle where there is one", {
  ignore: !exists,
}, async () => {
  const certs = await systemCaCerts();
  assert.equal(certs.length, 1);
  assert.equal(certs[0], await Deno.readTextFile(bundle));
  assert.ok(certs[0].split("-----BEGIN CERTIFICATE-----").length > 10, "a real bundle of roots");
});
