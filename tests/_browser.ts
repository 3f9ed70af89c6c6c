// A headless Chromium driven over the Chrome DevTools Protocol, with no
// dependency but netkit's own WebSocket client: launch, open tabs, evaluate,
// type, screenshot, and clean everything up. Used by the browser tests.
import { connect, type WebSocketConn } from "../websocket/mod.ts";
import { delay, settlesWithin, within } from "./support/time.ts";
import { findTool } from "./support/tools.ts";

/** Where Chromium is commonly installed; `CHROMIUM` (a path) is tried first. */
const CANDIDATES = [
  "chromium",
  "chromium-browser",
  "google-chrome-stable",
  "google-chrome",
];

/** The Chromium executable, or `undefined` when there is none (synchronous, for `ignore`). */
export function findChromium(): string | undefined {
  const explicit = Deno.env.get("CHROMIUM");
  if (explicit) return explicit;
  for (const name of CANDIDATES) {
    const path = findTool(name);
    if (path !== undefined) return path;
  }
  return undefined;
}

/** Reads the DER elements (tag, contents) of one constructed DER value's contents. */
function derChildren(bytes: Uint8Array): { tag: number; whole: Uint8Array; body: Uint8Array }[] {
  const out = [];
  let off = 0;
  while (off < bytes.length) {
    const start = off;
    const tag = bytes[off++];
    let length = bytes[off++];
    if (length & 0x80) {
      const n = length & 0x7f;
      length = 0;
      for (let i = 0; i < n; i++) length = length * 256 + bytes[off++];
    }
    const body = bytes.subarray(off, off + length);
    off += length;
    out.push({ tag, whole: bytes.subarray(start, off), body });
  }
  return out;
}

/**
 * The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo: what
 * Chromium's `--ignore-certificate-errors-spki-list` takes.
 */
export async function spkiHash(certPem: string): Promise<string> {
  const b64 = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/.exec(certPem)?.[1];
  if (b64 === undefined) throw new Error("no PEM certificate");
  const der = Uint8Array.from(atob(b64.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const [certificate] = derChildren(der);
  const [tbs] = derChildren(certificate.body);
  // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, SPKI.
  const fields = derChildren(tbs.body);
  const spki = fields[fields[0].tag === 0xa0 ? 6 : 5];
  if (spki?.tag !== 0x30) throw new Error("unexpected certificate layout");
  const digest = await crypto.subtle.digest("SHA-256", spki.whole.slice());
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

// deno-lint-ignore no-explicit-any
type Json = any;

interface Waiter {
  method: string;
  sessionId: string | undefined;
  resolve: (params: Json) => void;
}

/** A Chrome DevTools Protocol connection (the browser target, flat sessions). */
export class Cdp {
  #ws: WebSocketConn;
  #nextId = 1;
  #pending = new Map<number, { resolve: (v: Json) => void; reject: (e: Error) => void }>();
  #waiters: Waiter[] = [];
  #reading: Promise<void>;
  #timeout: number;

  constructor(ws: WebSocketConn, timeout: number) {
    this.#ws = ws;
    this.#timeout = timeout;
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    for await (const raw of this.#ws) {
      const msg = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
      if (typeof msg.id === "number") {
        const pending = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) pending?.reject(new Error(`CDP: ${msg.error.message}`));
        else pending?.resolve(msg.result);
        continue;
      }
      const i = this.#waiters.findIndex((w) =>
        w.method === msg.method && w.sessionId === msg.sessionId
      );
      if (i >= 0) this.#waiters.splice(i, 1)[0].resolve(msg.params);
    }
    const gone = new Error("the DevTools connection closed");
    for (const { reject } of this.#pending.values()) reject(gone);
    this.#pending.clear();
  }

  /** Races `promise` against this connection's timeout, naming `what` on failure. */
  #deadline<T>(promise: Promise<T>, what: string): Promise<T> {
    return within(this.#timeout, promise, what);
  }

  /** Sends a command (to a page when `sessionId` is given) and resolves with its result. */
  send(method: string, params: Json = {}, sessionId?: string): Promise<Json> {
    const id = this.#nextId++;
    const result = new Promise<Json>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    void this.#ws.send(JSON.stringify({ id, method, params, sessionId }));
    return this.#deadline(result, method);
  }

  /** Resolves with the params of the next `method` event (of `sessionId`'s page). */
  event(method: string, sessionId?: string): Promise<Json> {
    return this.#deadline(
      new Promise((resolve) => this.#waiters.push({ method, sessionId, resolve })),
      `waiting for ${method}`,
    );
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.#ws.close().catch(() => {});
    this.#ws.destroy();
    await this.#reading.catch(() => {});
  }
}

/** One tab, attached with a flat session. */
export class Tab {
  constructor(readonly cdp: Cdp, readonly sessionId: string) {}

  /** Runs `expression` in the page (awaiting a promise) and returns its value. */
  async evaluate(expression: string): Promise<Json> {
    const { result, exceptionDetails } = await this.cdp.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }, this.sessionId);
    if (exceptionDetails) {
      throw new Error(
        `in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`,
      );
    }
    return result.value;
  }

  /** Navigates and waits for the load event; throws if the navigation failed. */
  async goto(url: string): Promise<void> {
    const loaded = this.cdp.event("Page.loadEventFired", this.sessionId);
    const { errorText } = await this.cdp.send("Page.navigate", { url }, this.sessionId);
    if (errorText) throw new Error(`navigating to ${url}: ${errorText}`);
    await loaded;
  }

  /** Types `text` into the focused element as a user would, then presses Enter. */
  async type(text: string): Promise<void> {
    await this.cdp.send("Input.insertText", { text }, this.sessionId);
    for (const type of ["keyDown", "keyUp"]) {
      await this.cdp.send("Input.dispatchKeyEvent", {
        type,
        key: "Enter",
        code: "Enter",
        windowsVirtualKeyCode: 13,
        ...(type === "keyDown" ? { text: "\r" } : {}),
      }, this.sessionId);
    }
  }

  /** Closes the tab. */
  async close(): Promise<void> {
    const { targetInfo } = await this.cdp.send("Target.getTargetInfo", {}, this.sessionId);
    await this.cdp.send("Target.closeTarget", { targetId: targetInfo.targetId });
  }

  /** A PNG screenshot of the page. */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.cdp.send(
      "Page.captureScreenshot",
      { format: "png" },
      this.sessionId,
    );
    return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  }
}

