/**
 * Builds the browser example into `examples/browser/dist/`: `main.ts` bundled by esbuild
 * for the browser (one ES module, `main.js`) and `index.html` copied next to it. The
 * build fails when the bundle imports a Node built-in: the page must run without Node.
 *
 * The pvkit packages are resolved through their `@pvkit/source` export condition, i.e.
 * their TypeScript sources, so a fresh clone builds the page without `pnpm build`. With
 * `--dist` they are resolved as a consumer gets them from npm: their built `dist/`
 * (run `pnpm build` first).
 *
 * Run: `npx tsx examples/browser/build.ts [--dist]`
 *
 * @module
 */

import { copyFileSync, mkdirSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Message } from "esbuild";

/** Options of {@link buildBrowserExample}. */
export interface BrowserBuildOptions {
  /** Output directory (default `examples/browser/dist`). */
  readonly outdir?: string;
  /** Resolve the pvkit packages to their built `dist/` instead of their sources. */
  readonly fromDist?: boolean;
  /** The entry module (default `examples/browser/main.ts`; the tests pass others). */
  readonly entry?: string;
}

/** What the build produced. */
export interface BrowserBuild {
  /** The output directory, holding `index.html` and `main.js`. */
  readonly outdir: string;
  /** Bytes of `main.js`. */
  readonly bundleBytes: number;
  /** Every input file of the bundle (paths relative to the working directory). */
  readonly inputs: readonly string[];
}

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Bundles the page.
 *
 * @returns where it went and what went in
 * @throws Error when esbuild fails or the bundle imports a Node built-in
 */
export async function buildBrowserExample(
  options: BrowserBuildOptions = {},
): Promise<BrowserBuild> {
  const outdir = options.outdir ?? join(here, "dist");
  mkdirSync(outdir, { recursive: true });
  const result = await build({
    entryPoints: [options.entry ?? join(here, "main.ts")],
    outfile: join(outdir, "main.js"),
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    sourcemap: true,
    metafile: true,
    // Setting `conditions` replaces esbuild's defaults, so "browser" and "module" are listed.
    conditions: options.fromDist ? ["browser", "module"] : ["@pvkit/source", "browser", "module"],
    logLevel: "silent",
  }).catch((e: unknown) => {
    // For the browser platform esbuild cannot resolve Node built-ins: say what that means.
    const errors = (e as { errors?: Message[] }).errors ?? [];
    const named = errors.map((m) => /Could not resolve "([^"]+)"/.exec(m.text)?.[1] ?? "");
    const builtins = named.filter(isNodeBuiltin);
    if (builtins.length > 0) throw nodeBuiltinError(builtins);
    throw e;
  });
  const inputs = Object.keys(result.metafile.inputs);
  const outputs = Object.entries(result.metafile.outputs);
  // A Node built-in in the bundle: an input (`node:fs`), or an import left external.
  const builtins = [
    ...inputs.filter(isNodeBuiltin),
    ...outputs.flatMap(([, o]) => o.imports.map((i) => i.path)).filter(isNodeBuiltin),
  ];
  if (builtins.length > 0) {
    throw new Error(
      `the browser bundle imports Node built-ins: ${[...new Set(builtins)].join(", ")}`,
    );
  }
  copyFileSync(join(here, "index.html"), join(outdir, "index.html"));
  const main = outputs.find(([path]) => path.endsWith("main.js"));
  return { outdir, bundleBytes: main?.[1].bytes ?? 0, inputs };
}

/** The error for a bundle that would need Node. */
function nodeBuiltinError(builtins: readonly string[]): Error {
  return new Error(
    `the browser bundle imports Node built-ins: ${[...new Set(builtins)].join(", ")} ` +
      "(the page must run without Node)",
  );
}

/** Whether an import path names a Node built-in (`node:fs`, or a bare `fs`, `path/posix`...). */
function isNodeBuiltin(path: string): boolean {
  return path.startsWith("node:") || builtinModules.includes(path);
}

// Run when executed directly, not when imported by the test.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const built = await buildBrowserExample({ fromDist: process.argv.includes("--dist") });
  console.log(
    `built ${built.outdir}/main.js (${built.bundleBytes} bytes from ${built.inputs.length} ` +
      "files, no Node built-in); serve the directory over HTTP and open index.html",
  );
}
