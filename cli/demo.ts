// deno-lint-ignore-file no-console
/**
 * `deno task demo`: a secure broadcast chat in one process. It makes a
 * development CA and a server certificate in memory, serves WebSocket over
 * TLS (`wss://`) in broadcast mode, connects two clients that trust only
 * that CA, and shows what each one receives.
 *
 * @module
 */
import { createDevCerts } from "../certs/mod.ts";
import { connect, serve } from "../websocket/mod.ts";

const TOPIC = "chat";

/** Runs the demo, printing a transcript to stdout. */
export async function main(): Promise<void> {
  const started = performance.now();
  const certs = await createDevCerts({ hosts: ["localhost", "127.0.0.1"] });
  console.log(
    `certs   made a CA and a certificate for localhost in ${
      (performance.now() - started).toFixed(0)
    } ms`,
  );

  await using server = serve({ hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key }, {
    open: (ws) => void ws.subscribe(TOPIC),
    message: (ws, data) => void ws.publish(TOPIC, data, { includeSelf: true }),
  });
  const url = `wss://localhost:${server.addr.port}/`;
  console.log(`server  listening on wss://127.0.0.1:${server.addr.port} (broadcast mode)`);

  await using alice = await connect(url, { caCerts: [certs.ca] });
  await using bob = await connect(url, { caCerts: [certs.ca] });
  console.log(`clients alice and bob connected to ${url}, trusting only the demo CA`);

  const say = async (name: string, from: typeof alice, text: string) => {
    await from.send(`${name}: ${text}`);
    console.log(`\n${name} sends  ${JSON.stringify(`${name}: ${text}`)}`);
    for (const [who, ws] of [["alice", alice], ["bob", bob]] as const) {
      console.log(`  ${who.padEnd(5)} got  ${JSON.stringify(await ws.receive())}`);
    }
  };
  await say("alice", alice, "hello, bob!");
  await say("bob", bob, "hi alice, this went over TLS");

  const binary = new Uint8Array([0xca, 0xfe]);
  await alice.send(binary);
  const got = await bob.receive();
  console.log(
    `\nalice sends  binary ${fmt(binary)}\n  bob   got  binary ${fmt(got as Uint8Array)}`,
  );
  await alice.receive();

  await alice.close(1000, "bye");
  console.log(`\nalice closed with 1000 "bye"; shutting the server down (bob gets 1001)`);
  await server.close();
  await bob.closed;
  console.log(`bob saw close code ${bob.closeCode} ${JSON.stringify(bob.closeReason)}`);
}

function fmt(bytes: Uint8Array): string {
  return `[${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ")}]`;
}

if (import.meta.main) await main();
