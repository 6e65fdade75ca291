import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { PackedQueueRig, packedCopy, packedZeroCopy } from "../src/packed-queue.js";
import {
  allocationPerChain,
  BATCH,
  bareCopy,
  bareZeroCopy,
  type ChainShape,
  MEMORY_KINDS,
  type MemoryKind,
  PACKED_TARGET,
  pvkitCopy,
  pvkitZeroCopy,
  QUEUE_SIZE,
  SHAPES,
  SplitQueueRig,
  splitQueueSuite,
  V86_TARGET,
} from "../src/suites/split-queue.js";
import { loadV86, type V86Machine, v86Copy, v86ZeroCopy } from "../src/v86-queue.js";

/** The bytes chain k of a rig should hold, read through the public GuestMemory API (the oracle). */
function chainBytesOf(rig: SplitQueueRig, k: number): Uint8Array {
  const out = new Uint8Array(rig.chainBytes);
  let pos = 0;
  rig.shape.lengths.forEach((len, j) => {
    const view = rig.memory.slice(rig.buffersAddr + k * rig.chainStride + rig.partOffsets[j]!, len);
    if (!(view instanceof Uint8Array)) throw new Error("oracle read outside memory");
    out.set(view, pos);
    pos += len;
  });
  return out;
}

/** The zero-copy sum chain k should produce (first, middle, last byte of each buffer). */
function chainSumOf(rig: SplitQueueRig, k: number): number {
  let sum = 0;
  rig.shape.lengths.forEach((len, j) => {
    const base = rig.buffersAddr + k * rig.chainStride + rig.partOffsets[j]!;
    for (const off of [0, len >>> 1, len - 1]) {
      const b = rig.memory.readU8(base + off);
      if (typeof b !== "number") throw new Error("oracle read outside memory");
      sum += b;
    }
  });
  return sum;
}

/** The whole used ring (flags, idx, every element) as bytes. */
function usedRing(rig: SplitQueueRig): Uint8Array {
  const view = rig.memory.slice(rig.usedAddr, 4 + 8 * rig.size);
  if (!(view instanceof Uint8Array)) throw new Error("used ring outside memory");
  return view.slice();
}

/**
 * Index of the first byte where `a` and `b` differ, `-2` when their lengths differ, `-1`
 * when equal (vitest's deep equality is far too slow for 100 KiB arrays).
 */
