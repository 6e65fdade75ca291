import type { Options } from "tsup";

/**
 * The one tsup configuration every pvkit package builds with: ESM + CJS + `.d.ts`,
 * tree-shakeable, targeting Node 20 and current browsers.
 *
 * @param entry - entry points, keyed by output name (e.g. `{ index: "src/index.ts" }`)
 * @returns the tsup options for that package
 */
export function pvkitTsup(entry: Record<string, string>): Options {
  return {
    entry,
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "es2022",
    splitting: true,
    treeshake: true,
    outDir: "dist",
  };
}
