/**
 * Boots the fixture's Linux guest in v86 under Node and collects what the guest printed on
 * its serial console. Node-only test and bench infrastructure.
 *
 * The guest's `/init` (`INIT_SCRIPT` in `fixture.ts`) prints `PVKIT-READY` after loading its
 * modules, runs `/pvkit/test.sh` and prints `PVKIT-EXIT <status>`. The script reaches the
 * guest as a second, uncompressed newc cpio appended to the initrd: the kernel unpacks
 * concatenated archives into the same rootfs (Documentation/driver-api/early-userspace/
 * buffer-format.rst). An uncompressed archive is only recognised at a 4-byte-aligned offset
 * (init/initramfs.c, `unpack_to_rootfs`), so every part is padded to a multiple of 4 bytes.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { gunzipSync } from "node:zlib";
import type { V86Options } from "v86";
import { V86 } from "v86/build/libv86-debug.mjs";
import { type CpioEntry, CpioMode, cpioNewc } from "../src/cpio.js";
import type { Fixture } from "./fixture.js";

/** The base kernel command line of every boot. */
export const BASE_CMDLINE =
  "console=ttyS0 rdinit=/init tsc=reliable mitigations=off random.trust_cpu=on";

/**
 * Added by {@link BootOptions.fastBoot}: `cryptomgr.notests` skips the crypto self-tests
 * `crypto_algapi_init` runs at boot (about 4 s of guest time in v86), `noisapnp` skips ISA
 * Plug and Play probing (about 0.4 s; v86 has no ISAPnP cards). Neither changes a device the
 * tests use (Documentation/admin-guide/kernel-parameters.txt).
 */
export const FAST_BOOT_ARGS = "cryptomgr.notests noisapnp";

/** Options of {@link bootLinux}. */
export interface BootOptions {
  /** The guest to boot (from `ensureFixture`). */
  readonly fixture: Fixture;
  /** Text of `/pvkit/test.sh`, run by `sh` after the modules are loaded; omit to run none. */
  readonly script?: string;
  /**
   * Executables the script uses, put in `/pvkit/` next to it (for example
   * `{ randio: await guestTool("randio") }` from `guest-tools.ts`).
   */
  readonly tools?: Readonly<Record<string, Uint8Array>>;
  /**
   * An uncompressed cpio placed in front of the initramfs: the "early cpio" the kernel scans
   * before unpacking, e.g. `kernel/firmware/acpi/*.aml` for ACPI table upgrade
   * (Documentation/admin-guide/acpi/initrd_table_override.rst).
   */
  readonly initrdPrefix?: Uint8Array;
  /** Let SeaBIOS build ACPI tables (v86 `acpi`); adds `acpiphp.disable=1` to the command line. */
  readonly acpi?: boolean;
  /** Add {@link FAST_BOOT_ARGS} to the command line. Default true. */
  readonly fastBoot?: boolean;
  /**
   * Pass the fixture's initramfs gzip-compressed, as stored. Default false: the harness
   * inflates it first, because inflating in the guest costs about 4 s of emulated time.
   */
  readonly compressedInitrd?: boolean;
  /** Appended to the kernel command line. */
  readonly cmdlineExtra?: string;
  /** Guest RAM in MiB, at least 128 (v86 loads the initrd at 64 MiB). Default 128. */
  readonly memoryMiB?: number;
  /** A disk image for v86's own IDE controller (primary master), for comparisons. */
  readonly hda?: ArrayBuffer;
  /**
   * Called in the `emulator-loaded` event, before `emulator.run()`: the place to attach
   * devices. The boot waits for a returned promise.
   */
  readonly onLoaded?: (emulator: V86) => void | Promise<void>;
  /** Rejects when the guest has not printed `PVKIT-EXIT` by then. Default 240 000 ms. */
  readonly timeoutMs?: number;
  /** Called with each complete console line (without the line ending). */
  readonly onSerialLine?: (line: string) => void;
  /** Extra v86 options, applied last (e.g. `disable_jit`, another `wasm_path`). */
  readonly v86Options?: Partial<V86Options>;
}

/** Host wall-clock times in milliseconds (`performance.now()`), from `emulator.run()` unless noted. */
export interface BootTimings {
  /** From {@link bootLinux} being called to the `emulator-loaded` event (wasm and file loading). */
  readonly loadMs: number;
  /** The kernel's `Linux version …` banner line. */
  readonly bannerMs: number | undefined;
  /** The kernel's `Run /init as init process` line. */
  readonly initMs: number | undefined;
  /** `PVKIT-READY`: modules loaded. */
  readonly readyMs: number | undefined;
  /** `PVKIT-EXIT`: the test script finished. */
  readonly exitMs: number;
  /** From {@link bootLinux} being called to the emulator being destroyed. */
  readonly wallMs: number;
}