function firstDiff(a: Uint8Array | undefined, b: Uint8Array | undefined): number {
  if (a === undefined || b === undefined || a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

interface Run {
  sums: number[];
  copies: Uint8Array[];
}

/**
 * Runs `batches` batches through pvkit and through the bare loop on two rigs with the
 * same layout and bytes, in one mode, and returns what each produced.
 */
function runBoth(
  shape: ChainShape,
  kind: MemoryKind,
  mode: "zero-copy" | "copy",
  batches: number,
  opts: { size?: number; batch?: number; seed?: number } = {},
) {
  const pr = new SplitQueueRig(shape, kind, opts);
  const br = new SplitQueueRig(shape, kind, opts);
  const q = pr.createDeviceQueue();
  const d = br.createBareDevice();
  const p: Run = { sums: [], copies: [] };
  const b: Run = { sums: [], copies: [] };
  for (let i = 0; i < batches; i++) {
    pr.publish();
    br.publish();
    if (mode === "zero-copy") {
      p.sums.push(pvkitZeroCopy(q));
      b.sums.push(bareZeroCopy(d));
    } else {
      p.sums.push(pvkitCopy(q, pr.dst));
      b.sums.push(bareCopy(d, br.dst));
      p.copies.push(pr.dst.slice());
      b.copies.push(br.dst.slice());
    }
  }
  return { pr, br, q, d, p, b };
}

describe("split-queue work functions", () => {
  for (const shape of SHAPES) {
    for (const kind of MEMORY_KINDS) {
      // 40 batches of 32: past the 1024-entry used ring's wrap, and past the end of the
      // 512 (shape a) or 1024 (shape b) chains, so both cursors wrap.
      it(`zero-copy: pvkit and bare agree with each other and with the oracle (${shape.key}, ${kind})`, () => {
        const { pr, br, q, d, p, b } = runBoth(shape, kind, "zero-copy", 40);
        expect(q.error).toBeNull();
        expect(q.stats.popped).toBe(40 * BATCH);
        expect(p.sums).toEqual(b.sums);
        for (let batch = 0; batch < 40; batch++) {
          let expected = 0;
          for (let i = 0; i < BATCH; i++)
            expected += chainSumOf(pr, (batch * BATCH + i) % pr.chains);
          expect(p.sums[batch]).toBe(expected);
        }
        expect(firstDiff(usedRing(pr), usedRing(br))).toBe(-1);
        expect(pr.usedIdx()).toBe((40 * BATCH) & 0xffff);
        expect(d.nextUsed).toBe((40 * BATCH) & 0xffff);
        // The last QUEUE_SIZE used elements name the heads in publication order, len 0.
        for (let n = 40 * BATCH - QUEUE_SIZE; n < 40 * BATCH; n++) {
          expect(pr.usedElement(n % QUEUE_SIZE)).toEqual([pr.headOf(n % pr.chains), 0]);
        }
      });

      it(`copy: pvkit and bare copy the same bytes, and the right ones (${shape.key}, ${kind})`, () => {
        const { pr, br, q, p, b } = runBoth(shape, kind, "copy", 40);
        expect(q.error).toBeNull();
        expect(p.sums).toEqual(b.sums);
        expect(p.sums.every((n) => n === BATCH * pr.chainBytes)).toBe(true);
        for (let batch = 0; batch < 40; batch++) {
          expect(firstDiff(p.copies[batch], b.copies[batch])).toBe(-1);
          const expected = new Uint8Array(BATCH * pr.chainBytes);
          for (let i = 0; i < BATCH; i++) {
            expected.set(chainBytesOf(pr, (batch * BATCH + i) % pr.chains), i * pr.chainBytes);
          }
          expect(firstDiff(p.copies[batch], expected)).toBe(-1);
        }
        expect(firstDiff(usedRing(pr), usedRing(br))).toBe(-1);
      });
    }
  }

  it("both loops keep agreeing across the 16-bit index wrap", () => {
    const batches = Math.ceil(0x10000 / BATCH) + 5; // 2053 batches: ring indices wrap once
    const { pr, br, q, d, p, b } = runBoth(SHAPES[1]!, "SharedArrayBuffer", "zero-copy", batches);
    expect(q.error).toBeNull();
    expect(p.sums).toEqual(b.sums);
    expect(pr.availIdx).toBe((batches * BATCH) & 0xffff);
    expect(pr.availIdx).toBeLessThan(batches * BATCH); // it did wrap
    expect(q.nextAvailIndex).toBe(pr.availIdx);
    expect(d.nextAvail).toBe(br.availIdx);
    expect(firstDiff(usedRing(pr), usedRing(br))).toBe(-1);
  });

  it("agree on random chain shapes, queue sizes and batch sizes", () => {
    const shapeArb = fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(
        shapeArb,
        fc.constantFrom(64, 256, 1024),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 70 }),
        fc.constantFrom<MemoryKind>("ArrayBuffer", "SharedArrayBuffer"),
        fc.integer({ min: 1, max: 0x7fff_ffff }),
        (lengths, size, batch, batches, kind, seed) => {
          fc.pre(Math.floor(size / lengths.length) >= batch);
          const shape: ChainShape = { key: "r", label: "random", lengths };
          const zc = runBoth(shape, kind, "zero-copy", batches, { size, batch, seed });
          expect(zc.q.error).toBeNull();
          expect(zc.p.sums).toEqual(zc.b.sums);
          expect(firstDiff(usedRing(zc.pr), usedRing(zc.br))).toBe(-1);
          const cp = runBoth(shape, kind, "copy", batches, { size, batch, seed });
          expect(cp.q.error).toBeNull();
          expect(cp.p.sums).toEqual(cp.b.sums);
          expect(cp.p.copies).toHaveLength(batches);
          for (const [i, c] of cp.p.copies.entries()) expect(firstDiff(c, cp.b.copies[i])).toBe(-1);
          expect(firstDiff(usedRing(cp.pr), usedRing(cp.br))).toBe(-1);
          // The last batch's copy is the last `batch` chains, back to back.
          const last = cp.p.copies[batches - 1]!;
          const k0 = ((batches - 1) * batch) % cp.pr.chains;
          expect(firstDiff(last.subarray(0, cp.pr.chainBytes), chainBytesOf(cp.pr, k0))).toBe(-1);
        },
      ),
      { seed: 0x5eed_b3c4, numRuns: 40 },
    );
  });

  it("the same seed gives the same bytes and a different seed different ones", () => {
    const a = new SplitQueueRig(SHAPES[0]!, "ArrayBuffer", { seed: 7 });
    const b = new SplitQueueRig(SHAPES[0]!, "SharedArrayBuffer", { seed: 7 });
    const c = new SplitQueueRig(SHAPES[0]!, "ArrayBuffer", { seed: 8 });
    expect(firstDiff(chainBytesOf(a, 3), chainBytesOf(b, 3))).toBe(-1);
    expect(firstDiff(chainBytesOf(a, 3), chainBytesOf(c, 3))).toBeGreaterThanOrEqual(0);
    expect(b.memory.shared).toBe(true);
    expect(a.memory.shared).toBe(false);
  });

  it("refuses shapes that cannot fill a batch or have empty buffers", () => {
    expect(
      () =>
        new SplitQueueRig({ key: "x", label: "x", lengths: [1, 1, 1] }, "ArrayBuffer", {
          size: 64,
        }),
    ).toThrow(/fewer than a batch/);
    expect(() => new SplitQueueRig({ key: "x", label: "x", lengths: [0] }, "ArrayBuffer")).toThrow(
      /at least one byte/,
    );
    expect(() => new SplitQueueRig({ key: "x", label: "x", lengths: [] }, "ArrayBuffer")).toThrow(
      /at least one byte/,
    );
  });
});