/** A running headless Chromium; disposing it closes it and removes its profile. */
export class Browser implements AsyncDisposable {
  private constructor(
    readonly cdp: Cdp,
    readonly child: Deno.ChildProcess,
    readonly dir: string,
    readonly stderr: () => string,
    readonly stopStderr: () => Promise<void>,
  ) {}

  /**
   * Launches `executable` headless on a fresh profile, with `extraArgs`
   * (e.g. `--ignore-certificate-errors-spki-list=…`), and connects to it.
   * Each DevTools call gives up after `timeout` ms.
   */
  static async launch(
    executable: string,
    { extraArgs = [], timeout = 10_000 }: { extraArgs?: string[]; timeout?: number } = {},
  ): Promise<Browser> {
    const dir = await Deno.makeTempDir({ prefix: "netkit-chromium-" });
    const child = new Deno.Command(executable, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--disable-crash-reporter",
        "--password-store=basic",
        "--window-size=800,600",
        `--user-data-dir=${dir}`,
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        ...extraArgs,
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { HOME: dir },
    }).spawn();
    // Keep the end of Chromium's stderr for error messages.
    let log = "";
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    const draining = (async () => {
      try {
        for (let r; !(r = await reader.read()).done;) log = (log + r.value).slice(-4000);
      } catch {
        // Cancelled.
      }
    })();
    const stopStderr = async () => {
      await reader.cancel().catch(() => {});
      await draining;
    };
    let exited = false;
    const status = child.status.finally(() => exited = true);
    try {
      // Chromium writes its DevTools port and browser path once it listens.
      const started = performance.now();
      let endpoint: string | undefined;
      while (endpoint === undefined) {
        if (exited) {
          throw new Error(`chromium exited with ${(await status).code}:\n${log}`);
        }
        if (performance.now() - started > timeout) {
          throw new Error(`chromium did not open DevTools within ${timeout} ms:\n${log}`);
        }
        try {
          const [port, path] = (await Deno.readTextFile(`${dir}/DevToolsActivePort`)).split("\n");
          if (port && path) endpoint = `ws://127.0.0.1:${port}${path}`;
        } catch {
          // Not written yet.
        }
        if (endpoint === undefined) await delay(50);
      }
      // Screenshots and big pages exceed the default 1 MiB message limit.
      const ws = await connect(endpoint, { timeout, maxPayload: 64 * 1024 * 1024 });
      return new Browser(new Cdp(ws, timeout), child, dir, () => log, stopStderr);
    } catch (err) {
      await Browser.#kill(child, status);
      await stopStderr();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  static async #kill(child: Deno.ChildProcess, status: Promise<Deno.CommandStatus>) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await status;
  }

  /** Opens a tab on `url` and attaches to it. */
  async newTab(url = "about:blank"): Promise<Tab> {
    const { targetId } = await this.cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.cdp.send("Target.attachToTarget", {
      targetId,
      flatten: true,
    });
    const tab = new Tab(this.cdp, sessionId);
    await this.cdp.send("Page.enable", {}, sessionId);
    await this.cdp.send("Runtime.enable", {}, sessionId);
    if (url !== "about:blank") await tab.goto(url);
    return tab;
  }

  /** Closes Chromium (politely, then by force) and removes its profile. */
  async [Symbol.asyncDispose](): Promise<void> {
    const status = this.child.status;
    try {
      await this.cdp.send("Browser.close").catch(() => {});
      await this.cdp.close();
      // A Chromium that does not exit within 5 s is killed.
      if (!(await settlesWithin(status, 5000))) await Browser.#kill(this.child, status);
    } finally {
      await this.stopStderr();
      // Chromium's helpers may still be writing the profile for a moment.
      for (let i = 0;; i++) {
        try {
          await Deno.remove(this.dir, { recursive: true });
          break;
        } catch (err) {
          if (err instanceof Deno.errors.NotFound || i >= 20) break;
          await delay(100);
        }
      }
    }
  }
}
