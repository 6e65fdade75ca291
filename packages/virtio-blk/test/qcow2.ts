/**
 * Helpers of the qcow2 tests: running Debian's qemu-img / qemu-io and reading what they
 * see, so pvkit's images are judged by QEMU's own tools.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** Runs qemu-img with `args`; its stdout. Throws with stderr when it fails. */
export function qemuImg(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs qemu-io on `image` with the `-c` commands; exit status and output. */
export function qemuIo(image: string, commands: string[], format = "qcow2") {
  const args = ["-f", format];
  for (const c of commands) args.push("-c", c);
  args.push(image);
  const r = spawnSync("qemu-io", args, { encoding: "utf8" });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

/**
 * `qemu-img check` of an image: its exit status (0 clean, 1 check failed, 2
 * corruptions, 3 leaks only) and output.
 */
export function qemuCheck(image: string, repair?: "leaks" | "all") {
  const args = ["check", "-f", "qcow2"];
  if (repair !== undefined) args.push("-r", repair);
  args.push(image);
  const r = spawnSync("qemu-img", args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** `qemu-img compare` of a qcow2 image with a raw file; exit status 0 means identical. */
export function qemuCompare(image: string, raw: string) {
  const r = spawnSync("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, raw], {
    encoding: "utf8",
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The guest-visible contents of any image, as QEMU reads them (`qemu-img convert -O raw`). */
export function qemuContents(image: string, scratch: string): Uint8Array {
  qemuImg("convert", "-O", "raw", image, scratch);
  return new Uint8Array(readFileSync(scratch));
}

/** Data that deflates well but is not trivial: text lines with a counter. */
export function compressible(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const enc = new TextEncoder();
  let at = 0;
  for (let i = 0; at < length; i++) {
    const line = enc.encode(`pvkit qcow2 line ${seed}:${i} ${"abcdefgh".repeat(i % 7)}\n`);
    out.set(line.subarray(0, Math.min(line.length, length - at)), at);
    at += line.length;
  }
  return out;
}