/** What a boot printed and how long it took. */
export interface BootResult {
  /** Everything the serial console printed, `\r` removed. */
  readonly console: string;
  /** The console lines between `PVKIT-READY` and `PVKIT-EXIT`, kernel log lines included. */
  readonly scriptOutput: string;
  /** The same lines without kernel log lines (those starting with a `[ seconds]` stamp). */
  readonly scriptLines: readonly string[];
  /** The script's exit status; `null` when no script was supplied (`PVKIT-EXIT none`). */
  readonly exitStatus: number | null;
  /** Modules `/init` failed to load (`PVKIT-INSMOD-FAIL <name>` lines). */
  readonly insmodFailures: readonly string[];
  /** Kernel log lines that look like trouble (WARNING, BUG, Oops, Call Trace, taint). */
  readonly kernelWarnings: readonly string[];
  /** The kernel command line used. */
  readonly cmdline: string;
  /**
   * Guest instructions executed when `PVKIT-EXIT` arrived (v86's 32-bit counter, sampled
   * often enough to count its wraps).
   */
  readonly instructions: number;
  /** Host times of the boot milestones. */
  readonly timings: BootTimings;
}

const KLOG = /^\[\s*\d+\.\d+\] /;
const TROUBLE = /\b(WARNING:|BUG:|Oops|Call Trace|Tainted:|Kernel panic|general protection)/;
const DESTROY_TIMEOUT_MS = 10_000;

/** `bytes` followed by zeros up to a multiple of 4 bytes. */
function pad4(bytes: Uint8Array): Uint8Array {
  const rem = bytes.length % 4;
  if (rem === 0) return bytes;
  const out = new Uint8Array(bytes.length + 4 - rem);
  out.set(bytes);
  return out;
}

function concat(parts: readonly Uint8Array[]): ArrayBuffer {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.buffer;
}

