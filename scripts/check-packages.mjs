// Checks the packages as npm users get them: the packed tarballs, not the workspace.
//
// Needs the packages built first (`pnpm build`); it does not build them, and stops with a
// message when an `exports` target is missing. Then, in a temporary directory:
//
//  1. packs every public package with `pnpm pack` (so `workspace:*` becomes a version);
//  2. inspects each tarball: no `workspace:` ranges left; LICENSE (identical to the
//     repository's) and README.md present; repository/homepage/bugs/keywords filled in;
//     every bare import in dist/ declared in `dependencies`, and every runtime dependency
//     imported by dist/*.js or *.cjs (a dependency that only carries types belongs in
//     devDependencies, its declarations inlined by tsup: see tsup.base.ts `dtsResolve`);
//  3. runs publint (strict: warnings fail) and @arethetypeswrong/cli on each tarball;
//  4. installs the tarballs into a fresh consumer project with npm (the @pvkit packages
//     only from the tarballs; @types/node from the registry) and type-checks consumer
//     files that import every public entry point and use the typed event API, with
//     `tsc --strict --skipLibCheck false` under node16 (an ESM .ts and a CJS .cts file),
//     bundler (also as a browser-only project without @types/node), and node10 (CJS);
//  5. loads every entry point from the installed packages with import() and require().
//
// Any failure is reported at the end and exits 1.
//
//   node scripts/check-packages.mjs          run every check
//   node scripts/check-packages.mjs --keep   also keep the temporary directory
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => join(root, "node_modules", ".bin", name);
const PNPM = ["--yes", "pnpm@12.4.2"];
const keep = process.argv.includes("--keep");

/** Runs a command; returns its exit status and output (nothing is thrown). */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" },
  });
  const output = `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}`;
  return { ok: r.status === 0, status: r.status, output };
}

const failures = [];
/** Records a failure (reported at the end) and prints it now. */
function fail(what, detail = "") {
  failures.push(what);
  console.log(`FAIL ${what}${detail ? `\n${indent(detail)}` : ""}`);
}
const pass = (what) => console.log(`ok   ${what}`);
const indent = (text) =>
  text
    .trimEnd()
    .split("\n")
    .map((l) => `     | ${l}`)
    .join("\n");
const section = (title) => console.log(`\n== ${title}`);

/** Every export target of a conditional `exports` entry, recursively. */
function targets(entry) {
  if (typeof entry === "string") return [entry];
  return Object.entries(entry).flatMap(([cond, t]) => (cond === "@pvkit/source" ? [] : targets(t)));
}

// ── the public packages, built ──────────────────────────────────────────────────────────
const packages = [];
for (const dir of readdirSync(join(root, "packages")).sort()) {
  const pkgDir = join(root, "packages", dir);
  if (!existsSync(join(pkgDir, "package.json"))) continue;
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  if (pkg.private) continue;
  packages.push({ dir: pkgDir, pkg });
  const missing = Object.values(pkg.exports)
    .flatMap(targets)
    .filter((t) => !existsSync(join(pkgDir, t)));
  if (missing.length > 0) {
    console.error(
      `check-packages: ${pkg.name} is not built (missing ${missing.join(", ")}).\n` +
        "Run `pnpm build` first.",
    );
    process.exit(1);
  }
}

const work = mkdtempSync(join(tmpdir(), "pvkit-check-packages-"));
const tarballDir = join(work, "tarballs");
mkdirSync(tarballDir);
console.log(`check-packages: working in ${work}`);

