// Admission control per client address: `--max-connections-per-ip` and
// `--accept-rate`. Asked once per accepted connection, before any TLS
// handshake or WebSocket upgrade, so a refused peer costs a map lookup and a
// close. Everything is O(1) per accept and the table of addresses is bounded.
import { addressKey } from "./cidr.ts";

/** Options for {@linkcode AdmissionControl}. Leave a limit out to not apply it. */
export interface AdmissionOptions {
  /**
   * The most connections one client address (IPv6: one /64) may have open at
   * once. Unset: no per-address cap.
   */
  maxConnectionsPerIp?: number;
  /**
   * New connections per second one client address may open, on average
   * (a token bucket refilled at this rate). Unset: no rate limit.
   */
  acceptRate?: number;
  /**
   * How many connections an address may open at once after a quiet spell:
   * the bucket's size. The default, one second's worth of `acceptRate`
   * (at least 1), lets a browser open its handful of parallel connections
   * while holding a flood to the rate.
   * @default {Math.max(1, Math.ceil(acceptRate))}
   */
  burst?: number;
  /**
   * Leading bits of an IPv6 address that name one client; one subscriber
   * usually owns a whole /64.
   * @default {64}
   */
  ipv6Prefix?: number;
  /**
   * The most addresses tracked at once. Past it, the least recently seen
   * address with no open connection is forgotten (see
   * {@linkcode AdmissionControl}). About 180 bytes each (measured, IPv6
   * keys): the default costs at most some 18 MB.
   * @default {100000}
   */
  maxKeys?: number;
  /** The clock, in milliseconds; tests inject their own. @default {performance.now} */
  now?: () => number;
}

/** Why a connection was refused: the label for metrics and logs. */
export type AdmissionRefusal = "per-ip" | "rate";

/** The answer of {@linkcode AdmissionControl.admit}. */
export type Admission =
  | {
    /** Admitted. */
    ok: true;
    /** The address key the connection counts under (see `addressKey`). */
    key: string;
    /** Call once when the connection closes; later calls do nothing. */
    release(): void;
  }
  | {
    /** Refused: close the connection at once (HTTP 429 where an answer is possible). */
    ok: false;
    /** The address key that was over its limit. */
    key: string;
    /** Which limit: `"per-ip"` (too many open) or `"rate"` (too many new per second). */
    reason: AdmissionRefusal;
  };

/** Counters about the table itself, for metrics. */
export interface AdmissionStats {
  /** Addresses tracked now. */
  keys: number;
  /** Open connections counted now, over all addresses. */
  open: number;
  /** Addresses forgotten at the `maxKeys` cap while their bucket was not yet full. */
  evicted: number;
  /** Connections admitted untracked because the table was full of busy addresses. */
  untracked: number;
}

interface Entry {
  /** The address key. */
  readonly key: string;
  /** Connections open now. */
  open: number;
  /** Tokens in the bucket as of `at`. */
  tokens: number;
  /** When `tokens` was last brought up to date, in ms. */
  at: number;
  /** Neighbours in recency order: `prev` is colder, `next` warmer. */
  prev: Entry | undefined;
  next: Entry | undefined;
}

const NOOP = () => {};
// How many entries one call looks at from the cold end of the table: a
// constant, so every accept does O(1) work.
const SWEEP = 2;
const EVICT_SCAN = 16;

