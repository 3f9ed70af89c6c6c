import { NetkitError } from "../errors.ts";

/**
 * A response that does not follow HTTP/1.1, or a URL netkit's client
 * cannot fetch. Codes: `ERR_HTTP_BAD_URL`, `ERR_HTTP_MALFORMED`,
 * `ERR_HTTP_HEAD_TOO_LARGE`, `ERR_HTTP_BODY_TOO_LARGE`, `ERR_HTTP_TRUNCATED`.
 *
 * @example
 * ```ts
 * import { HttpError } from "@netkit/netkit/http";
 * import assert from "node:assert/strict";
 *
 * const err = new HttpError("ERR_HTTP_MALFORMED", "bad status line");
 * assert.equal(err.code, "ERR_HTTP_MALFORMED");
 * ```
 */
export class HttpError extends NetkitError {}
