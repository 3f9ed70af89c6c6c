// Real proxies for the tests, on free loopback ports: tinyproxy (HTTP
// CONNECT) and microsocks (SOCKS5). Each stops (and cleans up) on dispose.
import { freePort } from "./ports.ts";
import { hasTool } from "./tools.ts";

/** Whether tinyproxy is installed (tests that need it are ignored otherwise). */
export const hasTinyproxy: boolean = hasTool("tinyproxy");
/** Whether microsocks is installed. */
export const hasMicrosocks: boolean = hasTool("microsocks");

export interface RunningProxy extends AsyncDisposable {
  /** `host:port` of the proxy. */
  at: string;
}

async function startProxy(
  command: string,
  args: string[],
  port: number,
  cleanup?: () => Promise<void>,
): Promise<RunningProxy> {
  const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const output = Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
    await output;
    await cleanup?.();
  };
  // Ready once the port accepts; fail fast if the program exits instead.
  let exited = false;
  child.status.then(() => (exited = true));
  for (let tries = 0;; tries++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (exited || tries > 200) {
        await stop();
        const [out, err] = await output;
        throw new Error(`${command} did not start on port ${port}:\n${out}\n${err}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  return { at: `127.0.0.1:${port}`, [Symbol.asyncDispose]: stop };
}

/** tinyproxy on a free port; with `auth`, Basic authentication is required. */
export async function startTinyproxy(auth?: { user: string; pass: string }): Promise<RunningProxy> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "netkit_tinyproxy_" });
  // No ConnectPort line: CONNECT to every port is allowed ("ConnectPort 0"
  // would disable CONNECT altogether).
  const conf = [
    `Port ${port}`,
    "Listen 127.0.0.1",
    "Timeout 30",
    "Allow 127.0.0.1",
    "MaxClients 50",
    "LogLevel Warning",
    ...(auth ? [`BasicAuth ${auth.user} ${auth.pass}`] : []),
  ].join("\n");
  await Deno.writeTextFile(`${dir}/tinyproxy.conf`, conf + "\n");
  return await startProxy(
    "tinyproxy",
    ["-d", "-c", `${dir}/tinyproxy.conf`],
    port,
    () => Deno.remove(dir, { recursive: true }),
  );
}

/** microsocks on a free port; with `auth`, username/password is required. */
export function startMicrosocks(auth?: { user: string; pass: string }): Promise<RunningProxy> {
  const port = freePort();
  const args = ["-i", "127.0.0.1", "-p", String(port)];
  if (auth) args.push("-u", auth.user, "-P", auth.pass);
  return startProxy("microsocks", args, port);
}
