/**
 * The base class of every error netkit throws on purpose.
 *
 * Each error carries a stable, machine-readable `code` (as Node's `ws` and
 * Node's own `err.code` do) and a message written for a person: what went
 * wrong and what to do about it. Match on `code`, show `message`.
 *
 * @example Telling a refused connection from the rest
 * ```ts
 * import { NetkitError } from "@netkit/netkit";
 * import { connect } from "@netkit/netkit/tcp";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(connect({ hostname: "127.0.0.1", port: 1 }), (err) => {
 *   assert.ok(err instanceof NetkitError);
 *   assert.equal(err.code, "ECONNREFUSED");
 *   assert.match(err.message, /^connection refused by 127\.0\.0\.1:1: is the server running/);
 *   return true;
 * });
 * ```
 */
export class NetkitError extends Error {
  /** A stable identifier for the kind of failure, e.g. `"ECONNREFUSED"`. */
  readonly code: string;

  /**
   * Makes an error with a stable code and a message for a person.
   *
   * @param code A stable identifier for the kind of failure.
   * @param message What went wrong and what to do about it.
   * @param options The underlying error, if any, as `cause`.
   */
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
