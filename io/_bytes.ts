// Small byte helpers shared by the io module. Internal.

const encoder = new TextEncoder();

/** A delimiter given as a string (UTF-8) or bytes, checked non-empty. */
export function toDelimiter(delimiter: string | Uint8Array): Uint8Array {
  const bytes = typeof delimiter === "string" ? encodeDelimiter(delimiter) : delimiter;
  if (bytes.length === 0) throw new TypeError("the delimiter must not be empty");
  return bytes;
}

// Protocols use a handful of delimiters ("\n", "\r\n", "\r\n\r\n"):
// encode each once, not once per record.
const encoded = new Map<string, Uint8Array>();

function encodeDelimiter(text: string): Uint8Array {
  let bytes = encoded.get(text);
  if (bytes === undefined) {
    bytes = encoder.encode(text);
    if (encoded.size < 64) encoded.set(text, bytes);
  }
  return bytes;
}

/** Bytes from a string (UTF-8) or bytes as they are. */
export function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? encoder.encode(data) : data;
}

/**
 * Where `needle` first starts in `haystack[from, to)`, or -1. The search
 * never looks past `to`: buffers are reused, and bytes past the end are stale.
 */
export function indexOfBytes(
  haystack: Uint8Array,
  needle: Uint8Array,
  from: number,
  to: number,
): number {
  const n = needle.length;
  if (to - from < n) return -1;
  const first = needle[0];
  // TypedArray#indexOf is memchr-fast in V8; bound it with a view.
  const view = from === 0 && to === haystack.length ? haystack : haystack.subarray(from, to);
  if (n === 1) {
    const i = view.indexOf(first);
    return i < 0 ? -1 : from + i;
  }
  const last = view.length - n;
  let i = view.indexOf(first);
  outer: while (i >= 0 && i <= last) {
    for (let k = 1; k < n; k++) {
      if (view[i + k] !== needle[k]) {
        i = view.indexOf(first, i + 1);
        continue outer;
      }
    }
    return from + i;
  }
  return -1;
}

/** A delimiter as a person reads it in an error message: `"\r\n\r\n"`. */
export function describeDelimiter(delimiter: Uint8Array): string {
  let text = "";
  for (const b of delimiter) {
    if (b === 0x0a) text += "\\n";
    else if (b === 0x0d) text += "\\r";
    else if (b === 0x09) text += "\\t";
    else if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) text += String.fromCharCode(b);
    else text += `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return `"${text}"`;
}
