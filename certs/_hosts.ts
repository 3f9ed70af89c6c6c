// Reading the hosts a certificate is for: DNS names and IPv4/IPv6 addresses,
// each becoming one subjectAltName entry.
import { InvalidCertOptionError } from "./errors.ts";

/** One subjectAltName entry. */
export type SubjectAltName =
  | { type: "dns"; name: string }
  | { type: "ip"; address: string; bytes: Uint8Array };

/**
 * Reads `hosts` into SAN entries, dropping duplicates. Throws
 * InvalidCertOptionError for an empty list or a host that is neither a DNS
 * name nor an IP address.
 */
export function parseHosts(hosts: readonly string[]): SubjectAltName[] {
  if (!Array.isArray(hosts) || hosts.length === 0) {
    throw new InvalidCertOptionError(
      "hosts",
      'no hosts given: list at least one DNS name or IP address, e.g. "localhost"',
    );
  }
  const seen = new Set<string>();
  const names: SubjectAltName[] = [];
  for (const host of hosts) {
    const san = parseHost(host);
    const key = san.type === "dns" ? `dns:${san.name}` : `ip:${san.bytes.join(".")}`;
    if (seen.has(key)) continue;
    seen.add(key);
    names.push(san);
  }
  return names;
}

/** Reads one host: an IPv4 address, an IPv6 address (brackets allowed) or a DNS name. */
export function parseHost(host: string): SubjectAltName {
  if (typeof host !== "string") {
    throw new InvalidCertOptionError("hosts", `hosts must be strings, got ${typeof host}`);
  }
  const text = host.trim();
  const v4 = parseIPv4(text);
  if (v4) return { type: "ip", address: text, bytes: v4 };
  const unbracketed = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v6 = parseIPv6(unbracketed);
  if (v6) return { type: "ip", address: unbracketed.toLowerCase(), bytes: v6 };
  const name = dnsName(text);
  if (name) return { type: "dns", name };
  throw new InvalidCertOptionError(
    "hosts",
    `"${host}" is neither a DNS name nor an IP address: give names like localhost or ` +
      "app.example.test, or addresses like 127.0.0.1 or ::1",
  );
}

/** The 4 bytes of a dotted-quad IPv4 address, or null. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (const [i, part] of parts.entries()) {
    // Decimal only, no leading zeros: "010" is octal to some parsers.
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

/** The 16 bytes of an IPv6 address (with `::` and a trailing dotted quad allowed), or null. */
export function parseIPv6(text: string): Uint8Array | null {
  if (!text.includes(":") || text.includes("%")) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (const [i, piece] of pieces.entries()) {
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  // A dotted quad may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (const [i, group] of all.entries()) {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  }
  return bytes;
}

/**
 * `text` as a DNS name for a certificate (lower case, no trailing dot), or
 * null: letters, digits and hyphens in labels of 1–63, at most 253 in all, a
 * leading `*.` wildcard allowed, and a last label that is not all digits (so a
 * mistyped address like 127.0.0.256 is not taken for a name).
 */
export function dnsName(text: string): string | null {
  const name = text.toLowerCase().replace(/\.$/, "");
  if (name.length === 0 || name.length > 253) return null;
  const labels = name.split(".");
  for (const [i, label] of labels.entries()) {
    if (i === 0 && label === "*" && labels.length > 1) continue;
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label)) return null;
  }
  if (/^\d+$/.test(labels[labels.length - 1])) return null;
  return name;
}
