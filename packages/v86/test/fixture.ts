/**
 * Builds (once) and caches the Linux guest the v86 tests boot: Debian bookworm's i386
 * `-686` kernel, Debian's SeaBIOS, and a gzip'd newc initramfs holding busybox-static, the
 * kernel modules the device tests need, and a `/init` that loads them and runs a per-boot
 * test script. Node-only (apt, dpkg-deb, the file system).
 *
 * Build steps: resolve package versions with `apt-cache`, `apt-get download` the three
 * `.deb`s, unpack them with `dpkg-deb -x`, compute the module load order from each `.ko`'s
 * `.modinfo` section (the `.deb` ships no `modules.dep`; depmod runs at install time), and
 * write `<cache>/<key>/`. The key hashes the package versions, this file's source and the
 * init script, so a new kernel upload or a change here rebuilds.
 *
 * @module
 */

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  writeFile,
} from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { type CpioEntry, CpioMode, cpioNewc } from "../src/cpio.js";

const run = promisify(execFile);

/** A built guest: absolute paths to everything a v86 Linux boot needs. */
export interface Fixture {
  /** The fixture's cache directory (`<cache>/<key>`). */
  readonly dir: string;
  /** The kernel, a bzImage (Debian's `vmlinuz-*`). */
  readonly kernel: string;
  /** SeaBIOS (`bios.bin` from Debian's `seabios` package). */
  readonly bios: string;
  /** The VGA option ROM (`vgabios-stdvga.bin`). */
  readonly vgaBios: string;
  /** The initramfs: a gzip-compressed newc cpio. */
  readonly initramfs: string;
  /** v86's `build/v86.wasm` from the installed `v86` package (not copied into the cache). */
  readonly wasm: string;
  /** The kernel release, as `uname -r` prints it (e.g. `6.1.0-50-686`). */
  readonly kernelVersion: string;
  /** Module names in load order (dependencies first), as listed in the guest's `/etc/modules`. */
  readonly modules: readonly string[];
  /** The cache key: sha256 (hex) of the package versions, the builder's source and the module roots. */
  readonly key: string;
  /** The Debian packages the fixture was built from. */
  readonly packages: readonly ResolvedPackage[];
}

/** A Debian package pinned to its candidate version. */
export interface ResolvedPackage {
  /** Package name with architecture qualifier where needed (e.g. `busybox-static:i386`). */
  readonly name: string;
  /** The exact version `apt-get download` fetches. */
  readonly version: string;
}

/** What `manifest.json` holds; file names are relative to the fixture directory. */
interface Manifest {
  readonly format: 1;
  readonly key: string;
  readonly kernelVersion: string;
  readonly modules: string[];
  readonly packages: ResolvedPackage[];
  readonly files: { kernel: string; bios: string; vgaBios: string; initramfs: string };
  readonly sizes: { initramfsCpio: number; initramfsGz: number };
  readonly buildMs: number;
}

/** Modules the tests need; their dependency closure is loaded too. */
const MODULE_ROOTS = [
  "virtio_pci",
  "virtio_mmio",
  "virtio_blk",
  "virtio_net",
  "8139too",
  // v86's own NE2000 (PCI 10ec:8029), the peer NIC of the network benchmark; pulls in 8390.
  "ne2k_pci",
  "ata_piix",
  "sd_mod",
] as const;

/**
 * Crypto back-ends loaded first when the package has them: `crc-t10dif` and `crc64-rocksoft`
 * (pulled in by `sd_mod` via `t10-pi`) look up these algorithms when they initialise; with the
 * back-end absent they would ask the usermode helper to modprobe it, which cannot work here.
 */
const OPTIONAL_ROOTS = ["crct10dif_generic", "crc64_rocksoft_generic"] as const;

/**
 * The guest's `/init`. It keeps the kernel's console log level (the tests want dmesg on the
 * serial port), loads `/etc/modules` in order, then runs `/pvkit/test.sh` if a per-boot cpio
 * appended to the initrd supplied one. The markers are the harness's protocol.
 */
