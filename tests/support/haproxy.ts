// HAProxy for the tests: started from a config, ready once every front
// port accepts, stopped (and its temp dir removed) by stop().
import { hasTool } from "./tools.ts";
import { delay } from "./time.ts";

/** Starts `haproxy -f config -db`; resolves once every port in `ports` accepts. */
export async function startHaproxy(config: string, ports: { hostname: string; port: number }[]) {
  const dir = await Deno.makeTempDir({ prefix: "netkit-haproxy-" });
  const file = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(file, config);
  // Under `timeout`, which passes our SIGTERM on: if this test process is
  // killed, HAProxy (which does not die with its parent) still goes in 2 min.
  const child = new Deno.Command(hasTool("timeout") ? "timeout" : "haproxy", {
    args: [...(hasTool("timeout") ? ["120", "haproxy"] : []), "-f", file, "-db"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
    return await stderr;
  };
  try {
    for (const { hostname, port } of ports) {
      for (let attempt = 0;; attempt++) {
        try {
          (await Deno.connect({ hostname, port })).close();
          break;
        } catch (err) {
          if (attempt >= 200) throw err;
          await delay(25);
        }
      }
    }
  } catch (err) {
    const log = await stop();
    throw new Error(`haproxy did not start: ${err}\n${log}`);
  }
  return { stop };
}
