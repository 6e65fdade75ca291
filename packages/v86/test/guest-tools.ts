/**
 * Programs the v86 guest runs that busybox lacks, built from C sources in `guest-tools/`
 * with the host's gcc: freestanding i386 executables (raw system calls, no libc, so no
 * 32-bit libraries are needed on the host or in the guest). Each build is cached under the
 * fixture cache, keyed by the source and the compiler flags.
 *
 * @module
 */

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fixtureCacheDir } from "./fixture.js";

const run = promisify(execFile);

/** The guest tools, by name (`guest-tools/<name>.c`). */
export type GuestToolName = "randio";

/** gcc flags: a static, libc-free i386 executable that calls no compiler run-time helper. */
export const GUEST_TOOL_CFLAGS: readonly string[] = [
  "-m32",
  "-static",
  "-nostdlib",
  "-ffreestanding",
  "-fno-builtin",
  "-fno-tree-loop-distribute-patterns",
  "-fno-pie",
  "-no-pie",
  "-fno-stack-protector",
  "-fno-asynchronous-unwind-tables",
  "-Os",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-s",
];

/**
 * The executable of guest tool `name`, compiled on first use (needs `gcc`, which
 * `pnpm test`'s provisioning installs).
 *
 * @throws Error naming gcc's complaint when the build fails
 */
export async function guestTool(name: GuestToolName): Promise<Uint8Array> {
  const source = join(dirname(fileURLToPath(import.meta.url)), "guest-tools", `${name}.c`);
  const text = await readFile(source);
  const key = createHash("sha256")
    .update(text)
    .update(GUEST_TOOL_CFLAGS.join(" "))
    .digest("hex")
    .slice(0, 16);
  const out = join(await fixtureCacheDir(), "tools", `${name}-${key}`);
  try {
    return new Uint8Array(await readFile(out));
  } catch {
    // Not built yet.
  }
  await mkdir(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    await run("gcc", [...GUEST_TOOL_CFLAGS, "-o", tmp, source]);
    await rename(tmp, out);
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    throw new Error(`guest tool ${name}: gcc failed: ${err.stderr?.trim() || err.message}`);
  } finally {
    await rm(tmp, { force: true });
  }
  return new Uint8Array(await readFile(out));
}