export const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" || echo "PVKIT-INSMOD-FAIL $m"
done < /etc/modules
echo PVKIT-READY
if [ -f /pvkit/test.sh ]; then
  sh /pvkit/test.sh
  echo "PVKIT-EXIT $?"
else
  echo "PVKIT-EXIT none"
fi
poweroff -f
`;

const LOCK_POLL_MS = 500;
const LOCK_STALE_MS = 10 * 60 * 1000;

/** The repository root: the nearest ancestor of this file holding `pnpm-workspace.yaml`. */
async function repoRoot(): Promise<string> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (await exists(join(dir, "pnpm-workspace.yaml"))) return dir;
    const up = dirname(dir);
    if (up === dir)
      throw new Error("fixture: cannot find the repository root (pnpm-workspace.yaml)");
    dir = up;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function sh(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, {
      env: { ...process.env, LC_ALL: "C" },
      maxBuffer: 64 * 1024 * 1024,
      ...(cwd === undefined ? {} : { cwd }),
    });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    throw new Error(
      `fixture: \`${cmd} ${args.join(" ")}\` failed: ${err.stderr?.trim() || err.message}`,
    );
  }
}

/** Makes sure apt can see i386 packages, adding the architecture when running as root. */
async function ensureI386(): Promise<void> {
  const native = (await sh("dpkg", ["--print-architecture"])).trim();
  const foreign = (await sh("dpkg", ["--print-foreign-architectures"])).split(/\s+/);
  if (native === "i386" || foreign.includes("i386")) return;
  if (process.getuid?.() !== 0) {
    throw new Error(
      "fixture: apt has no i386 architecture. Run as root once: " +
        "`dpkg --add-architecture i386 && apt-get update` (or run the tests as root)",
    );
  }
  await sh("dpkg", ["--add-architecture", "i386"]);
  await aptUpdate();
}

/**
 * `apt-get update`, tolerating a partial failure: a mirror mid-sync makes it exit 100
 * after fetching every other index (seen on debian-security), and the lookups that follow
 * say whether what we need is there.
 */
async function aptUpdate(): Promise<void> {
  try {
    await sh("apt-get", ["update", "-q"]);
  } catch (e) {
    console.warn(`fixture: apt-get update reported errors, going on: ${(e as Error).message}`);
  }
}

/**
 * apt options for every query. Docker-derived images disable apt's binary package cache
 * (`Dir::Cache::pkgcache ""`), which makes each `apt-cache` call re-parse every list (about
 * 1.2 s here); pointing it at a file in the temp directory lets apt build it once and
 * revalidate it against the lists on each call (about 0.05 s).
 */
function aptOptions(): string[] {
  const uid = process.getuid?.() ?? "user";
  return ["-o", `Dir::Cache::pkgcache=${join(tmpdir(), `pvkit-apt-pkgcache-${uid}.bin`)}`];
}

async function aptCache(args: readonly string[]): Promise<string> {
  return sh("apt-cache", [...aptOptions(), ...args]);
}

/** The image package `linux-image-686:i386` depends on, e.g. `linux-image-6.1.0-50-686`. */
async function kernelImage(): Promise<{ image: string; kernelVersion: string } | undefined> {
  let deps: string;
  try {
    deps = await aptCache(["depends", "linux-image-686:i386"]);
  } catch {
    return undefined; // "E: No packages found": the i386 lists are missing
  }
  for (const line of deps.split("\n")) {
    const m = /^\s*\|?Depends:\s*<?(linux-image-(\d[\w.+~-]*-686))(?::i386)?>?\s*$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined)
      return { image: `${m[1]}:i386`, kernelVersion: m[2] };
  }
  throw new Error(`fixture: linux-image-686:i386 depends on no linux-image-*-686:\n${deps}`);
}

/** A package name without its `:arch` qualifier (apt omits the native one in its output). */
function bareName(name: string): string {
  return name.split(":")[0] ?? name;
}