/** A file's contents in a fresh ArrayBuffer (v86 keeps the buffers it is given). */
async function load(path: string): Promise<ArrayBuffer> {
  const b = await readFile(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/**
 * The initrd of one boot: `prefix` (uncompressed early cpio), the main initramfs (a cpio,
 * compressed or not), and an uncompressed cpio holding `pvkit/test.sh` and the `tools`
 * (`pvkit/<name>`, executable), each padded to 4 bytes.
 *
 * @param initramfs - the main archive (the fixture's initramfs, inflated or as stored)
 * @param script - the test script, or undefined for none
 * @param prefix - an early cpio to put first
 * @param tools - executables for the script, by file name
 */
export function assembleInitrd(
  initramfs: Uint8Array,
  script?: string,
  prefix?: Uint8Array,
  tools: Readonly<Record<string, Uint8Array>> = {},
): ArrayBuffer {
  const parts: Uint8Array[] = [];
  if (prefix !== undefined) parts.push(pad4(prefix));
  parts.push(pad4(initramfs));
  const files: CpioEntry[] = Object.entries(tools).map(([name, data]) => ({
    name: `pvkit/${name}`,
    mode: CpioMode.FILE | 0o755,
    data,
  }));
  if (script !== undefined)
    files.push({ name: "pvkit/test.sh", mode: CpioMode.FILE | 0o755, data: script });
  if (files.length > 0) parts.push(cpioNewc(files));
  return concat(parts);
}

/**
 * Boots the fixture's kernel and initramfs in v86 and waits for the init script to report
 * `PVKIT-EXIT`, then destroys the emulator (v86 leaves no timers behind, so the process can
 * exit).
 *
 * @param options - the guest, the test script and the machine configuration
 * @returns the console output, the script's lines and exit status, and boot timings
 * @throws Error on a timeout or a kernel panic, with the last 3000 console characters
 */
export async function bootLinux(options: BootOptions): Promise<BootResult> {
  const t0 = performance.now();
  const { fixture } = options;
  const memoryMiB = options.memoryMiB ?? 128;
  if (memoryMiB < 128) {
    throw new Error(`bootLinux: memoryMiB must be at least 128 (the initrd goes at 64 MiB)`);
  }
  const timeoutMs = options.timeoutMs ?? 240_000;
  const cmdline =
    options.v86Options?.cmdline ??
    [
      BASE_CMDLINE,
      options.fastBoot === false ? "" : FAST_BOOT_ARGS,
      options.acpi ? "acpiphp.disable=1" : "",
      options.cmdlineExtra ?? "",
    ]
      .filter((s) => s !== "")
      .join(" ");
  const [bios, vgaBios, kernel, initramfs] = await Promise.all([
    load(fixture.bios),
    load(fixture.vgaBios),
    load(fixture.kernel),
    readFile(fixture.initramfs),
  ]);
  const main = options.compressedInitrd ? initramfs : gunzipSync(initramfs);
  const initrd = assembleInitrd(main, options.script, options.initrdPrefix, options.tools);

  const lines: string[] = [];
  let partial: number[] = [];
  const decoder = new TextDecoder();
  const marks: { banner?: number; init?: number; ready?: number; exit?: number } = {};
  let tRun = 0;
  let loadMs = 0;
  let exitStatus: number | null = null;
  let instructions = 0;

  const emulator = new V86({
    wasm_path: fixture.wasm,
    memory_size: memoryMiB * 1024 * 1024,
    bios: { buffer: bios },
    vga_bios: { buffer: vgaBios },
    bzimage: { buffer: kernel },
    initrd: { buffer: initrd },
    cmdline,
    acpi: options.acpi ?? false,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    log_level: 0,
    ...(options.hda === undefined ? {} : { hda: { buffer: options.hda } }),
    ...options.v86Options,
  });

  // v86's instruction counter is a Uint32 that wraps every ~4.3e9 instructions (a boot
  // needs ~3e9): sample it twice a second and count the wraps.
  let counterHigh = 0;
  let counterLast = 0;
  const counter = (): number => {
    const c = emulator.get_instruction_counter();
    if (c < counterLast) counterHigh += 2 ** 32;
    counterLast = c;
    return counterHigh + c;
  };
  const sampler = setInterval(counter, 500);

  const tail = (): string => {
    const text = [...lines, decoder.decode(new Uint8Array(partial))].join("\n");
    return text.slice(-3000);
  };

  try {
    await new Promise<void>((resolvePromise, rejectPromise) => {
      const timer = setTimeout(() => {
        rejectPromise(
          new Error(`bootLinux: no PVKIT-EXIT after ${timeoutMs} ms; console tail:\n${tail()}`),
        );
      }, timeoutMs);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        if (err === undefined) resolvePromise();
        else rejectPromise(err);
      };
      const onLine = (line: string): void => {
        lines.push(line);
        const now = performance.now() - tRun;
        // Markers are matched anywhere in a line: a kernel message can land mid-line.
        if (marks.banner === undefined && line.includes("Linux version ")) marks.banner = now;
        if (marks.init === undefined && line.includes("Run /init as init process")) {
          marks.init = now;
        }
        if (marks.ready === undefined && line.includes("PVKIT-READY")) marks.ready = now;
        try {
          options.onSerialLine?.(line);
        } catch (e) {
          finish(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        if (line.includes("Kernel panic - not syncing")) {
          finish(new Error(`bootLinux: kernel panic; console tail:\n${tail()}`));
          return;
        }
        const exit = /PVKIT-EXIT (\d+|none)\b/.exec(line);
        if (exit?.[1] !== undefined && marks.exit === undefined) {
          marks.exit = now;
          exitStatus = exit[1] === "none" ? null : Number(exit[1]);
          instructions = counter();
          finish();
        }
      };
      emulator.add_listener("serial0-output-byte", (byte: number) => {
        if (byte === 0x0a) {
          const line = decoder.decode(new Uint8Array(partial)).replace(/\r+$/, "");
          partial = [];
          onLine(line);
        } else {
          partial.push(byte);
        }
      });
      emulator.add_listener("emulator-loaded", () => {
        loadMs = performance.now() - t0;
        Promise.resolve()
          .then(() => options.onLoaded?.(emulator))
          .then(() => {
            tRun = performance.now();
            return emulator.run();
          })
          .catch((e: unknown) => finish(e instanceof Error ? e : new Error(String(e))));
      });
    });
  } finally {
    clearInterval(sampler);
    await destroy(emulator);
  }

  const ready = lines.findIndex((l) => l.includes("PVKIT-READY"));
  const exitAt = lines.findIndex((l) => /PVKIT-EXIT (\d+|none)\b/.test(l));
  const between = ready >= 0 && exitAt > ready ? lines.slice(ready + 1, exitAt) : [];
  return {
    console: lines.join("\n"),
    scriptOutput: between.join("\n"),
    scriptLines: between.filter((l) => !KLOG.test(l)),
    exitStatus,
    insmodFailures: lines.flatMap((l) => /PVKIT-INSMOD-FAIL (\S+)/.exec(l)?.[1] ?? []),
    kernelWarnings: lines.filter((l) => TROUBLE.test(l)),
    cmdline,
    instructions,
    timings: {
      loadMs,
      bannerMs: marks.banner,
      initMs: marks.init,
      readyMs: marks.ready,
      exitMs: marks.exit ?? Number.NaN,
      wallMs: performance.now() - t0,
    },
  };
}

/** Stops and frees the emulator, giving up (without throwing) after 10 s. */
async function destroy(emulator: V86): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    emulator.destroy().catch(() => undefined),
    new Promise<void>((r) => {
      timer = setTimeout(r, DESTROY_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
}

/** Prints a boot's timings (seconds from `emulator.run()`) and instruction count on one line. */
export function logTimings(name: string, r: BootResult): void {
  const s = (ms: number | undefined): string => (ms === undefined ? "-" : (ms / 1000).toFixed(1));
  const t = r.timings;
  console.log(
    `${name}: banner ${s(t.bannerMs)} s, /init ${s(t.initMs)} s, ready ${s(t.readyMs)} s, ` +
      `exit ${s(t.exitMs)} s, wall ${s(t.wallMs)} s, ${(r.instructions / 1e9).toFixed(2)}e9 instructions`,
  );
}
