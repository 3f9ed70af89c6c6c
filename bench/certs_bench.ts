// How long making development certificates takes: `deno bench -A bench/certs_bench.ts`.
// createDevCerts is what every TLS test pays once: a CA plus a server certificate.
import { createCA, createDevCerts, createServerCert } from "../certs/mod.ts";

const ca = await createCA();

Deno.bench(
  "createDevCerts (ECDSA P-256: CA + server cert)",
  { group: "dev", baseline: true },
  async () => {
    await createDevCerts();
  },
);

Deno.bench("createDevCerts (RSA 2048: CA + server cert)", { group: "dev" }, async () => {
  await createDevCerts({ algorithm: "RSA" });
});

Deno.bench("createCA (ECDSA P-256)", async () => {
  await createCA();
});

Deno.bench("createServerCert (ECDSA P-256, existing CA)", async () => {
  await createServerCert(ca, { hosts: ["localhost", "127.0.0.1", "::1"] });
});