/** Resolves the kernel, busybox and SeaBIOS packages to exact (candidate) versions. */
async function resolvePackages(): Promise<{ packages: ResolvedPackage[]; kernelVersion: string }> {
  await ensureI386();
  let kernel = await kernelImage();
  if (kernel === undefined && process.getuid?.() === 0) {
    await aptUpdate();
    kernel = await kernelImage();
  }
  if (kernel === undefined) {
    throw new Error("fixture: apt knows no linux-image-686:i386; run `apt-get update`");
  }
  const names = [kernel.image, "busybox-static:i386", "seabios"];
  const policy = await aptCache(["policy", ...names]);
  // Output: one block per package, "<name>:" at column 0, then "  Candidate: <version>".
  const candidates = new Map<string, string>();
  let current: string | undefined;
  for (const line of policy.split("\n")) {
    const head = /^(\S+):$/.exec(line);
    if (head?.[1] !== undefined) current = bareName(head[1]);
    const c = /^\s+Candidate:\s*(\S+)/.exec(line);
    if (c?.[1] !== undefined && current !== undefined && c[1] !== "(none)")
      candidates.set(current, c[1]);
  }
  const packages = names.map((name) => {
    const version = candidates.get(bareName(name));
    if (version === undefined)
      throw new Error(`fixture: apt has no candidate for ${name}:\n${policy}`);
    return { name, version };
  });
  return { packages, kernelVersion: kernel.kernelVersion };
}

/**
 * The NUL-separated `key=value` strings of an ELF object's `.modinfo` section (ELF32 or
 * ELF64, little-endian; System V gABI, "Sections").
 */
export function modinfo(elf: Uint8Array): Map<string, string[]> {
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46 || elf[5] !== 1) {
    throw new Error("modinfo: not a little-endian ELF file");
  }
  const is64 = elf[4] === 2;
  const shoff = is64 ? Number(dv.getBigUint64(0x28, true)) : dv.getUint32(0x20, true);
  const shentsize = dv.getUint16(is64 ? 0x3a : 0x2e, true);
  const shnum = dv.getUint16(is64 ? 0x3c : 0x30, true);
  const shstrndx = dv.getUint16(is64 ? 0x3e : 0x32, true);
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return is64
      ? {
          name: dv.getUint32(at, true),
          offset: Number(dv.getBigUint64(at + 0x18, true)),
          size: Number(dv.getBigUint64(at + 0x20, true)),
        }
      : {
          name: dv.getUint32(at, true),
          offset: dv.getUint32(at + 0x10, true),
          size: dv.getUint32(at + 0x14, true),
        };
  };
  const names = section(shstrndx);
  const decoder = new TextDecoder();
  const cstr = (at: number): string => {
    let end = at;
    while (end < elf.length && elf[end] !== 0) end++;
    return decoder.decode(elf.subarray(at, end));
  };
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstr(names.offset + s.name) !== ".modinfo") continue;
    for (const item of decoder.decode(elf.subarray(s.offset, s.offset + s.size)).split("\0")) {
      const eq = item.indexOf("=");
      if (eq <= 0) continue;
      const k = item.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), item.slice(eq + 1)]);
    }
    return out;
  }
  throw new Error("modinfo: no .modinfo section");
}

/** Kernel module names use `_` where file names may use `-` (KBUILD_MODNAME). */
function modName(s: string): string {
  return s.replaceAll("-", "_");
}

async function indexModules(dir: string, into = new Map<string, string>()): Promise<typeof into> {
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) await indexModules(p, into);
    else if (ent.name.endsWith(".ko")) into.set(modName(ent.name.slice(0, -3)), p);
  }
  return into;
}

/**
 * The dependency closure of `roots` in load order (a depth-first post-order, so every
 * module comes after what it depends on). Dependencies are `depends=` plus the `softdep=pre:`
 * names that are modules in the package.
 */
