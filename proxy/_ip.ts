// IP literal parsing for SOCKS5 address types and NO_PROXY addresses/CIDRs.
// Only literals: nothing here resolves a name.

/** The 4 bytes of a dotted-quad IPv4 address, or null. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

/** The 16 bytes of an IPv6 address (brackets and a `%zone` allowed), or null. */
export function parseIPv6(text: string): Uint8Array | null {
  let s = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (!s.includes(":")) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const compressed = halves.length === 2;
  const head = groups(halves[0], !compressed);
  const tail = compressed ? groups(halves[1], true) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

/** An IPv4 or IPv6 literal's bytes (4 or 16), or null for anything else. */
export function parseIP(text: string): Uint8Array | null {
  return parseIPv4(text) ?? parseIPv6(text);
}

// The 16-bit groups of one side of "::"; an embedded IPv4 address may end
// the address (::ffff:1.2.3.4) and counts as two groups.
function groups(part: string, mayEndWithIPv4: boolean): number[] | null {
  if (part === "") return [];
  const out: number[] = [];
  const pieces = part.split(":");
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i];
    if (mayEndWithIPv4 && i === pieces.length - 1 && piece.includes(".")) {
      const v4 = parseIPv4(piece);
      if (v4 === null) return null;
      out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (/^[0-9a-f]{1,4}$/i.test(piece)) {
      out.push(parseInt(piece, 16));
    } else {
      return null;
    }
  }
  return out;
}
