/**
 * Fuzz target `sab-cross-thread`: the threaded runtime's SharedArrayBuffer path. The
 * virtio-net device runs in this thread behind virtio-mmio on a `Bus`; its driver runs in
 * a worker and reaches the registers through the trap channel (`runTrapWorker`, every
 * access a synchronous cross-thread exit); the rings and buffers live in shared guest RAM.
 * A third thread — another guest vCPU gone bad — scribbles on both rings while they are
 * in use (virtio 1.2 §2.7: the device must survive any ring contents, §2.7.13 / DESIGN.md
 * "A hostile guest": a protocol error or DEVICE_NEEDS_RESET, never an exception).
 *
 * Invariants: no exception escapes (the trap server and the bus count none), nothing is
 * written outside guest memory or outside the buffers any descriptor could have made
 * writable (guarded, canaried memory; see `sab-protocol.ts` for why that set is closed),
 * the case ends within its budget (no hang), the device ends live or in NEEDS_RESET, a
 * run without scribbles loses nothing (every frame sent comes back intact), and after a
 * reset a fresh driver is served.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import { Bus, IrqLine, LoopbackBackend } from "@pvkit/platform";
import { runTrapWorker } from "@pvkit/platform/node";
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MMIO_WINDOW,
  VirtioMmio,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
} from "@pvkit/virtio-core";
import { type MemoryRange, MockSplitQueue } from "@pvkit/virtio-core/testing";
import { VirtioNetDevice, type VirtioNetOptions } from "@pvkit/virtio-net";
import * as fc from "fast-check";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import {
  expectNoBusFaults,
  expectServesAfterReset,
  GuardedMemory,
  noThrow,
  noThrowAsync,
} from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";
import {
  CTL_SCRIBBLES,
  CTL_STOP,
  CTL_WORDS,
  OP_READ,
  OP_WRITE,
  RX_AREA,
  RX_RING,
  SAB_MEM,
  SAB_MMIO_BASE,
  SAB_QSIZE,
  type SabDriverReport,
  type SabWorkerCase,
  SCRATCH,
  SLOT_USE,
  slotBases,
  TX_AREA,
  TX_RING,
  ZONE_AREA,
} from "./sab-protocol.js";

/** A `sab-cross-thread` case. */
export interface SabCase {
  readonly seed: number;
  readonly frames: number;
  /** Scribbles at most (0: a clean run, where nothing may be lost). */
  readonly scribbles: number;
  /** Bit 0 descriptors, bit 1 avail ring, bit 2 used ring. */
  readonly parts: number;
  readonly mrg: boolean;
}

/** The generator of `sab-cross-thread` cases. */
export const sabCrossThreadArbitrary: fc.Arbitrary<SabCase> = fc.record({
  seed: fc.integer(),
  frames: fc.integer({ min: 1, max: 48 }),
  scribbles: fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 400 }) },
  ),
  parts: fc.integer({ min: 1, max: 7 }),
  mrg: fc.boolean(),
});

let bundled: string | null = null;
/** The worker bundle, built once per process. */
function workerFile(): string {
  bundled ??= bundleWorker(new URL("./sab-guest-worker.ts", import.meta.url));
  return bundled;
}

/** Options of {@link makeSabCrossThreadTarget} (tests use them to prove the checks can fail). */
export interface SabCrossThreadOptions {
  /** Builds the device (default `new VirtioNetDevice(options)`). */
  readonly device?: (options: VirtioNetOptions) => VirtioNetDevice;
  /** The whole case's budget in ms before it counts as a hang (default 20 000). */
  readonly budgetMs?: number;
}

/** Builds the `sab-cross-thread` target. */
export function makeSabCrossThreadTarget(options: SabCrossThreadOptions = {}): FuzzTarget<SabCase> {
  return {
    name: "sab-cross-thread",
    description:
      "virtio-net device in the host thread, its driver in a worker over the trap channel and SharedArrayBuffer rings, a third thread scribbling on the rings",
    kind: "other",
    arbitrary: sabCrossThreadArbitrary,
    run: (c) => runSab(c, options),
  };
}

/** The `sab-cross-thread` target. */
export const sabCrossThreadTarget: FuzzTarget<SabCase> = makeSabCrossThreadTarget();

/** Everything a descriptor can point at (see `sab-protocol.ts`): the device may write there. */
function writableRanges(): MemoryRange[] {
  const keep: MemoryRange[] = [];
  for (const base of [RX_RING, TX_RING]) {
    const l = MockSplitQueue.layout(SAB_QSIZE, base);
    keep.push({ addr: l.desc, len: l.end - l.desc });
  }
  for (const area of [RX_AREA, TX_AREA, ZONE_AREA]) {
    for (const b of slotBases(area)) keep.push({ addr: b, len: SLOT_USE });
  }
  return keep;
}