async function moduleOrder(
  index: ReadonlyMap<string, string>,
  roots: readonly string[],
): Promise<{ order: string[]; files: Map<string, Uint8Array> }> {
  const files = new Map<string, Uint8Array>();
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (name: string, chain: readonly string[]): Promise<void> => {
    const st = state.get(name);
    if (st === "done") return;
    if (st === "visiting") throw new Error(`fixture: module cycle ${[...chain, name].join(" → ")}`);
    const path = index.get(name);
    if (path === undefined) {
      throw new Error(
        `fixture: module ${name} (needed by ${chain.join(" → ")}) not in the package`,
      );
    }
    state.set(name, "visiting");
    const bytes = new Uint8Array(await readFile(path));
    files.set(name, bytes);
    const info = modinfo(bytes);
    const deps = (info.get("depends") ?? []).flatMap((d) => d.split(",")).filter((d) => d !== "");
    for (const sd of info.get("softdep") ?? []) {
      const pre = /pre:\s*([^:]*?)(?:\s+post:|$)/.exec(sd)?.[1] ?? "";
      deps.push(...pre.split(/\s+/).filter((d) => d !== "" && index.has(modName(d))));
    }
    for (const d of deps) await visit(modName(d), [...chain, name]);
    state.set(name, "done");
    order.push(name);
  };
  for (const r of roots) await visit(r, []);
  return { order, files };
}

async function sourceText(): Promise<string> {
  return readFile(fileURLToPath(import.meta.url), "utf8");
}

/** The v86 package's release wasm, resolved from this package's dependencies. */
function v86Wasm(): string {
  return createRequire(import.meta.url).resolve("v86/build/v86.wasm");
}

function toFixture(dir: string, m: Manifest): Fixture {
  return {
    dir,
    kernel: join(dir, m.files.kernel),
    bios: join(dir, m.files.bios),
    vgaBios: join(dir, m.files.vgaBios),
    initramfs: join(dir, m.files.initramfs),
    wasm: v86Wasm(),
    kernelVersion: m.kernelVersion,
    modules: m.modules,
    key: m.key,
    packages: m.packages,
  };
}

async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as Manifest;
  } catch {
    return undefined;
  }
}

/** The fixture cache root: `$PVKIT_V86_CACHE`, else `<repo>/.fixtures-cache/v86`. */
export async function fixtureCacheDir(): Promise<string> {
  const env = process.env.PVKIT_V86_CACHE;
  return env !== undefined && env !== ""
    ? resolve(env)
    : join(await repoRoot(), ".fixtures-cache", "v86");
}

/**
 * Returns the cached fixture for the current Debian package versions, building it first if
 * needed. Safe to call from several processes at once: one builds under a lock directory
 * (`<cache>/<key>.lock`, considered stale after 10 minutes) into a temporary directory and
 * renames it into place; the others wait for `manifest.json`.
 *
 * Needs apt with the i386 architecture (added automatically when running as root) and
 * network access to the Debian archive on a cold cache.
 *
 * @returns absolute paths to the kernel, firmware, initramfs and wasm, plus the module order
 * @throws Error when apt cannot resolve or download the packages, or a module is missing
 */
export async function ensureFixture(): Promise<Fixture> {
  const cache = await fixtureCacheDir();
  const { packages, kernelVersion } = await resolvePackages();
  const key = createHash("sha256")
    .update(JSON.stringify({ packages, roots: MODULE_ROOTS, optional: OPTIONAL_ROOTS }))
    .update("\0")
    .update(await sourceText())
    .update("\0")
    .update(INIT_SCRIPT)
    .digest("hex");
  const dir = join(cache, key);
  const lock = `${dir}.lock`;
  await mkdir(cache, { recursive: true });
  for (;;) {
    const done = await readManifest(dir);
    if (done !== undefined) return toFixture(dir, done);
    try {
      await mkdir(lock);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > LOCK_STALE_MS) await rmdir(lock).catch(() => undefined);
      else await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
      continue;
    }
    try {
      const again = await readManifest(dir);
      if (again !== undefined) return toFixture(dir, again);
      await build(cache, dir, key, packages, kernelVersion);
    } finally {
      await rmdir(lock).catch(() => undefined);
    }
  }
}

