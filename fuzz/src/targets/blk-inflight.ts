/**
 * Fuzz target `blk-inflight`: resets and status changes while virtio-blk requests are in
 * flight on the asynchronous back-ends `FileDisk` and `OverlayDisk` (over a `MemoryDisk`
 * base and a `FileDisk` top), with the real guest driver.
 *
 * A case interleaves writes, reads and flushes (issued without waiting) with event-loop
 * turns that let the files' I/O finish, device resets (§2.4), hostile status writes
 * (§2.1: FAILED, cleared bits, random values) and, when guest RAM is a growable
 * `WebAssembly.Memory` (as v86's is), growth of that memory, which detaches every view of
 * it. Each driver lifetime (an *epoch*) lives in its own slab of guest RAM. Checks:
 *
 * - after a reset, nothing of the old epoch is written: its slab (rings, headers, status
 *   bytes, bounce buffers) is overwritten with a pattern at the reset and must still hold
 *   it once every back-end operation has finished — a completion arriving after the reset
 *   neither writes guest memory nor acknowledges anything (no used element);
 * - no acknowledged write is lost: at the end a fresh driver reads the whole disk and
 *   every sector must hold a value a model allows — the last acknowledged write, or a
 *   write that was in flight or unacknowledged and not superseded (§5.2.6: requests in
 *   flight together may complete in any order);
 * - an acknowledged read returned a value the model allowed at that time;
 * - the device failed no request as a back-end error the back-end did not return;
 * - no exception escaped, the bus caught none, nothing outside the slabs changed.
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { threadId } from "node:worker_threads";
import {
  type BlockBackend,
  type BlockResult,
  MemoryDisk,
  OverlayDisk,
  VirtioBlkDevice,
  VirtioBlkDriver,
} from "@pvkit/virtio-blk";
import { FileDisk } from "@pvkit/virtio-blk/node";
import { DriverError, GuestAllocator, unbindVirtioDriver } from "@pvkit/virtio-core";
import { type MemoryRange, type TestGuest, testGuest } from "@pvkit/virtio-core/testing";
import * as fc from "fast-check";
import {
  expectModel,
  expectNoBusFaults,
  GuardedMemory,
  noThrow,
  pollUntil,
  tick,
} from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

const SECTORS = 64;
const DISK_BYTES = SECTORS * 512;
const SLAB_BASE = 0x1_0000;
const SLAB_BYTES = 0x4_0000;
const SLABS = 3;
const MEMORY_BYTES = SLAB_BASE + SLABS * SLAB_BYTES;
const DEAD = 0x5a;

/** One step of a `blk-inflight` case. */
export type InflightStep =
  | { readonly k: "write"; readonly sector: number; readonly n: number; readonly v: number }
  | { readonly k: "read"; readonly sector: number; readonly n: number }
  | { readonly k: "flush" }
  | { readonly k: "turns"; readonly n: number }
  | { readonly k: "reset" }
  | { readonly k: "status"; readonly value: number }
  | { readonly k: "grow" };

/** A `blk-inflight` case. */
export interface InflightCase {
  readonly backend: "file" | "overlay";
  readonly writeback: boolean;
  /** Guest RAM in a `WebAssembly.Memory` that `grow` steps grow (as v86's RAM grows). */
  readonly growable: boolean;
  readonly steps: readonly InflightStep[];
}

