import type { Options } from "tsup";

/** Per-package settings for {@link pvkitTsup}. */
export interface PvkitTsupOptions {
  /**
   * Types-only packages (devDependencies) whose declarations are copied into the emitted
   * `.d.ts`, so that consumers never resolve them (e.g. `typed-emitter`, whose default
   * export strict `node16` resolution cannot use as a type).
   */
  readonly dtsResolve?: readonly string[];
}

/**
 * The one tsup configuration every pvkit package builds with: ESM + CJS + `.d.ts`,
 * tree-shakeable, targeting Node 20 and current browsers.
 *
 * @param entry - entry points, keyed by output name (e.g. `{ index: "src/index.ts" }`)
 * @param options - what differs per package
 * @returns the tsup options for that package
 */
export function pvkitTsup(entry: Record<string, string>, options: PvkitTsupOptions = {}): Options {
  const { dtsResolve = [] } = options;
  return {
    entry,
    format: ["esm", "cjs"],
    dts: dtsResolve.length > 0 ? { resolve: [...dtsResolve] } : true,
    sourcemap: true,
    clean: true,
    target: "es2022",
    splitting: true,
    treeshake: true,
    outDir: "dist",
  };
}