describe("the packed rig", () => {
  for (const shape of SHAPES) {
    for (const kind of MEMORY_KINDS) {
      // 40 batches of 32 chains: the 1024-slot ring wraps 2.5 (shape b) or 1.25 (a) times per
      // pass over the chains, so both wrap counters flip many times.
      it(`packed and split pvkit queues do the same work on the same bytes (${shape.key}, ${kind})`, () => {
        const opts = { size: QUEUE_SIZE, batch: BATCH, seed: 11 };
        const rig = new PackedQueueRig(shape, kind === "SharedArrayBuffer", opts);
        const q = rig.createDeviceQueue();
        const zc = runBoth(shape, kind, "zero-copy", 40, { seed: 11 });
        const cp = runBoth(shape, kind, "copy", 40, { seed: 11 });
        const copyRig = new PackedQueueRig(shape, kind === "SharedArrayBuffer", opts);
        const cq = copyRig.createDeviceQueue();
        for (let batch = 0; batch < 40; batch++) {
          rig.publish();
          expect(packedZeroCopy(q)).toBe(zc.p.sums[batch]);
          copyRig.publish();
          expect(packedCopy(cq, copyRig.dst)).toBe(cp.p.sums[batch]);
          expect(firstDiff(copyRig.dst, cp.p.copies[batch])).toBe(-1);
        }
        for (const x of [q, cq]) {
          expect(x.error).toBeNull();
          expect(x.inFlight).toBe(0);
          expect(x.stats.popped).toBe(40 * BATCH);
        }
        // The device's next used position and wrap counter follow the driver's (§2.8.7).
        const slots = 40 * BATCH * shape.lengths.length;
        expect(q.nextUsedIndex).toBe(
          (slots % QUEUE_SIZE) | (((Math.floor(slots / QUEUE_SIZE) + 1) % 2) << 15),
        );
      });
    }
  }
});

