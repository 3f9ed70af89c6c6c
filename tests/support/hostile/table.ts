/**
 * The outcome table each hostile-peer test prints at its end: per attack,
 * what the attacker observed and what the server logged.
 *
 * @module
 */
// deno-lint-ignore-file no-console

/** One attack on one server: what the attacker saw, what the server logged. */
export interface Outcome {
  server: string;
  attack: string;
  observed: string;
  logged: string;
}

/** Shortens a server log line for the table: the program and address dropped. */
export function shortLog(lines: string[]): string {
  const interesting = lines.filter((l) => !/: close 127\.0\.0\.1:\d+ \(/.test(l));
  const shown = interesting.map((l) =>
    l.replace(/^[a-z-]+: /, "").replace(/127\.0\.0\.1:\d+:? ?/g, "").replace(/\s+/g, " ").trim()
  );
  if (shown.length === 0) return lines.length > 0 ? "close" : "-";
  return shown.join("; ").slice(0, 140);
}

/** Prints the outcome table as markdown. */
export function printMatrix(title: string, rows: Outcome[]): void {
  const lines = [
    `\n${title}`,
    "| server | attack | attacker observed | server logged |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.server} | ${r.attack} | ${r.observed} | ${r.logged} |`),
  ];
  console.log(lines.join("\n"));
}
