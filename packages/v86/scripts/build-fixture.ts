/**
 * Builds (or finds in the cache) the v86 Linux guest fixture and prints its manifest.
 * Usage: `pnpm --filter @pvkit/v86 fixture`. The cache lives in `.fixtures-cache/v86`
 * at the repository root unless `PVKIT_V86_CACHE` names another directory.
 *
 * @module
 */

import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { ensureFixture } from "../test/fixture.js";

const t0 = performance.now();
const fixture = await ensureFixture();
const ms = Math.round(performance.now() - t0);
const manifest = JSON.parse(await readFile(join(fixture.dir, "manifest.json"), "utf8")) as unknown;
const sizes: Record<string, number> = {};
for (const [name, path] of Object.entries({
  kernel: fixture.kernel,
  initramfs: fixture.initramfs,
  bios: fixture.bios,
  vgaBios: fixture.vgaBios,
  wasm: fixture.wasm,
})) {
  sizes[name] = (await stat(path)).size;
}
console.log(JSON.stringify({ fixture, manifest, sizes, ensureMs: ms }, null, 2));
