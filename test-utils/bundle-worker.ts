/**
 * Test helper: bundles a TypeScript worker entry into one ES module that
 * `new Worker(path)` can run, resolving workspace packages to their TypeScript source
 * through the `@pvkit/source` export condition (the same resolution the tests use).
 *
 * Any package's tests can use it:
 * ```ts
 * import { bundleWorker } from "../../../test-utils/bundle-worker.js";
 * const file = bundleWorker(new URL("./fixtures/my-worker.ts", import.meta.url));
 * const worker = new Worker(file, { workerData });
 * ```
 *
 * @module
 */

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";

/** Options of {@link bundleWorker}. */
export interface BundleWorkerOptions {
  /** Directory to write the bundle to (default: a fresh directory under the OS temp dir). */
  readonly outDir?: string;
  /** Extra esbuild `define` replacements (e.g. `{ "process.env.DEBUG": "false" }`). */
  readonly define?: Record<string, string>;
  /** Emit an inline source map (default true), so stack traces point at the `.ts` source. */
  readonly sourcemap?: boolean;
}

/**
 * Bundles `entry` (a `.ts` file) with esbuild: platform node, format esm, target node20,
 * conditions `["@pvkit/source"]`. Node built-ins stay external; CommonJS dependencies get
 * a `require` shim so they can load built-ins from inside the ES module.
 *
 * @param entry - path or `file:` URL of the worker's TypeScript entry
 * @param options - see {@link BundleWorkerOptions}
 * @returns the absolute path of the bundled `.mjs` file
 * @throws Error with esbuild's messages when the entry does not build
 */
export function bundleWorker(entry: string | URL, options: BundleWorkerOptions = {}): string {
  const entryPath = entry instanceof URL ? fileURLToPath(entry) : entry;
  const dir = options.outDir ?? mkdtempSync(join(tmpdir(), "pvkit-worker-"));
  const outfile = join(dir, `${basename(entryPath).replace(/\.[cm]?[jt]sx?$/, "")}.mjs`);
  buildSync({
    entryPoints: [entryPath],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["@pvkit/source"],
    sourcemap: options.sourcemap === false ? false : "inline",
    logLevel: "silent",
    ...(options.define === undefined ? {} : { define: options.define }),
    banner: {
      js: 'import { createRequire as __pvkitCreateRequire } from "node:module"; const require = __pvkitCreateRequire(import.meta.url);',
    },
  });
  return outfile;
}