try {
  // ── 1. pack ──────────────────────────────────────────────────────────────────────────
  section("pack (pnpm pack)");
  const tarballs = new Map(); // package name → .tgz path
  for (const { dir, pkg } of packages) {
    const before = new Set(readdirSync(tarballDir));
    const r = run("npx", [...PNPM, "pack", "--pack-destination", tarballDir], dir);
    const made = readdirSync(tarballDir).filter((f) => !before.has(f) && f.endsWith(".tgz"));
    if (!r.ok || made.length !== 1) {
      fail(`${pkg.name}: pnpm pack`, r.output);
      continue;
    }
    tarballs.set(pkg.name, join(tarballDir, made[0]));
    pass(`${pkg.name}: ${made[0]}`);
  }

  // ── 2. what is in each tarball ───────────────────────────────────────────────────────
  section("tarball contents");
  const license = readFileSync(join(root, "LICENSE"), "utf8");
  const workspaceNames = new Set(packages.map(({ pkg }) => pkg.name));
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
  /** The package a bare specifier names (`@a/b/c` → `@a/b`, `x/y` → `x`). */
  const packageOf = (spec) =>
    spec
      .split("/")
      .slice(0, spec.startsWith("@") ? 2 : 1)
      .join("/");
  // A specifier is a whole string literal: `require('u' + 'rl')` (esbuild's shim for
  // `import.meta.url` in CJS) names no package `u`.
  const SPECIFIER =
    /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)["']([^"']+)["'](?!\s*\+)/g;
  for (const [name, tgz] of tarballs) {
    const out = join(work, "unpacked", name);
    mkdirSync(out, { recursive: true });
    const r = run("tar", ["-xzf", tgz, "-C", out], root);
    if (!r.ok) {
      fail(`${name}: cannot unpack ${tgz}`, r.output);
      continue;
    }
    const pkgDir = join(out, "package");
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
    const problems = [];
    for (const field of ["dependencies", "peerDependencies", "optionalDependencies"]) {
      for (const [dep, range] of Object.entries(pkg[field] ?? {})) {
        if (range.startsWith("workspace:")) problems.push(`${field}.${dep} is still "${range}"`);
      }
    }
    // The repository's LICENSE: pnpm pack/publish adds the workspace root's LICENSE to a
    // package that has none (https://pnpm.io/cli/publish), so there are no copies to drift.
    if (!existsSync(join(pkgDir, "LICENSE"))) problems.push("no LICENSE file");
    else if (readFileSync(join(pkgDir, "LICENSE"), "utf8") !== license) {
      problems.push("LICENSE differs from the repository's LICENSE");
    }
    if (!existsSync(join(pkgDir, "README.md"))) problems.push("no README.md");
    const dir = `packages/${basename(packages.find((p) => p.pkg.name === name).dir)}`;
    const wanted = {
      license: "MIT",
      "repository.type": "git",
      "repository.url": "git+https://github.com/pvkit/pvkit.git",
      "repository.directory": dir,
      homepage: `https://github.com/pvkit/pvkit/tree/main/${dir}#readme`,
      "bugs.url": "https://github.com/pvkit/pvkit/issues",
    };
    for (const [field, value] of Object.entries(wanted)) {
      const actual = field.split(".").reduce((o, k) => o?.[k], pkg);
      if (actual !== value)
        problems.push(`package.json ${field} is ${JSON.stringify(actual)}, not "${value}"`);
    }
    if (!Array.isArray(pkg.keywords) || pkg.keywords.length === 0) problems.push("no keywords");

    // Bare imports of the published JS and declarations, against the declared dependencies.
    const declared = new Set([
      ...Object.keys(pkg.dependencies ?? {}),
      ...Object.keys(pkg.peerDependencies ?? {}),
    ]);
    const usedByJs = new Set();
    const usedByDts = new Set();
    const distDir = join(pkgDir, "dist");
    for (const file of readdirSync(distDir)) {
      const isJs = /\.(c?js)$/.test(file);
      const isDts = /\.d\.c?ts$/.test(file);
      if (!isJs && !isDts) continue;
      const text = readFileSync(join(distDir, file), "utf8");
      for (const [, spec] of text.matchAll(SPECIFIER)) {
        if (spec.startsWith(".") || builtins.has(spec)) continue;
        const dep = packageOf(spec);
        (isJs ? usedByJs : usedByDts).add(dep);
        if (!declared.has(dep)) problems.push(`dist/${file} imports "${spec}", not a dependency`);
      }
    }
    for (const dep of Object.keys(pkg.dependencies ?? {})) {
      if (usedByJs.has(dep)) continue;
      if (!usedByDts.has(dep)) {
        problems.push(`dependency "${dep}" is not used by anything in dist/`);
      } else if (!workspaceNames.has(dep)) {
        // One of ours is fine (it has code; the declarations need it). A third-party
        // package used for types only is what made `typed-emitter` a runtime dependency.
        problems.push(
          `dependency "${dep}" is only used by the declarations: a dependency that only ` +
            "carries types (make it a devDependency and inline it with tsup `dtsResolve`, " +
            "or a peerDependency if consumers provide it)",
        );
      }
    }
    if (problems.length > 0) fail(`${name}: tarball contents`, [...new Set(problems)].join("\n"));
    else pass(`${name}: metadata, LICENSE, README.md, dependencies match what dist/ imports`);
  }

  // ── 3. publint and attw ──────────────────────────────────────────────────────────────
  section("publint --strict");
  for (const [name, tgz] of tarballs) {
    const r = run(bin("publint"), ["run", tgz, "--strict"], root);
    // publint prints suggestions too; they do not fail the run, but show them.
    const notes = r.output
      .split("\n")
      .filter((l) => !/^(Running publint|Unpacking tarball|Linting\.\.\.|All good!)/.test(l))
      .join("\n")
      .trim();
    if (!r.ok) fail(`${name}: publint`, r.output);
    else pass(`${name}: publint${notes ? `\n${indent(notes)}` : ""}`);
  }

  // The default ("strict") profile: node10, node16 from CJS, node16 from ESM and bundler
  // must all resolve every entry point to matching types. node10 ignores `exports`;
  // subpath entry points reach it through `typesVersions` in each package.json.
  section("@arethetypeswrong/cli (profile strict: node10, node16-cjs, node16-esm, bundler)");
  for (const [name, tgz] of tarballs) {
    const r = run(bin("attw"), [tgz, "--format", "table", "--no-emoji", "--no-color"], root);
    if (!r.ok) fail(`${name}: attw`, r.output);
    else pass(`${name}: attw\n${indent(r.output)}`);
  }

  // ── 4. a strict consumer project ─────────────────────────────────────────────────────
  section("consumer project (npm install of the tarballs, tsc --strict --skipLibCheck false)");
  const consumer = join(work, "consumer");
  mkdirSync(consumer);
  const typesNode = JSON.parse(
    readFileSync(join(root, "node_modules", "@types", "node", "package.json"), "utf8"),
  ).version;
  const deps = Object.fromEntries([...tarballs].map(([name, tgz]) => [name, `file:${tgz}`]));
  writeFileSync(
    join(consumer, "package.json"),
    `${JSON.stringify(
      {
        name: "pvkit-consumer",
        private: true,
        type: "module",
        dependencies: deps,
        devDependencies: { "@types/node": typesNode },
        // Every @pvkit dependency of a @pvkit package is the tarball, never the registry.
        overrides: Object.fromEntries([...tarballs.keys()].map((n) => [n, `$${n}`])),
      },
      null,
      2,
    )}\n`,
  );
  const install = run(
    "npm",
    ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
    consumer,
  );
  if (!install.ok) {
    fail("consumer: npm install of the tarballs", install.output);
    throw new Error("cannot go on without the consumer's node_modules");
  }
  const lock = JSON.parse(readFileSync(join(consumer, "package-lock.json"), "utf8"));
  const notFromTarball = Object.entries(lock.packages)
    .filter(([path]) => /node_modules\/@pvkit\//.test(path))
    .filter(
      ([path, meta]) =>
        path.split("node_modules/").length > 2 || !meta.resolved?.startsWith("file:"),
    )
    .map(([path, meta]) => `${path} from ${meta.resolved}`);
  if (notFromTarball.length > 0)
    fail("consumer: @pvkit packages not from the tarballs", notFromTarball.join("\n"));
  else pass(`consumer: installed ${tarballs.size} tarballs and @types/node@${typesNode}`);

  // Every public entry point, by specifier.
  const entries = packages.flatMap(({ pkg }) =>
    Object.keys(pkg.exports)
      .filter((sub) => sub !== "./package.json")
      .map((sub) => `${pkg.name}${sub.slice(1)}`),
  );
  // Entries a package lists in `sideEffects` are scripts (a worker entry): they must load,
  // and may export nothing.
  const scriptEntries = packages.flatMap(({ pkg }) =>
    Object.entries(pkg.exports)
      .filter(
        ([, t]) =>
          typeof t === "object" &&
          Array.isArray(pkg.sideEffects) &&
          pkg.sideEffects.includes(t.import?.default),
      )
      .map(([sub]) => `${pkg.name}${sub.slice(1)}`),
  );
  const browserEntries = entries.filter((e) => !e.endsWith("/node"));
  const namespaceImports = (list) =>
    `${list.map((e, i) => `import * as entry${i} from "${e}";`).join("\n")}\n` +
    `export const entries = [${list.map((_, i) => `entry${i}`).join(", ")}];\n`;
  writeFileSync(join(consumer, "entries.ts"), namespaceImports(entries));
  writeFileSync(join(consumer, "entries-cjs.cts"), namespaceImports(entries));
  writeFileSync(join(consumer, "browser-entries.ts"), namespaceImports(browserEntries));
  const events = eventsConsumer();
  writeFileSync(join(consumer, "events.ts"), events);
  writeFileSync(join(consumer, "events-cjs.cts"), events);

  const tsc = bin("tsc");
  const strict = {
    noEmit: true,
    strict: true,
    skipLibCheck: false,
    exactOptionalPropertyTypes: true,
  };
  const checks = [
    {
      what: "node16, ESM (.ts in a type:module project) and CJS (.cts)",
      options: { module: "node16", moduleResolution: "node16", types: ["node"] },
      files: ["entries.ts", "events.ts", "entries-cjs.cts", "events-cjs.cts"],
    },
    {
      what: "bundler (module esnext)",
      options: { module: "esnext", moduleResolution: "bundler", types: ["node"] },
      files: ["entries.ts", "events.ts"],
    },
    {
      what: "bundler, browser only (lib dom, no @types/node, main entry points)",
      options: { module: "esnext", moduleResolution: "bundler", types: [], lib: ["es2022", "dom"] },
      files: ["browser-entries.ts", "events.ts"],
    },
    {
      what: "node10 (module commonjs)",
      options: { module: "commonjs", moduleResolution: "node10", types: ["node"] },
      files: ["entries-cjs.cts", "events-cjs.cts"],
    },
  ];
  for (const [i, c] of checks.entries()) {
    const config = `tsconfig.${i}.json`;
    const tsconfig = {
      compilerOptions: { ...strict, target: "es2022", ...c.options },
      files: c.files,
    };
    writeFileSync(join(consumer, config), `${JSON.stringify(tsconfig, null, 2)}\n`);
    const r = run(tsc, ["-p", config], consumer);
    if (!r.ok)
      fail(`consumer tsc: ${c.what}`, `${config}: ${JSON.stringify(tsconfig)}\n${r.output}`);
    else pass(`consumer tsc: ${c.what}`);
  }

  // ── 5. the installed packages load ───────────────────────────────────────────────────
  section("consumer runtime (import() and require() of every entry point)");
  const load = `
    const { createRequire } = await import("node:module");
    const require = createRequire(import.meta.url);
    const scripts = ${JSON.stringify(scriptEntries)};
    for (const e of ${JSON.stringify(entries)}) {
      const esm = Object.keys(await import(e)).length;
      const cjs = Object.keys(require(e)).length;
      if ((esm === 0 || cjs === 0) && !scripts.includes(e)) throw new Error(e + ": no exports");
      console.log(e + ": " + esm + " ESM / " + cjs + " CJS exports");
    }`;
  const r = run(process.execPath, ["--input-type=module", "-e", load], consumer);
  if (!r.ok) fail("consumer runtime", r.output);
  else pass(`consumer runtime\n${indent(r.output)}`);
} catch (e) {
  if (failures.length === 0) fail(`check-packages crashed: ${e?.stack ?? e}`);
} finally {
  if (keep) console.log(`\nkept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}

if (failures.length > 0) {
  console.error(`\ncheck-packages: ${failures.length} check(s) failed:`);
  for (const f of failures) console.error(`  - ${f}`);
  process.exit(1);
}
console.log(`\ncheck-packages: all ${packages.length} public packages pass`);

/**
 * A consumer of the typed event API of every device and driver. `@ts-expect-error` lines
 * fail the check if the events ever degrade to `any`.
 */
function eventsConsumer() {
  return `import { Emitter, type EventMap, type TypedEmitter } from "@pvkit/platform";
import type { Rtl8139, Rtl8139Driver, Rtl8139Events } from "@pvkit/emulated-rtl8139";
import type { VirtioBlkDevice } from "@pvkit/virtio-blk";
import {
  type VirtioDeviceEvents,
  type VirtioError,
  VirtioRngDevice,
  type VirtioRngEvents,
} from "@pvkit/virtio-core";
import type { VirtioNetDevice, VirtioNetDriver, VirtioNetEvents } from "@pvkit/virtio-net";

export const rng = new VirtioRngDevice();
rng
  .on("served", (bytes) => {
    const n: number = bytes;
    return n;
  })
  .once("needsReset", (error) => {
    const e: VirtioError = error;
    return e;
  });
// @ts-expect-error: not an event of the device
rng.on("noSuchEvent", () => {});
// @ts-expect-error: wrong listener argument type
rng.on("served", (bytes: string) => bytes);
export const asBase: TypedEmitter<VirtioDeviceEvents> = rng;
export const asRng: TypedEmitter<VirtioRngEvents> = rng;
export const served: number = rng.listenerCount("served");

declare const net: VirtioNetDevice;
net.on("frame", (direction, frame, queue) => {
  const d: "tx" | "rx" = direction;
  const f: Uint8Array = frame;
  const q: number = queue;
  return [d, f, q];
});
const onLink = (up: boolean): void => {
  console.log(up);
};
net.on("link", onLink).off("link", onLink);
export const netEvents: TypedEmitter<VirtioNetEvents> = net;

declare const netDriver: VirtioNetDriver;
netDriver.once("announce", () => {}).on("link", onLink);

declare const blk: VirtioBlkDevice;
blk.on("completed", (type, status, bytes) => {
  const all: number = type + status + bytes;
  return all;
});
blk.on("requestError", (_code, message) => {
  const m: string = message;
  return m;
});

declare const rtl: Rtl8139;
rtl.on("drop", (reason) => reason).on("reset", () => {});
export const rtlEvents: TypedEmitter<Rtl8139Events> = rtl;
declare const rtlDriver: Rtl8139Driver;
rtlDriver.on("rxReset", (status) => status).removeAllListeners("writable");

type TickEvents = { tick: (n: number) => void };
export const tickMap: EventMap = {} as TickEvents;
class Ticker extends Emitter<TickEvents> {
  tick(n: number): boolean {
    return this.emit("tick", n);
  }
}
export const ticker: TypedEmitter<TickEvents> = new Ticker();
// @ts-expect-error: wrong argument type
ticker.emit("tick", "1");
`;
}