describe("allocationPerChain", () => {
  it("returns null without an exposed gc", () => {
    const saved = (globalThis as { gc?: unknown }).gc;
    (globalThis as { gc?: unknown }).gc = undefined;
    try {
      expect(allocationPerChain(() => {}, 1, 100)).toBeNull();
    } finally {
      (globalThis as { gc?: unknown }).gc = saved;
    }
  });

  it("sees an allocating loop and not a non-allocating one", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const saved = (globalThis as { gc?: unknown }).gc;
    (globalThis as { gc?: unknown }).gc = gc;
    try {
      const keep: number[][] = [];
      const allocating = (): void => {
        const a = new Array<number>(64).fill(0.5); // double elements: ≥ 64 × 8 bytes
        keep.push(a);
        if (keep.length > 64) keep.length = 0;
      };
      const words = new Uint32Array(64);
      let i = 0;
      const quiet = (): void => {
        words[i++ & 63] = i;
      };
      const heavy = allocationPerChain(allocating, 4, 2_000);
      const none = allocationPerChain(quiet, 4, 2_000);
      expect(heavy).not.toBeNull();
      expect(heavy!).toBeGreaterThan((64 * 8) / 4 / 2); // per chain, with slack
      expect(none).not.toBeNull();
      expect(none!).toBeLessThan(1);
    } finally {
      (globalThis as { gc?: unknown }).gc = saved;
    }
  });
});

describe("splitQueueSuite", () => {
  it("runs end to end and reports every variant, ratio and check", async () => {
    const lines: string[] = [];
    const result = await splitQueueSuite.run({
      maxTime: 0.02,
      minSamples: 1,
      quick: true,
      log: (l) => lines.push(l),
    });
    expect(result.name).toBe("split-queue");
    const data = result.data as {
      variants: { impl: string; nsPerChain: number }[];
      ratios: { ratio: number; pass: boolean; target: number }[];
      packedRatios: { mode: string; ratio: number; deviceOnlyRatio: number; pass: boolean }[];
      v86: {
        variants: { impl: string; memory: string; nsPerChain: number }[];
        ratios: {
          shape: string;
          vsV86Debug: number;
          target: number | null;
          pass: boolean | null;
        }[];
      };
    };
    // 2 shapes × 2 memories × (split driver + 4 split variants + packed driver + 2 packed)
    expect(data.variants).toHaveLength(32);
    expect(data.variants.filter((v) => v.impl === "pvkit-packed")).toHaveLength(8);
    expect(data.variants.every((v) => Number.isFinite(v.nsPerChain) && v.nsPerChain > 0)).toBe(
      true,
    );
    expect(data.ratios).toHaveLength(8);
    for (const r of data.ratios) expect(r.pass).toBe(r.ratio <= r.target);
    expect(result.tables[0]!.rows).toHaveLength(8);
    expect(data.packedRatios).toHaveLength(8);
    for (const r of data.packedRatios) expect(r.pass).toBe(r.deviceOnlyRatio <= PACKED_TARGET);
    expect(result.tables[1]!.rows).toHaveLength(8);
    // 8 pvkit ÷ bare checks + 4 packed ÷ split (zero-copy) + pvkit ÷ v86 on shape a, both modes.
    expect(result.checks.filter((c) => c.unit === "×")).toHaveLength(14);
    expect(lines.some((l) => l.includes("ns/chain"))).toBe(true);
    // The v86 peer: 2 shapes × (driver + {pvkit, bare, v86 release, v86 debug} × 2 modes) on v86 RAM.
    expect(data.v86.variants).toHaveLength(18);
    expect(data.v86.variants.every((v) => v.memory === "v86 RAM" && v.nsPerChain > 0)).toBe(true);
    expect(data.v86.ratios).toHaveLength(4);
    for (const r of data.v86.ratios) {
      expect(r.target).toBe(r.shape === "a" ? V86_TARGET : null);
      if (r.target !== null) expect(r.pass).toBe(r.vsV86Debug >= r.target);
    }
    expect(result.tables[2]!.rows).toHaveLength(4);
    expect(result.charts?.map((c) => c.id)).toEqual(["rate", "ratio"]);
  });
});

