// Loads every built package through its `exports` map, once as ESM and once as CJS, and
// fails when an entry is missing or exports nothing — except an entry the package lists in
// `sideEffects` (a worker script, which only runs), which must load. Run after `pnpm build`.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = new URL("..", import.meta.url).pathname;
let failures = 0;
for (const dir of readdirSync(join(root, "packages"))) {
  const pkgDir = join(root, "packages", dir);
  if (!existsSync(join(pkgDir, "package.json"))) continue; // not a package (yet)
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  const require = createRequire(join(pkgDir, "package.json"));
  for (const [sub, target] of Object.entries(pkg.exports)) {
    if (typeof target === "string") continue;
    const esm = join(pkgDir, target.import.default);
    const cjs = join(pkgDir, target.require.default);
    const m = await import(pathToFileURL(esm).href);
    const c = require(cjs);
    const script =
      Array.isArray(pkg.sideEffects) && pkg.sideEffects.includes(target.import.default);
    const ok = script || (Object.keys(m).length > 0 && Object.keys(c).length > 0);
    console.log(
      `${ok ? "ok  " : "FAIL"} ${pkg.name}${sub.slice(1)}: ${script ? "script entry, loads" : `${Object.keys(m).length} ESM / ${Object.keys(c).length} CJS exports`}`,
    );
    if (!ok) failures++;
  }
}
if (failures > 0) process.exit(1);
