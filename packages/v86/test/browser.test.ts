/**
 * The adapter must run in browsers: bundling `@pvkit/v86` (and everything it imports,
 * through the workspace sources) for the browser platform must not need any Node
 * built-in module.
 */

import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import { describe, expect, it } from "vitest";

describe("@pvkit/v86 in the browser", () => {
  it("bundles for platform=browser with no Node built-in, exporting the adapter", () => {
    const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
    const result = buildSync({
      entryPoints: [entry],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      conditions: ["@pvkit/source", "browser", "module"],
      logLevel: "silent",
    });
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile!.inputs);
    expect(inputs.some((p) => p.endsWith("packages/v86/src/attach.ts"))).toBe(true);
    expect(inputs.some((p) => p.endsWith("packages/virtio-core/src/transport/pci.ts"))).toBe(true);
    expect(
      inputs.filter((p) => p.startsWith("node:") || /(^|\/)node_modules\/@types\/node\//.test(p)),
    ).toEqual([]);
    const text = result.outputFiles[0]!.text;
    expect(text).toContain("attachPvkit");
    expect(text).not.toMatch(/from\s*["']node:/);
  });
});