async function build(
  cache: string,
  dir: string,
  key: string,
  packages: readonly ResolvedPackage[],
  kernelVersion: string,
): Promise<void> {
  const t0 = performance.now();
  // .debs are kept across keys: apt-get download skips files already present and verified.
  const debs = join(cache, "debs");
  await mkdir(debs, { recursive: true });
  await chmod(debs, 0o777); // apt drops to the _apt user when run as root
  const specs = packages.map((p) => `${p.name}=${p.version}`);
  await sh("apt-get", [...aptOptions(), "download", "-q", ...specs], debs);
  const work = await mkdtemp(join(tmpdir(), "pvkit-v86-fixture-"));
  const out = `${dir}.tmp-${process.pid}`;
  try {
    const root = join(work, "root");
    await mkdir(root);
    const debNames = await readdir(debs);
    for (const p of packages) {
      const base = bareName(p.name);
      const file = debNames.find(
        (f) => f.startsWith(`${base}_`) && f.includes(`_${p.version.replace(":", "%3a")}_`),
      );
      if (file === undefined)
        throw new Error(`fixture: apt-get download left no .deb for ${p.name}`);
      await sh("dpkg-deb", ["-x", join(debs, file), root]);
    }

    const modDir = join(root, "lib", "modules", kernelVersion);
    const index = await indexModules(join(modDir, "kernel"));
    const roots = [...OPTIONAL_ROOTS.filter((r) => index.has(r)), ...MODULE_ROOTS];
    const { order, files } = await moduleOrder(index, roots);

    const dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp"];
    dirs.push("etc", "lib", "lib/modules", "mnt", "pvkit");
    const entries: CpioEntry[] = dirs.map((d) => ({
      name: d,
      mode: CpioMode.DIR | (d === "tmp" ? 0o1777 : 0o755),
    }));
    entries.push(
      { name: "dev/console", mode: CpioMode.CHAR | 0o600, rdevMajor: 5, rdevMinor: 1 },
      { name: "dev/null", mode: CpioMode.CHAR | 0o666, rdevMajor: 1, rdevMinor: 3 },
      { name: "dev/ttyS0", mode: CpioMode.CHAR | 0o660, rdevMajor: 4, rdevMinor: 64 },
      {
        name: "bin/busybox",
        mode: CpioMode.FILE | 0o755,
        data: new Uint8Array(await readFile(join(root, "bin", "busybox"))),
      },
    );
    for (const m of order) {
      entries.push({
        name: `lib/modules/${m}.ko`,
        mode: CpioMode.FILE | 0o644,
        data: files.get(m)!,
      });
    }
    entries.push(
      { name: "etc/modules", mode: CpioMode.FILE | 0o644, data: `${order.join("\n")}\n` },
      { name: "init", mode: CpioMode.FILE | 0o755, data: INIT_SCRIPT },
    );
    const cpio = cpioNewc(entries);
    const gz = gzipSync(cpio, { level: 6 });

    await rm(out, { recursive: true, force: true });
    await mkdir(out, { recursive: true });
    const vmlinuz = (await readdir(join(root, "boot"))).find((f) => f.startsWith("vmlinuz-"));
    if (vmlinuz === undefined)
      throw new Error("fixture: the kernel package has no /boot/vmlinuz-*");
    await copyFile(join(root, "boot", vmlinuz), join(out, "bzImage"));
    await copyFile(join(root, "usr/share/seabios/bios.bin"), join(out, "bios.bin"));
    await copyFile(
      join(root, "usr/share/seabios/vgabios-stdvga.bin"),
      join(out, "vgabios-stdvga.bin"),
    );
    await writeFile(join(out, "initramfs.cpio.gz"), gz);
    const manifest: Manifest = {
      format: 1,
      key,
      kernelVersion,
      modules: order,
      packages: [...packages],
      files: {
        kernel: "bzImage",
        bios: "bios.bin",
        vgaBios: "vgabios-stdvga.bin",
        initramfs: "initramfs.cpio.gz",
      },
      sizes: { initramfsCpio: cpio.length, initramfsGz: gz.length },
      buildMs: Math.round(performance.now() - t0),
    };
    // manifest.json last: its presence marks a complete fixture.
    await writeFile(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(out, dir);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
}
