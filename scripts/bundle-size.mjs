// Measures what each public package costs in a browser bundle, and fails when one grew.
//
// For every public package under packages/, bundles its main entry (the built
// `exports["."].import.default`, with its dependencies resolved the way a user's bundler
// would) with esbuild for platform=browser, minified, and reports the raw and gzip sizes,
// plus the bytes that third-party code (anything from node_modules outside @pvkit)
// contributes. Sizes are compared against scripts/bundle-budget.json; a package more than
// 5% over its budget, or without a budget, fails the run.
//
// Needs the packages built first (`pnpm build`).
//
//   node scripts/bundle-size.mjs           measure and compare against the budget
//   node scripts/bundle-size.mjs --update  measure and write the sizes as the new budget
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const budgetFile = join(root, "scripts", "bundle-budget.json");
/** How much a package may grow over its budget before the check fails. */
const TOLERANCE = 0.05;
const update = process.argv.includes("--update");

/** Every public (non-private) package under packages/, with its directory. */
function publicPackages() {
  const out = [];
  for (const dir of readdirSync(join(root, "packages")).sort()) {
    const pkgDir = join(root, "packages", dir);
    const file = join(pkgDir, "package.json");
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, "utf8"));
    if (!pkg.private) out.push({ dir: pkgDir, pkg });
  }
  return out;
}

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

const budget = existsSync(budgetFile) ? JSON.parse(readFileSync(budgetFile, "utf8")) : {};
const measured = {};
const problems = [];

console.log(
  `${"package".padEnd(28)} ${"raw".padStart(10)} ${"gzip".padStart(10)} ${"budget gz".padStart(10)}  third-party code in the bundle`,
);
for (const { dir, pkg } of publicPackages()) {
  const entry = join(dir, pkg.exports["."].import.default);
  if (!existsSync(entry)) {
    console.error(`${pkg.name}: ${relative(root, entry)} is missing; run \`pnpm build\` first`);
    process.exit(1);
  }
  let result;
  try {
    result = await build({
      entryPoints: [entry],
      absWorkingDir: dir,
      bundle: true,
      minify: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      // Not written (write: false); it names the output in the metafile.
      outfile: join(dir, "bundle-size.out.js"),
      write: false,
      metafile: true,
      logLevel: "silent",
    });
  } catch (e) {
    // platform=browser: a main entry that pulls in node:* modules fails here, as it would
    // in a user's browser build.
    problems.push(`${pkg.name}: esbuild could not bundle it for the browser:\n${e.message}`);
    continue;
  }
  const [code] = result.outputFiles;
  const raw = code.contents.byteLength;
  const gzip = gzipSync(code.contents, { level: 9 }).byteLength;
  measured[pkg.name] = { raw, gzip };

  // Bytes per third-party package (node_modules, not one of ours), from the metafile.
  const thirdParty = new Map();
  for (const output of Object.values(result.metafile.outputs)) {
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const m = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(input);
      if (!m || m[1].startsWith("@pvkit/")) continue;
      thirdParty.set(m[1], (thirdParty.get(m[1]) ?? 0) + bytesInOutput);
    }
  }
  const deps = [...thirdParty].map(([name, bytes]) => `${name} ${kb(bytes)}`).join(", ") || "none";

  const limit = budget[pkg.name];
  console.log(
    `${pkg.name.padEnd(28)} ${kb(raw).padStart(10)} ${kb(gzip).padStart(10)} ${(limit ? kb(limit.gzip) : "-").padStart(10)}  ${deps}`,
  );
  if (update) continue;
  if (!limit) {
    problems.push(
      `${pkg.name}: no budget in scripts/bundle-budget.json (run \`node scripts/bundle-size.mjs --update\`)`,
    );
    continue;
  }
  for (const kind of ["raw", "gzip"]) {
    const size = measured[pkg.name][kind];
    if (size > limit[kind] * (1 + TOLERANCE)) {
      const pct = ((size / limit[kind] - 1) * 100).toFixed(1);
      problems.push(
        `${pkg.name}: ${kind} size ${size} B is ${pct}% over its budget of ${limit[kind]} B ` +
          `(tolerance ${TOLERANCE * 100}%). Shrink it, or raise the budget with --update if the growth is intended.`,
      );
    }
  }
}

if (update && problems.length === 0) {
  writeFileSync(budgetFile, `${JSON.stringify(measured, null, 2)}\n`);
  console.log(`\nwrote ${relative(root, budgetFile)}`);
}
if (problems.length > 0) {
  console.error(`\nbundle-size: ${problems.length} problem(s):`);
  for (const p of problems) console.error(`  - ${p}`);
  process.exit(1);
}
if (!update) console.log("\nbundle-size: every package is within its budget");