/**
 * Per-address admission control: at most `maxConnectionsPerIp` open
 * connections and `acceptRate` new ones per second (token bucket, `burst`
 * deep) per client address. IPv4 addresses count one by one, IPv6 ones per
 * `/64` (`ipv6Prefix`), IPv4-mapped IPv6 as IPv4.
 *
 * Each attempt that passes the rate check takes a token, also when the
 * per-address cap then refuses it: a client retrying in a loop while at its
 * cap soon sees `"rate"`.
 *
 * **Memory.** Addresses live in a `Map` for lookup, threaded on a linked
 * list in least-recently-seen order. (The `Map`'s own order would do, but in
 * V8 reaching its oldest entry after many deletions takes time in proportion
 * to them: measured 26 µs per accept at the cap, against 4 µs with the list
 * on a loaded machine.) An address is dropped as soon as it has no open
 * connection and a full bucket (with no rate limit: when its last connection
 * is released); each `admit` also checks the two coldest entries, so idle
 * ones do not linger. The table never holds more than `maxKeys` addresses:
 * when a new one arrives at the cap, the coldest address without open
 * connections is forgotten — its bucket starts full if it comes back, so
 * under a flood of more distinct addresses than `maxKeys` the rate limit is
 * approximate for the coldest ones (counted in `stats().evicted`).
 * Open-connection counts are never forgotten. If the coldest sixteen all have
 * open connections, the newcomer is admitted untracked (`stats().untracked`):
 * it had no connections and a full bucket anyway, and the server's global
 * `--max-connections` bounds that case.
 *
 * @example At the cap, refused; after a release, admitted again
 * ```ts
 * import { AdmissionControl } from "./admission.ts";
 * import assert from "node:assert/strict";
 *
 * const admission = new AdmissionControl({ maxConnectionsPerIp: 2 });
 * const a = admission.admit("192.0.2.1");
 * const b = admission.admit("192.0.2.1");
 * assert.ok(a.ok && b.ok);
 * assert.deepEqual(admission.admit("192.0.2.1"), { ok: false, key: "192.0.2.1", reason: "per-ip" });
 * assert.equal(admission.admit("192.0.2.2").ok, true); // another address has its own count
 * a.release();
 * assert.equal(admission.admit("192.0.2.1").ok, true);
 * ```
 *
 * @example A rate with a burst, on an injected clock
 * ```ts
 * import { AdmissionControl } from "./admission.ts";
 * import assert from "node:assert/strict";
 *
 * let now = 0;
 * const admission = new AdmissionControl({ acceptRate: 2, burst: 3, now: () => now });
 * for (let i = 0; i < 3; i++) assert.equal(admission.admit("2001:db8::1").ok, true);
 * const over = admission.admit("2001:db8::2"); // same /64
 * assert.equal(over.ok ? "" : over.reason, "rate");
 * now += 500; // half a second at 2/s: one token back
 * assert.equal(admission.admit("2001:db8::1").ok, true);
 * ```
 */
export class AdmissionControl {
  readonly #max: number;
  readonly #rate: number; // tokens per ms; 0 = no rate limit
  readonly #burst: number;
  readonly #ipv6Prefix: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #keyOptions: { ipv6Prefix: number };
  readonly #entries = new Map<string, Entry>();
  #coldest: Entry | undefined; // least recently seen
  #warmest: Entry | undefined; // most recently seen
  #open = 0;
  #evicted = 0;
  #untracked = 0;

  /**
   * Checks the limits; nothing is tracked until the first `admit`.
   *
   * @param options The limits; see {@linkcode AdmissionOptions}.
   * @throws {RangeError} A limit that is not a positive number (an integer
   *   for counts), or `ipv6Prefix` outside 0–128.
   */
  constructor(options: AdmissionOptions = {}) {
    const { maxConnectionsPerIp, acceptRate } = options;
    if (
      maxConnectionsPerIp !== undefined &&
      !(Number.isSafeInteger(maxConnectionsPerIp) && maxConnectionsPerIp >= 1)
    ) {
      throw new RangeError(
        `maxConnectionsPerIp must be an integer of at least 1, got ${maxConnectionsPerIp}`,
      );
    }
    if (acceptRate !== undefined && !(Number.isFinite(acceptRate) && acceptRate > 0)) {
      throw new RangeError(`acceptRate must be a number above 0, got ${acceptRate}`);
    }
    const burst = options.burst ?? Math.max(1, Math.ceil(acceptRate ?? 1));
    if (!(Number.isFinite(burst) && burst >= 1)) {
      throw new RangeError(`burst must be a number of at least 1, got ${burst}`);
    }
    const ipv6Prefix = options.ipv6Prefix ?? 64;
    if (!Number.isInteger(ipv6Prefix) || ipv6Prefix < 0 || ipv6Prefix > 128) {
      throw new RangeError(`ipv6Prefix must be an integer from 0 to 128, got ${ipv6Prefix}`);
    }
    const maxKeys = options.maxKeys ?? 100_000;
    if (!(Number.isSafeInteger(maxKeys) && maxKeys >= 1)) {
      throw new RangeError(`maxKeys must be an integer of at least 1, got ${maxKeys}`);
    }
    this.#max = maxConnectionsPerIp ?? Infinity;
    this.#rate = acceptRate === undefined ? 0 : acceptRate / 1000;
    this.#burst = burst;
    this.#ipv6Prefix = ipv6Prefix;
    this.#maxKeys = maxKeys;
    this.#now = options.now ?? (() => performance.now());
    this.#keyOptions = { ipv6Prefix };
  }