const stepArb: fc.Arbitrary<InflightStep> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant("write" as const),
      sector: fc.nat(SECTORS - 1),
      n: fc.integer({ min: 1, max: 4 }),
      v: fc.integer({ min: 1, max: 255 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("read" as const),
      sector: fc.nat(SECTORS - 1),
      n: fc.integer({ min: 1, max: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("flush" as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({ k: fc.constant("turns" as const), n: fc.integer({ min: 0, max: 6 }) }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("reset" as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("grow" as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("status" as const),
      value: fc.oneof(fc.constantFrom(0x80, 0x8f, 0x0b, 0x07, 0x40, 0x4f), fc.nat(0xff)),
    }),
  },
);

/** The `blk-inflight` case generator. */
export const inflightCaseArb: fc.Arbitrary<InflightCase> = fc.record({
  backend: fc.constantFrom("file" as const, "overlay" as const),
  writeback: fc.boolean(),
  growable: fc.boolean(),
  steps: fc.array(stepArb, { minLength: 1, maxLength: 16 }),
});

// ── back-end wrapper that counts operations in flight ─────────────────────────────

class Counting implements BlockBackend {
  inFlight = 0;
  /** Operations the back-end answered with an error. */
  failures = 0;
  constructor(readonly inner: BlockBackend) {}
  get byteLength(): number {
    return this.inner.byteLength;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  private wrap(r: BlockResult | Promise<BlockResult>): BlockResult | Promise<BlockResult> {
    if (!(r instanceof Promise)) return this.count(r);
    this.inFlight++;
    return r
      .finally(() => {
        this.inFlight--;
      })
      .then((v) => this.count(v));
  }
  private count(r: BlockResult): BlockResult {
    if (r !== undefined) this.failures++;
    return r;
  }
  readv(offset: number, buffers: readonly Uint8Array[]) {
    return this.wrap(this.inner.readv(offset, buffers));
  }
  writev(offset: number, buffers: readonly Uint8Array[]) {
    return this.wrap(this.inner.writev(offset, buffers));
  }
  flush() {
    return this.wrap(this.inner.flush());
  }
  discard(offset: number, length: number) {
    return this.wrap(this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, unmap: boolean) {
    return this.wrap(this.inner.writeZeroes(offset, length, unmap));
  }
  close() {
    return this.inner.close();
  }
}

// ── the rig (fresh per case) ──────────────────────────────────────────────────────

interface Rig {
  readonly backend: Counting;
  readonly device: VirtioBlkDevice;
  readonly guard: GuardedMemory;
  readonly guest: TestGuest;
}

let tmpDir: string | null = null;

function tmpFile(name: string): string {
  if (tmpDir === null) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `pvkit-fuzz-${process.pid}-${threadId}-`));
    const dir = tmpDir;
    process.on("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return path.join(tmpDir, name);
}

async function makeRig(c: InflightCase): Promise<Rig> {
  const { backend: kind, writeback } = c;
  let inner: BlockBackend;
  if (kind === "file") {
    inner = await FileDisk.open(tmpFile(`file-${writeback}.img`), { create: DISK_BYTES });
  } else {
    const base = new MemoryDisk(DISK_BYTES);
    for (let s = 0; s < SECTORS; s++) base.bytes.fill(s + 1, s * 512, s * 512 + 512);
    const top = await FileDisk.open(tmpFile(`top-${writeback}.img`), { create: DISK_BYTES });
    inner = new OverlayDisk(base, top, { clusterSize: 4096 });
  }
  const backend = new Counting(inner);
  const device = new VirtioBlkDevice({
    backend,
    queueSize: 16,
    flush: true,
    configWce: true,
    writeback,
  });
  const guard = new GuardedMemory(MEMORY_BYTES, { growable: c.growable });
  const guest = testGuest(device, { memory: guard.memory });
  return { backend, device, guard, guest };
}

// ── the model ──────────────────────────────────────────────────────────────────────

interface WriteRec {
  readonly v: number;
  readonly issued: number;
  acked: number | null;
}

/**
 * What the disk may hold: every write with the logical times it was issued and
 * acknowledged. Exported for the oracle's own tests.
 */
export class DiskModel {
  private clock = 0;
  private readonly writes: WriteRec[][];
  /** `initial`: the disk's contents before the case, one uniform value per sector. */
  constructor(private readonly initial: Uint8Array) {
    this.writes = Array.from({ length: initial.length / 512 }, () => []);
  }

  /**
   * Records a write of `values[i]` to sector `sector + i`, issued now; returns the
   * function to call when it is acknowledged.
   */
  beginWrite(sector: number, values: readonly number[]): () => void {
    const recs = values.map((v, i) => {
      const rec: WriteRec = { v, issued: ++this.clock, acked: null };
      this.writes[sector + i]!.push(rec);
      return rec;
    });
    return () => {
      const at = ++this.clock;
      for (const r of recs) r.acked = at;
    };
  }

  /**
   * Records a read of `n` sectors from `sector`, issued now; returns the check of its
   * result (one message per wrong sector). Requests in flight together may complete in
   * any order (§5.2.6), so a read may return any value the sector could hold at some
   * moment while the read was in flight: one allowed when it was issued, or one written
   * by a request issued before it completed.
   */
  beginRead(sector: number, n: number): (bytes: Uint8Array) => string[] {
    const issued = ++this.clock;
    const atIssue = Array.from({ length: n }, (_, i) => this.allowedInFlight(sector + i));
    return (bytes) => {
      const problems: string[] = [];
      for (let i = 0; i < n; i++) {
        const allowed = atIssue[i]!;
        const overlapping = this.writes[sector + i]!.filter(
          (w) => w.acked === null || w.issued > issued || w.acked > issued,
        );
        for (const w of overlapping) if (w.issued > issued) allowed.add(w.v);
        const problem = readProblem(bytes, i, allowed, overlapping.length > 0);
        if (problem !== null)
          problems.push(
            `a read of sector ${sector + i} returned ${problem}, allowed ${[...allowed].join(",")}`,
          );
      }
      return problems;
    };
  }

  /** Values sector `s` may hold now: not superseded by a write acknowledged later. */
  allowed(s: number): Set<number> {
    const ws = this.writes[s]!;
    const out = new Set<number>();
    for (const w of ws) {
      // Superseded: acknowledged before a later-issued write was acknowledged.
      const superseded = ws.some(
        (o) => o !== w && o.acked !== null && w.acked !== null && o.issued > w.acked,
      );
      if (!superseded) out.add(w.v);
    }
    if (!ws.some((w) => w.acked !== null)) out.add(this.initial[s * 512]!);
    return out;
  }

  /** {@link allowed}, plus the writes not yet acknowledged (they may land first). */
  private allowedInFlight(s: number): Set<number> {
    const out = this.allowed(s);
    for (const w of this.writes[s]!) if (w.acked === null) out.add(w.v);
    return out;
  }
}

/**
 * What is wrong with sector `s` of `bytes` as a read's result, or `null`: every byte must
 * be an allowed value, and the sector may mix values (a torn sector) only when a write to
 * it was in flight with the read — nothing orders or makes atomic two requests in flight
 * together (§5.2.6), as with concurrent `pread`/`pwrite` on the host.
 */
function readProblem(
  bytes: Uint8Array,
  s: number,
  allowed: ReadonlySet<number>,
  writeInFlight: boolean,
): string | null {
  const seen = new Set(bytes.subarray(s * 512, s * 512 + 512));
  for (const v of seen) if (!allowed.has(v)) return `${v}`;
  return seen.size === 1 || writeInFlight ? null : "a torn sector";
}

function sectorValue(bytes: Uint8Array, s: number): number | null {
  const v = bytes[s * 512]!;
  for (let i = s * 512; i < s * 512 + 512; i++) if (bytes[i] !== v) return null;
  return v;
}

// ── playing a case ────────────────────────────────────────────────────────────────

async function settle(rig: Rig, drv: VirtioBlkDriver | null): Promise<void> {
  // File I/O (and fsync) runs in libuv's thread pool: wait in real time, up to 5 s.
  const until = Date.now() + 5000;
  while (rig.backend.inFlight > 0 && Date.now() < until) {
    drv?.poll();
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  if (rig.backend.inFlight > 0)
    throw new FuzzFinding(
      "hang",
      `${rig.backend.inFlight} back-end operation(s) still in flight after 5 s`,
    );
  await tick();
  drv?.poll();
}

/** Plays one `blk-inflight` case. */
export async function runInflightCase(c: InflightCase): Promise<void> {
  // A fresh disk and device per case (a file open costs less than the case), so that a
  // case replays exactly.
  const rig = await makeRig(c);
  try {
    await playInflight(rig, c);
  } finally {
    await settle(rig, null).catch(() => {});
    await rig.backend.close();
  }
}

async function playInflight(rig: Rig, c: InflightCase): Promise<void> {
  const what = `blk on ${c.backend} (${c.writeback ? "writeback" : "writethrough"})`;
  const t = rig.guest.transport;
  rig.guest.bus.resetStats();
  const initial = new Uint8Array(DISK_BYTES);
  const r0 = await rig.backend.readv(0, [initial]);
  if (r0 !== undefined) throw new Error(`cannot read the disk image: ${r0}`);
  for (let s = 0; s < SECTORS; s++) {
    // Earlier cases may leave any value; make every sector uniform for the model.
    if (sectorValue(initial, s) === null) initial.fill(initial[s * 512]!, s * 512, s * 512 + 512);
  }
  const w0 = await rig.backend.writev(0, [initial]);
  if (w0 !== undefined) throw new Error(`cannot write the disk image: ${w0}`);
  const model = new DiskModel(initial);
  const slabs: MemoryRange[] = Array.from({ length: SLABS }, (_, i) => ({
    addr: SLAB_BASE + i * SLAB_BYTES,
    len: SLAB_BYTES,
  }));
  rig.guard.arm(slabs);
  const dead: MemoryRange[] = [];
  let epoch = 0;
  let drv: VirtioBlkDriver | null = null;
  const bind = (): VirtioBlkDriver => {
    const slab = slabs[epoch % SLABS]!;
    rig.guard.memory.fill(slab.addr, slab.len, 0);
    const d = noThrow(`${what}: VirtioBlkDriver.create`, () =>
      VirtioBlkDriver.create(t, {
        memory: rig.guard.memory,
        allocator: new GuestAllocator(slab.addr, slab.len),
        queueSize: 16,
      }),
    );
    if (d instanceof DriverError)
      throw new FuzzFinding(
        "serve-after-reset",
        `${what}: the driver could not bind after a reset: ${d.message}`,
      );
    return d;
  };
  const resetNow = (): void => {
    noThrow(`${what}: reset with requests in flight`, () => t.reset());
    unbindVirtioDriver(t);
    const slab = slabs[epoch % SLABS]!;
    rig.guard.memory.fill(slab.addr, slab.len, DEAD);
    dead.push(slab);
    epoch++;
    drv = null;
  };
  drv = bind();
  let resets = 0;
  const problems: string[] = [];
  for (const s of c.steps) {
    const d: VirtioBlkDriver | null = drv;
    switch (s.k) {
      case "write": {
        if (d === null) break;
        const n = Math.min(s.n, SECTORS - s.sector);
        const data = new Uint8Array(n * 512);
        const values: number[] = [];
        for (let i = 0; i < n; i++) {
          const v = (s.v + i * 17) & 0xff || 1;
          data.fill(v, i * 512, i * 512 + 512);
          values.push(v);
        }
        // Only the current driver is ever polled, so an acknowledgement always comes from a
        // poll in its own epoch (the promise reaction may run just after a reset).
        d.write(s.sector, data).then(model.beginWrite(s.sector, values), () => {});
        break;
      }
      case "read": {
        if (d === null) break;
        const n = Math.min(s.n, SECTORS - s.sector);
        const check = model.beginRead(s.sector, n);
        d.read(s.sector, n * 512).then(
          (bytes) => {
            problems.push(...check(bytes));
          },
          () => {},
        );
        break;
      }
      case "flush":
        if (d !== null)
          d.flush().then(
            () => {},
            () => {},
          );
        break;
      case "turns":
        for (let i = 0; i < s.n; i++) {
          await tick();
          d?.poll();
        }
        break;
      case "grow":
        rig.guard.grow(); // views taken before this step are detached now
        break;
      case "reset":
        if (resets >= SLABS - 1) break;
        resets++;
        resetNow();
        drv = bind();
        break;
      case "status":
        noThrow(`${what}: status write 0x${s.value.toString(16)}`, () => t.setStatus(s.value));
        if (s.value === 0) {
          if (resets >= SLABS - 1) {
            // Out of slabs: reset, then carry on with the same slab for the final check.
            unbindVirtioDriver(t);
            drv = null;
          } else {
            resets++;
            const slab = slabs[epoch % SLABS]!;
            unbindVirtioDriver(t);
            rig.guard.memory.fill(slab.addr, slab.len, DEAD);
            dead.push(slab);
            epoch++;
            drv = bind();
          }
        }
        break;
    }
  }
  // Let everything finish, then reset and check the old epoch stayed untouched.
  await settle(rig, drv);
  const last = drv as VirtioBlkDriver | null;
  if (last !== null) {
    // Writes that were acknowledged are in the model; everything else stays "maybe".
    await pollUntil(
      () => false,
      () => last.poll(),
      3,
    );
  }
  if (resets < SLABS - 1 || dead.length < SLABS) resetNow();
  else {
    noThrow(`${what}: final reset`, () => t.reset());
    unbindVirtioDriver(t);
  }
  await settle(rig, null);
  for (const slab of dead) {
    const bytes = rig.guard.memory.slice(slab.addr, slab.len) as Uint8Array;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== DEAD) {
        throw new FuzzFinding(
          "write-after-reset",
          `${what}: guest memory 0x${(slab.addr + i).toString(16)} of a driver that was reset was written afterwards (an asynchronous completion after reset, §2.4)`,
        );
      }
    }
  }
  expectModel(problems.length === 0, () => `${what}: ${problems.join("; ")}`);
  // A request the device failed as a back-end error must have had one: otherwise the
  // device lost it (e.g. a read whose guest buffers a growing WebAssembly.Memory had
  // detached), and the guest saw an I/O error the disk never made.
  const deviceFailures = Object.entries(rig.device.stats.errors)
    .filter(([code]) => code.startsWith("BACKEND_"))
    .reduce((n, [, k]) => n + (k ?? 0), 0);
  expectModel(
    deviceFailures === rig.backend.failures,
    () =>
      `${what}: the device reported ${deviceFailures} back-end error(s), the back-end returned ${rig.backend.failures}`,
  );
  // The device serves a fresh driver, and no acknowledged write is lost.
  epoch++;
  const slab = slabs.find((s) => !dead.includes(s)) ?? slabs[0]!;
  rig.guard.memory.fill(slab.addr, slab.len, 0);
  const fin = noThrow(`${what}: final driver`, () =>
    VirtioBlkDriver.create(t, {
      memory: rig.guard.memory,
      allocator: new GuestAllocator(slab.addr, slab.len),
      queueSize: 16,
    }),
  );
  if (fin instanceof DriverError)
    throw new FuzzFinding(
      "serve-after-reset",
      `${what}: no driver after the final reset: ${fin.message}`,
    );
  let got: Uint8Array | Error | null = null;
  fin.read(0, DISK_BYTES).then(
    (b) => {
      got = b;
    },
    (e: unknown) => {
      got = e instanceof Error ? e : new Error(String(e));
    },
  );
  const until = Date.now() + 5000;
  while (got === null && Date.now() < until) {
    fin.poll();
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const image = got as Uint8Array | Error | null;
  if (image === null || image instanceof Error)
    throw new FuzzFinding(
      "serve-after-reset",
      `${what}: the final read ${image === null ? "never completed" : `failed: ${image.message}`}`,
    );
  for (let s = 0; s < SECTORS; s++) {
    const v = sectorValue(image, s);
    const allowed = model.allowed(s);
    expectModel(
      v !== null && allowed.has(v),
      () =>
        `${what}: sector ${s} holds ${v === null ? "a torn sector" : v}; the model allows ${[...allowed].join(",")} (acknowledged write lost?)`,
    );
  }
  noThrow(`${what}: reset`, () => t.reset());
  unbindVirtioDriver(t);
  expectNoBusFaults(rig.guest.bus, what);
  rig.guard.check(what);
}

/** The `blk-inflight` target. */
export const blkInflightTarget: FuzzTarget<InflightCase> = {
  name: "blk-inflight",
  description:
    "resets and status changes with virtio-blk requests in flight on FileDisk and OverlayDisk; no write after reset, no acknowledged write lost",
  kind: "other",
  arbitrary: inflightCaseArb,
  run: runInflightCase,
};
