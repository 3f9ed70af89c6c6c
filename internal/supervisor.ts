/**
 * Several server processes on one port (`reusePort`): the supervisor that
 * starts them, waits for each one's listening line, restarts one that dies
 * after it had been running a while, and takes them all down — and the
 * worker's side, which stops when the supervisor says so or is gone.
 *
 * @module
 */
import { BufferedReader } from "../io/buffered_reader.ts";

/** How to run the workers. */
export interface SupervisorOptions {
  /** How many workers. */
  count: number;
  /** The `deno` arguments for worker `id` listening on `port` (e.g. `["run", "-A", script, …]`). */
  args: (id: number, port: number) => string[];
  /** The port to share; 0: worker 1 picks one, the others take it. */
  port: number;
  /** Milliseconds a worker gets to drain after SIGTERM before it is killed (a margin of 5 s is added). */
  gracePeriod: number;
  /** A worker that dies after running this long is started again. @default {5000} */
  restartAfter?: number;
  /** Where the supervisor's log lines go. */
  onLog?: (line: string) => void;
}

interface Worker {
  id: number;
  child: Deno.ChildProcess;
  startedAt: number;
  exited: boolean;
}

const LISTENING = /^listening on \S+:(\d+)$/;

/**
 * Runs N copies of a server program on one port. Each worker's stdin is a
 * pipe it reads until the end: however the supervisor dies, even by
 * SIGKILL, its workers see the end and stop ({@linkcode workerShutdownSignal}).
 */
export class Supervisor {
  /** The first worker's listening line (every worker prints the same). */
  readonly listeningLine: string;
  /** The shared port. */
  readonly port: number;
  /** Resolves when every worker is gone without {@linkcode Supervisor.stop}. */
  readonly lost: Promise<void>;
  #options: SupervisorOptions;
  #workers: Map<number, Worker>;
  #stopping = false;

  private constructor(
    options: SupervisorOptions,
    workers: Map<number, Worker>,
    line: string,
    lost: Promise<void>,
  ) {
    this.#options = options;
    this.#workers = workers;
    this.listeningLine = line;
    this.port = Number(LISTENING.exec(line)?.[1]);
    this.lost = lost;
  }

  /** The workers' process ids. */
  get pids(): number[] {
    return [...this.#workers.values()].map((w) => w.child.pid);
  }

  /**
   * Starts worker 1, then the others on its port; resolves once every one
   * has printed its listening line. A worker that exits before it listens
   * stops them all and rejects.
   */
  static async start(options: SupervisorOptions): Promise<Supervisor> {
    const log = options.onLog ?? (() => {});
    const restartAfter = options.restartAfter ?? 5000;
    const workers = new Map<number, Worker>();
    let supervisor: Supervisor | undefined;
    let sharedPort = options.port;
    let allGone: () => void = () => {};
    const lost = new Promise<void>((resolve) => (allGone = resolve));

    const start = async (id: number, port: number): Promise<string> => {
      const child = new Deno.Command(Deno.execPath(), {
        args: options.args(id, port),
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const worker: Worker = { id, child, startedAt: performance.now(), exited: false };
      workers.set(id, worker);
      const stdout = new BufferedReader(child.stdout);
      const line = await stdout.readLine({ maxBytes: 4096 }).catch(() => null);
      // Nothing more is printed on a worker's stdout; drain it all the same.
      void (async () => {
        try {
          while ((await stdout.readChunk()) !== null) { /* discard */ }
        } catch {
          // The worker is gone.
        }
      })();
      child.status.then((status) => {
        worker.exited = true;
        if (workers.get(id) === worker) workers.delete(id);
        if (supervisor === undefined || supervisor.#stopping || line === null) {
          if (workers.size === 0) allGone();
          return;
        }
        const how = status.signal !== null ? `signal ${status.signal}` : `code ${status.code}`;
        if (performance.now() - worker.startedAt >= restartAfter) {
          log(`worker ${id} (pid ${child.pid}) exited with ${how}: starting it again`);
          start(id, sharedPort).catch((err) => log(String(err?.message ?? err)));
          return;
        }
        log(`worker ${id} (pid ${child.pid}) exited with ${how} soon after starting`);
        if (workers.size === 0) {
          log("every worker is gone");
          allGone();
        }
      });
      if (line === null || !LISTENING.test(line)) {
        const status = await child.status;
        throw new Error(`worker ${id} exited with code ${status.code} before listening`);
      }
      return line;
    };

    const probe = new Supervisor(options, workers, "listening on x:0", lost);
    try {
      const line = await start(1, options.port);
      sharedPort = Number(LISTENING.exec(line)![1]);
      const ids = Array.from({ length: options.count - 1 }, (_, i) => i + 2);
      await Promise.all(ids.map((id) => start(id, sharedPort)));
      supervisor = new Supervisor(options, workers, line, lost);
      return supervisor;
    } catch (err) {
      await probe.stop();
      throw err;
    }
  }

  /** Passes a signal on to every worker (SIGHUP: each reloads its own certificates). */
  signal(signal: Deno.Signal): void {
    for (const worker of this.#workers.values()) if (!worker.exited) kill(worker.child, signal);
  }

  /** SIGTERM to every worker; SIGKILL to those still there after the grace period. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const children = [...this.#workers.values()].filter((w) => !w.exited).map((w) => w.child);
    for (const child of children) kill(child, "SIGTERM");
    const killer = setTimeout(() => {
      for (const child of children) kill(child, "SIGKILL");
    }, this.#options.gracePeriod + 5000);
    await Promise.all(children.map((child) => child.status));
    clearTimeout(killer);
  }
}

function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Already gone.
  }
}

/**
 * A worker's shutdown signal: SIGINT or SIGTERM (both may come, from the
 * terminal and from the supervisor: once is enough), or its stdin ending —
 * the supervisor is gone, however it died.
 *
 * @param onStop Told why, once.
 */
export function workerShutdownSignal(onStop: (why: string) => void): AbortSignal {
  const controller = new AbortController();
  const stop = (why: string) => {
    if (controller.signal.aborted) return;
    // Stop accepting first, then say so.
    controller.abort();
    onStop(why);
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => stop(sig));
  }
  (async () => {
    const buf = new Uint8Array(64);
    try {
      while ((await Deno.stdin.read(buf)) !== null) {
        // The supervisor writes nothing; only the end matters.
      }
    } catch {
      // Treated as the end.
    }
    stop("the primary process is gone");
  })();
  return controller.signal;
}

/** `args` without `--name value` / `--name=value` for each of `names`. */
export function withoutFlags(args: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (names.includes(arg)) {
      i++;
      continue;
    }
    if (names.some((name) => arg.startsWith(`${name}=`))) continue;
    out.push(arg);
  }
  return out;
}
