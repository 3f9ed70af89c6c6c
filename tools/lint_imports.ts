// deno-lint-ignore-file no-console
/**
 * The import rules of the house, checked by `deno task check`:
 *
 * 1. No import cycles between modules (as std's `lint:circular`).
 * 2. A `_`-prefixed file is private to its top-level folder: `websocket/server/`
 *    may import `websocket/connection/_engine.ts`, `tls/` may not.
 * 3. `internal/` is the shared core: every layer may import it; it imports
 *    only itself, the root files (`conn.ts`, `errors.ts`) and `io/`.
 * 4. Layers, bottom up: the root files, `internal/` and `io/`; `proxy/` and
 *    `certs/`; `tcp/`; `tls/`; `websocket/` and `http/`; `redis/`; `cli/`;
 *    `mod.ts`. A file imports only its own layer and the layers below.
 *
 * Usage: `deno run --allow-read tools/lint_imports.ts [root]`; exits 1 with
 * one line per violation.
 *
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(Deno.args[0] ?? ".");
const SKIP = new Set([".git", "node_modules", "coverage"]);
const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^"';]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']|(?:^|\n)\s*import\s*["'](\.{1,2}\/[^"']+)["']|\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

function* walk(dir: string): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    if (SKIP.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

/** The top-level folder of a repo path (`""` for root files). */
function top(rel: string): string {
  const i = rel.indexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}

const graph = new Map<string, string[]>();
for (const file of walk(root)) {
  const text = Deno.readTextFileSync(file);
  const deps: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    deps.push(resolve(dirname(file), spec));
  }
  graph.set(file, deps);
}

const LAYER: Record<string, number> = {
  "": 0,
  internal: 0,
  io: 0,
  proxy: 1,
  certs: 1,
  tcp: 2,
  tls: 3,
  websocket: 4,
  http: 4,
  redis: 5,
  cli: 6,
};
function layerOf(rel: string): number | undefined {
  if (rel === "mod.ts") return 7;
  return LAYER[top(rel)];
}

const problems: string[] = [];
const LIBRARY_ONLY = new Set(["tests", "bench", "tools"]);
for (const [file, deps] of graph) {
  const from = relative(root, file);
  for (const dep of deps) {
    const to = relative(root, dep);
    const base = to.split("/").pop()!;
    if (base.startsWith("_") && top(to) !== top(from) && !LIBRARY_ONLY.has(top(from))) {
      problems.push(`${from}: imports ${to}, a private file of ${top(to) || "the root"}/`);
    }
    const [a, b] = [layerOf(from), layerOf(to)];
    if (a !== undefined && b !== undefined && b > a) {
      problems.push(`${from}: imports ${to}, a layer above it (see CONTRIBUTING.md)`);
    }
    if (top(from) === "internal" && !["internal", "", "io"].includes(top(to))) {
      problems.push(`${from}: internal/ may import only internal/, io/ and root files, not ${to}`);
    }
  }
}

// Cycles: a depth-first search over library modules (tests and bench are leaves).
const state = new Map<string, 1 | 2>();
const stack: string[] = [];
function visit(file: string): void {
  state.set(file, 1);
  stack.push(file);
  for (const dep of graph.get(file) ?? []) {
    if (!graph.has(dep)) continue;
    const s = state.get(dep);
    if (s === 1) {
      const cycle = stack.slice(stack.indexOf(dep)).concat(dep).map((f) => relative(root, f));
      problems.push(`import cycle: ${cycle.join(" -> ")}`);
    } else if (s === undefined) visit(dep);
  }
  stack.pop();
  state.set(file, 2);
}
for (const file of graph.keys()) if (!state.has(file)) visit(file);

for (const problem of problems) console.error(`lint-imports: ${problem}`);
if (problems.length > 0) Deno.exit(1);
console.log(
  `lint-imports: ${graph.size} files, no cycles, no private imports across folders, layers kept`,
);