  /** Whether any limit is set; when not, `admit` always says yes and tracks nothing. */
  get enabled(): boolean {
    return this.#max !== Infinity || this.#rate > 0;
  }

  /** The IPv6 prefix length addresses are grouped by. */
  get ipv6Prefix(): number {
    return this.#ipv6Prefix;
  }

  /**
   * Decides on a new connection from `address` (the peer's IP, or the
   * client's from a PROXY header or a trusted `X-Forwarded-For`). Admitted
   * connections count until their `release()`.
   *
   * @throws {NetkitError} `ERR_BAD_CIDR`: `address` is not an IP address
   *   (Unix socket peers have none: do not ask for them).
   */
  admit(address: string): Admission {
    const key = addressKey(address, this.#keyOptions);
    if (!this.enabled) return { ok: true, key, release: NOOP };
    const now = this.#now();
    const entries = this.#entries;
    this.#sweep(now);
    let entry = entries.get(key);
    if (entry === undefined) {
      if (entries.size >= this.#maxKeys && !this.#evictOne(now)) {
        this.#untracked++;
        return { ok: true, key, release: NOOP };
      }
      entry = { key, open: 0, tokens: this.#burst, at: now, prev: undefined, next: undefined };
      entries.set(key, entry);
      this.#append(entry);
    } else if (entry !== this.#warmest) {
      this.#unlink(entry);
      this.#append(entry); // now the most recently seen
    }
    if (this.#rate > 0) {
      const tokens = Math.min(this.#burst, entry.tokens + (now - entry.at) * this.#rate);
      entry.at = now;
      if (tokens < 1) {
        entry.tokens = tokens;
        return { ok: false, key, reason: "rate" };
      }
      entry.tokens = tokens - 1;
    }
    if (entry.open >= this.#max) return { ok: false, key, reason: "per-ip" };
    entry.open++;
    this.#open++;
    const held = entry;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#open--;
      // Entries with open connections are never removed, so `held` is still
      // the table's entry for its key.
      if (--held.open === 0 && this.#idle(held, this.#now())) this.#remove(held);
    };
    return { ok: true, key, release };
  }

  /** The table's size and what the caps did, for metrics. */
  stats(): AdmissionStats {
    return {
      keys: this.#entries.size,
      open: this.#open,
      evicted: this.#evicted,
      untracked: this.#untracked,
    };
  }

  /** No open connection and a full bucket: the entry says nothing a fresh one would not. */
  #idle(entry: Entry, now: number): boolean {
    return entry.open === 0 &&
      (this.#rate === 0 || entry.tokens + (now - entry.at) * this.#rate >= this.#burst);
  }

  /** Drops idle entries from the cold end, looking at a constant few. */
  #sweep(now: number): void {
    for (let i = 0; i < SWEEP; i++) {
      const entry = this.#coldest;
      if (entry === undefined) return;
      if (entry.open > 0) {
        // Busy: move it to the warm end so idle ones behind it come forward.
        if (entry === this.#warmest) return;
        this.#unlink(entry);
        this.#append(entry);
      } else if (this.#idle(entry, now)) {
        this.#remove(entry);
      } else {
        return; // the coldest is still refilling; so, roughly, are the rest
      }
    }
  }

  /** At the cap: forgets the coldest entry with no open connection. */
  #evictOne(now: number): boolean {
    for (let i = 0; i < EVICT_SCAN; i++) {
      const entry = this.#coldest;
      if (entry === undefined) return false;
      if (entry.open === 0) {
        if (!this.#idle(entry, now)) this.#evicted++;
        this.#remove(entry);
        return true;
      }
      if (entry === this.#warmest) return false;
      this.#unlink(entry);
      this.#append(entry);
    }
    return false;
  }

  #append(entry: Entry): void {
    entry.prev = this.#warmest;
    entry.next = undefined;
    if (this.#warmest === undefined) this.#coldest = entry;
    else this.#warmest.next = entry;
    this.#warmest = entry;
  }

  #unlink(entry: Entry): void {
    if (entry.prev === undefined) this.#coldest = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === undefined) this.#warmest = entry.prev;
    else entry.next.prev = entry.prev;
    entry.prev = entry.next = undefined;
  }

  #remove(entry: Entry): void {
    this.#unlink(entry);
    this.#entries.delete(entry.key);
  }
}
