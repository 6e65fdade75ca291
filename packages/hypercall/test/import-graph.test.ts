/**
 * Guards the module structure of `src/`: the import graph has no cycle, and the hypervisor
 * depends on domains, the PV MMU and the hypercall families (`src/hv/`), never the other way
 * round. The graph is read from the `import` / `export … from` lines of every source file;
 * `import type` edges count too, except the allowed ones listed below with their reason.
 */

import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

const SRC = fileURLToPath(new URL("../src", import.meta.url));

/**
 * Type-only edges that may close a cycle, as `from → to` (paths relative to `src/`).
 *
 * - `domain.ts → hypervisor.ts`: the public `Domain.hypervisor` property is typed
 *   `Hypervisor`, and `Hypervisor.createDomain` returns a `Domain`: the public API names each
 *   class from the other. The import is `import type` (erased at runtime), and `Domain`/`Vcpu`
 *   use only `machineView` and `identityResolver` of it.
 */
const ALLOWED_TYPE_EDGES: readonly string[] = ["domain.ts → hypervisor.ts"];

interface Edge {
  readonly from: string;
  readonly to: string;
  /** `import type` / `export type`, or every named specifier marked `type`. */
  readonly typeOnly: boolean;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...sourceFiles(full));
    else if (name.endsWith(".ts")) out.push(full);
  }
  return out;
}

/** `import … from "x"`, `export … from "x"`, `import "x"`, at the start of a line. */
const STATEMENT =
  /^(import|export)(\s+type)?\b([^;'"]*?)\bfrom\s+["']([^"']+)["']|^import\s+["']([^"']+)["']/gm;

function parseEdges(file: string): Edge[] {
  const text = readFileSync(file, "utf8");
  const from = path.relative(SRC, file).split(path.sep).join("/");
  const edges: Edge[] = [];
  for (const m of text.matchAll(STATEMENT)) {
    const spec = m[4] ?? m[5]!;
    if (!spec.startsWith(".")) continue;
    const target = path.resolve(path.dirname(file), spec.replace(/\.js$/, ".ts"));
    const to = path.relative(SRC, target).split(path.sep).join("/");
    const clause = m[3] ?? "";
    const braces = /\{([^}]*)\}/.exec(clause);
    const named = braces
      ? braces[1]!
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s.length > 0)
      : [];
    const everyNamedIsType =
      named.length > 0 &&
      named.every((s) => s.startsWith("type ")) &&
      clause.replace(/\{[^}]*\}/, "").trim() === "";
    edges.push({ from, to, typeOnly: m[2] !== undefined || everyNamedIsType });
  }
  return edges;
}

const files = sourceFiles(SRC);
const edges = files.flatMap(parseEdges);

/** Every cycle reachable in the graph, as `a → b → … → a`, one per back edge found. */
function findCycles(graphEdges: readonly Edge[]): string[] {
  const next = new Map<string, string[]>();
  for (const e of graphEdges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (node: string): void => {
    state.set(node, "open");
    stack.push(node);
    for (const to of next.get(node) ?? []) {
      const s = state.get(to);
      if (s === "open") cycles.push([...stack.slice(stack.indexOf(to)), to].join(" → "));
      else if (s === undefined) visit(to);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...next.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

const key = (e: Edge) => `${e.from} → ${e.to}`;

describe("import graph of src/", () => {
  test("the parser sees the graph (every relative import resolves to a source file)", () => {
    expect(files.length).toBeGreaterThan(20);
    const known = new Set(files.map((f) => path.relative(SRC, f).split(path.sep).join("/")));
    expect(edges.filter((e) => !known.has(e.to)).map(key)).toEqual([]);
    expect(edges.map(key)).toContain("hypervisor.ts → hv/mm.ts");
    expect(edges.find((e) => key(e) === "pv-mm.ts → hv/core.ts")?.typeOnly).toBe(true);
  });

  test("no cycle through runtime (value) imports", () => {
    expect(findCycles(edges.filter((e) => !e.typeOnly))).toEqual([]);
  });

  test("no cycle through any import, `import type` included, beyond the allowed edges", () => {
    const allowed = new Set(ALLOWED_TYPE_EDGES);
    expect(findCycles(edges.filter((e) => !allowed.has(key(e))))).toEqual([]);
  });

  test("each allowed edge still exists and is type-only (remove it from the list otherwise)", () => {
    for (const name of ALLOWED_TYPE_EDGES) {
      const found = edges.filter((e) => key(e) === name);
      expect(found.length, name).toBeGreaterThan(0);
      expect(
        found.every((e) => e.typeOnly),
        name,
      ).toBe(true);
    }
  });

  test("the hypervisor depends on domains, the PV MMU and the families, not the reverse", () => {
    const below = (f: string) => f.startsWith("hv/") || f === "pv-mm.ts" || f === "domain.ts";
    const upward = edges.filter(
      (e) => below(e.from) && e.to === "hypervisor.ts" && !ALLOWED_TYPE_EDGES.includes(key(e)),
    );
    expect(upward.map(key)).toEqual([]);
    const domainDeps = edges.filter((e) => e.from === "domain.ts" && !e.typeOnly).map((e) => e.to);
    expect(domainDeps.filter((to) => to.startsWith("hv/") || to === "pv-mm.ts")).toEqual([]);
  });
});