describe("v86's VirtQueue as a peer", () => {
  let machines: V86Machine[] = [];
  afterAll(async () => {
    for (const m of machines) await m.destroy();
    machines = [];
  });
  const load = async (): Promise<V86Machine[]> => {
    if (machines.length === 0)
      machines = [await loadV86("release", 32 << 20), await loadV86("debug", 32 << 20)];
    return machines;
  };

  for (const shape of SHAPES) {
    it(`consumes the same chains as pvkit and the bare loop on v86's RAM, both builds (${shape.key})`, async () => {
      for (const machine of await load()) {
        machine.reset();
        const place = () => ({
          seed: 9,
          placement: {
            memory: machine.memory,
            base: machine.allocate(SplitQueueRig.bytesNeeded(shape)),
          },
        });
        for (const mode of ["zero-copy", "copy"] as const) {
          const pr = new SplitQueueRig(shape, "ArrayBuffer", place());
          const br = new SplitQueueRig(shape, "ArrayBuffer", place());
          const vr = new SplitQueueRig(shape, "ArrayBuffer", place());
          expect(pr.descAddr).toBeGreaterThanOrEqual(0x10_0000);
          const q = pr.createDeviceQueue();
          const d = br.createBareDevice();
          const vq = machine.createQueue(vr.size, vr.descAddr, vr.availAddr, vr.usedAddr);
          const irqs = machine.interrupts;
          // 40 batches: past the used ring's wrap and past the end of the chains.
          for (let i = 0; i < 40; i++) {
            pr.publish();
            br.publish();
            vr.publish();
            if (mode === "zero-copy") {
              const p = pvkitZeroCopy(q);
              expect(bareZeroCopy(d)).toBe(p);
              expect(v86ZeroCopy(vq, machine.cpu)).toBe(p);
            } else {
              const p = pvkitCopy(q, pr.dst);
              expect(bareCopy(d, br.dst)).toBe(p);
              expect(v86Copy(vq, vr.dst)).toBe(p);
              expect(firstDiff(vr.dst, pr.dst)).toBe(-1);
            }
          }
          expect(q.error).toBeNull();
          expect(vq.avail_last_idx).toBe(vr.availIdx);
          expect(firstDiff(usedRing(vr), usedRing(pr))).toBe(-1);
          expect(firstDiff(usedRing(br), usedRing(pr))).toBe(-1);
          // One interrupt per batch: no EVENT_IDX, and the driver never suppresses them.
          expect(machine.interrupts - irqs).toBe(40);
        }
      }
    });
  }

  it("places rigs only in memory that holds them", async () => {
    const [machine] = await load();
    expect(
      () =>
        new SplitQueueRig(SHAPES[0]!, "ArrayBuffer", {
          placement: { memory: machine!.memory, base: 0x10_0800 },
        }),
    ).toThrow(/4 KiB-aligned/);
    expect(
      () =>
        new SplitQueueRig(SHAPES[1]!, "ArrayBuffer", {
          placement: { memory: machine!.memory, base: machine!.memory.end - 4096 },
        }),
    ).toThrow(/holding/);
    expect(() => machine!.allocate(64 << 20)).toThrow(/is full/);
  });
});