async function runSab(c: SabCase, options: SabCrossThreadOptions): Promise<void> {
  const file = workerFile();
  const gm = new GuardedMemory(SAB_MEM, { shared: true });
  const memory = gm.memory;
  const backend = new LoopbackBackend(); // reflect: what the guest sends comes back to it
  const devOpts: VirtioNetOptions = {
    backend,
    queueSize: SAB_QSIZE,
    ctrlVq: false,
    indirectDesc: false,
  };
  const device = noThrow("constructing the device", () =>
    options.device ? options.device(devOpts) : new VirtioNetDevice(devOpts),
  );
  const irq = new IrqLine("sab-virtio-net");
  const bus = new Bus();
  bus.map(
    "mmio",
    SAB_MMIO_BASE,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device, memory, irq }),
    "virtio-mmio",
  );
  gm.arm(writableRanges());
  const control = new SharedArrayBuffer(4 * CTL_WORDS);
  const ctl = new Int32Array(control);
  const sab = gm.host.buffer as SharedArrayBuffer;
  const base: Omit<SabWorkerCase, "role"> = {
    guard: gm.guard,
    memory: sab,
    control,
    seed: c.seed,
    frames: c.frames,
    scribbles: c.scribbles,
    parts: c.parts,
    mrg: c.mrg,
  };
  const scrib = new Worker(file, {
    workerData: { ...base, role: "scribbler" } satisfies SabWorkerCase,
  });
  let scribError: string | null = null;
  scrib.on("error", (e) => {
    scribError = String(e);
  });
  const scribExit = new Promise<void>((resolve) => scrib.once("exit", () => resolve()));
  let report: SabDriverReport | null = null;
  const budgetMs = options.budgetMs ?? 20_000;
  const result = await noThrowAsync("the trap-channel run", () =>
    runTrapWorker({
      script: file,
      workerData: { ...base, role: "driver" } satisfies SabWorkerCase,
      handler: (op, args) => {
        if (op === OP_READ) return bus.read("mmio", args[0]!, args[1]! as 1 | 2 | 4);
        if (op === OP_WRITE) bus.write("mmio", args[0]!, args[1]! as 1 | 2 | 4, args[2]!);
        return 0;
      },
      stallMs: Math.min(5000, budgetMs),
      budgetMs,
      onMessage: (m) => {
        report = m as SabDriverReport;
      },
    }),
  ).finally(async () => {
    Atomics.store(ctl, CTL_STOP, 1);
    const late = await Promise.race([
      scribExit.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), 5000)),
    ]);
    if (late) await scrib.terminate();
  });
  if (result.outcome === "budget" || result.outcome === "stalled") {
    throw new FuzzFinding(
      "hang",
      `the driver thread did not finish: ${result.error?.message ?? result.outcome}`,
    );
  }
  if (result.outcome !== "exited" || scribError !== null) {
    throw new FuzzFinding(
      "escaped-exception",
      `a guest thread failed: ${result.error?.message ?? ""} ${scribError ?? ""}`.trim(),
    );
  }
  if (result.faults !== 0) {
    throw new FuzzFinding(
      "contained-fault",
      `the trap server caught ${result.faults} host exception(s)`,
    );
  }
  expectNoBusFaults(bus, "concurrent phase");
  gm.check("concurrent phase");
  const r = report as SabDriverReport | null;
  if (r === null) throw new FuzzFinding("model", "the driver thread sent no report");
  const status = noThrow("status read", () =>
    bus.read("mmio", SAB_MMIO_BASE + VirtioMmio.STATUS, 4),
  );
  if ((status & VIRTIO_CONFIG_S_NEEDS_RESET) === 0 && (status & VIRTIO_CONFIG_S_DRIVER_OK) === 0) {
    throw new FuzzFinding(
      "model",
      `the device is neither live nor in NEEDS_RESET (status 0x${status.toString(16)})`,
    );
  }
  if (Atomics.load(ctl, CTL_SCRIBBLES) === 0) {
    // Nobody scribbled: every frame sent comes back, intact, and the device is live.
    if (r.needsReset || r.sent !== c.frames || r.received !== c.frames || r.corrupt !== 0) {
      throw new FuzzFinding(
        "lost-ack",
        `clean run: sent ${r.sent}/${c.frames}, received ${r.received}, corrupt ${r.corrupt}, status 0x${r.status.toString(16)}`,
      );
    }
  }
  // Serves after reset: a fresh real driver in this thread, scratch memory of its own.
  const transport = VirtioMmioDriverTransport.probe(bus, SAB_MMIO_BASE);
  if (!(transport instanceof VirtioMmioDriverTransport)) {
    throw new FuzzFinding("serve-after-reset", `probe failed: ${transport.message}`);
  }
  await expectServesAfterReset(
    { transport, memory, scratch: SCRATCH },
    { kind: "net" },
    "sab-cross-thread",
  );
  expectNoBusFaults(bus, "after reset");
}
