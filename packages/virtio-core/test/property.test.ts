/**
 * Seeded property test of `DeviceQueue` against an independent reference walker.
 *
 * Random descriptor tables (raw garbage, well-formed chains, well-formed chains with a few
 * mutations, indirect tables) and random avail rings/indices are written into guest memory.
 * A small model written here from the spec rules (§2.7.5, §2.7.5.3, §2.7.13, and pvkit's
 * documented choice that zero-length descriptors are skipped) predicts, for every pop,
 * either the exact chain or "corrupt". The queue must never throw, never write anything
 * but its used ring, drain within size + 1 `popChain` calls, and match the model.
 *
 * On failure fast-check prints the seed and the shrunk counterexample; re-run with the
 * printed `seed`/`path` in `fc.assert` options to reproduce.
 */
import { GuestMemory } from "@pvkit/platform";
import {
  DeviceQueue,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type VirtioError,
} from "@pvkit/virtio-core";
import {
  chainRanges,
  checkCanary,
  fillCanary,
  type MemoryRange,
  MockSplitQueue,
  type RawDescriptor,
} from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const SEED = 0x5eed_c0de;
const NUM_RUNS = 400;

const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

// Layout: rings far apart so no table or buffer the generators produce overlaps the used
// ring (the only area the device writes); three indirect tables; data in two areas.
const MEM_SIZE = 0x4000;
const DESC = 0x000;
const AVAIL = 0x200;
const USED = 0xc00;
const TABLES = [0x400, 0x600, 0x800] as const;
const DATA_AREAS = [0x1000, 0x3000] as const;
/** With `holey`, [0x2000, 0x3000) is a hole. */
function regionsOf(holey: boolean): Array<readonly [number, number]> {
  return holey
    ? [
        [0, 0x2000],
        [0x3000, 0x4000],
      ]
    : [[0, MEM_SIZE]];
}

// ── generators ─────────────────────────────────────────────────────────────────────

const addrArb: fc.Arbitrary<bigint | number> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x1000, max: 0x3fff }) },
  { weight: 2, arbitrary: fc.constantFrom(...TABLES) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 32 }).map((k) => MEM_SIZE - k) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 32 }).map((k) => 0x2000 - k) },
  { weight: 1, arbitrary: fc.constant(0) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      2n ** 53n - 8n,
      2n ** 53n,
      2n ** 64n - 16n,
      0x1_0000_1000n,
      2n ** 32n + 0x1000n,
    ),
  },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) },
);

function lenArb(size: number): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 64 }) },
    { weight: 2, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: size + 1 }).map((k) => 16 * k) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(8, 24, 0xffff_fff0, 0xffff_ffff, 0x8000_0000, 0x1000_0000),
    },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
  );
}

const flagsArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(0, NEXT, WRITE, NEXT | WRITE) },
  { weight: 1, arbitrary: fc.constantFrom(INDIRECT, INDIRECT | WRITE, INDIRECT | NEXT) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);

function nextArb(size: number): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0, max: size - 1 }) },
    { weight: 1, arbitrary: fc.integer({ min: size, max: size + 2 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  );
}

function descArb(size: number): fc.Arbitrary<RawDescriptor> {
  return fc.record({ addr: addrArb, len: lenArb(size), flags: flagsArb, next: nextArb(size) });
}

interface BufferSpec {
  readonly writable: boolean;
  readonly area: number;
  readonly off: number;
  readonly len: number;
}
interface ChainSpec {
  readonly buffers: readonly BufferSpec[];
  readonly indirect: boolean;
}
interface Mutation {
  readonly index: number;
  readonly field: "addr" | "len" | "flags" | "next";
  readonly desc: RawDescriptor;
}
interface Round {
  readonly raw: readonly RawDescriptor[];
  readonly rawTables: readonly (readonly RawDescriptor[])[];
  readonly wellFormed: boolean;
  readonly specs: readonly ChainSpec[];
  readonly mutations: readonly Mutation[];
  readonly extraHeads: readonly number[];
  readonly idx: { readonly abs: number } | { readonly delta: number } | null;
  readonly completeMask: number;
}
interface Scenario {
  readonly size: number;
  readonly holey: boolean;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly rounds: readonly Round[];
}

function chainSpecArb(): fc.Arbitrary<ChainSpec> {
  const buffer = fc.record({
    writable: fc.boolean(),
    area: fc.constantFrom(...DATA_AREAS),
    off: fc.integer({ min: 0, max: 0xe00 }),
    len: fc.oneof(
      { weight: 5, arbitrary: fc.integer({ min: 1, max: 0x100 }) },
      { weight: 1, arbitrary: fc.constant(0) },
    ),
  });
  return fc.record({
    // Readable buffers first (stable sort), as §2.7.4.2 requires of a driver.
    buffers: fc
      .array(buffer, { minLength: 1, maxLength: 4 })
      .map((bs) => [...bs.filter((b) => !b.writable), ...bs.filter((b) => b.writable)]),
    indirect: fc.boolean(),
  });
}

function roundArb(size: number): fc.Arbitrary<Round> {
  return fc.record({
    raw: fc.array(descArb(size), { minLength: size, maxLength: size }),
    rawTables: fc.array(fc.array(descArb(size), { minLength: 1, maxLength: size + 1 }), {
      minLength: 3,
      maxLength: 3,
    }),
    wellFormed: fc.oneof(
      { weight: 3, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    specs: fc.array(chainSpecArb(), { maxLength: size }),
    mutations: fc.oneof(
      { weight: 2, arbitrary: fc.constant([]) },
      {
        weight: 1,
        arbitrary: fc.array(
          fc.record({
            index: fc.integer({ min: 0, max: size - 1 }),
            field: fc.constantFrom(
              "addr" as const,
              "len" as const,
              "flags" as const,
              "next" as const,
            ),
            desc: descArb(size),
          }),
          { minLength: 1, maxLength: 2 },
        ),
      },
    ),
    extraHeads: fc.oneof(
      { weight: 4, arbitrary: fc.constant([]) },
      { weight: 1, arbitrary: fc.array(nextArb(size), { minLength: 1, maxLength: 2 }) },
    ),
    idx: fc.option(
      fc.oneof(
        fc.record({ abs: fc.integer({ min: 0, max: 0xffff }) }),
        fc.record({ delta: fc.integer({ min: -2, max: size + 2 }) }),
      ),
      { freq: 6 },
    ),
    completeMask: fc.integer({ min: 0, max: 0xffff }),
  });
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.constantFrom(1, 2, 4, 8, 16).chain((size) =>
  fc.record({
    size: fc.constant(size),
    holey: fc.boolean(),
    eventIdx: fc.boolean(),
    indirect: fc.oneof(
      { weight: 3, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    rounds: fc.array(roundArb(size), { minLength: 1, maxLength: 4 }),
  }),
);

// ── the reference model ────────────────────────────────────────────────────────────

interface ModelBuffer {
  readonly addr: number;
  readonly len: number;
  readonly writable: boolean;
}
type Prediction =
  | { readonly kind: "empty" }
  | { readonly kind: "corrupt"; readonly why: string }
  | { readonly kind: "chain"; readonly head: number; readonly buffers: readonly ModelBuffer[] };

/** Guest memory as the model sees it: a byte copy, decoded here (little-endian, §2.4). */
class Snapshot {
  private readonly bytes = new Uint8Array(MEM_SIZE);
  private readonly backed = new Uint8Array(MEM_SIZE);
  constructor(
    private readonly regions: ReadonlyArray<readonly [number, number]>,
    mem: GuestMemory,
  ) {
    for (const [base, end] of regions) {
      this.bytes.set(mem.slice(base, end - base) as Uint8Array, base);
      this.backed.fill(1, base, end);
    }
  }
  u8(a: number): number {
    if (this.backed[a] !== 1) throw new Error(`model read outside memory at ${a}`);
    return this.bytes[a]!;
  }
  u16(a: number): number {
    return this.u8(a) | (this.u8(a + 1) << 8);
  }
  u32(a: number): number {
    return (this.u16(a) | (this.u16(a + 2) << 16)) >>> 0;
  }
  u64(a: number): bigint {
    return BigInt(this.u32(a)) | (BigInt(this.u32(a + 4)) << 32n);
  }
  /** Whether [addr, addr+len) lies inside one region — exact 64-bit arithmetic. */
  inOneRegion(addr: bigint, len: number): boolean {
    const end = addr + BigInt(len);
    return this.regions.some(([b, e]) => addr >= BigInt(b) && end <= BigInt(e));
  }
}

class Model {
  nextAvail = 0;
  corrupt = false;
  readonly inFlight: number[] = [];

  constructor(
    private readonly size: number,
    private readonly indirect: boolean,
  ) {}

  pop(m: Snapshot): Prediction {
    const size = this.size;
    const idx = m.u16(AVAIL + 2);
    const pending = (idx - this.nextAvail) & 0xffff;
    if (pending > size) return { kind: "corrupt", why: `avail.idx ${idx} is ${pending} ahead` };
    if (pending === 0) return { kind: "empty" };
    const head = m.u16(AVAIL + 4 + 2 * (this.nextAvail % size));
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    if (head >= size) return { kind: "corrupt", why: `head ${head}` };
    if (this.inFlight.includes(head)) return { kind: "corrupt", why: `head ${head} in flight` };

    let table = DESC;
    let tableLen = size;
    let budget = size; // descriptors this table may contribute
    let visited = 0;
    let inIndirect = false;
    let sawWritable = false;
    let total = 0n;
    let i = head;
    const buffers: ModelBuffer[] = [];
    for (;;) {
      if (visited === budget) return { kind: "corrupt", why: "chain too long / loop" };
      visited++;
      const at = table + 16 * i;
      const addr = m.u64(at);
      const len = m.u32(at + 8);
      const flags = m.u16(at + 12);
      const next = m.u16(at + 14);
      if (flags & INDIRECT) {
        if (!this.indirect) return { kind: "corrupt", why: "indirect not negotiated" };
        if (inIndirect) return { kind: "corrupt", why: "nested indirect" };
        if (flags & NEXT) return { kind: "corrupt", why: "indirect with next" };
        if (len === 0 || len % 16 !== 0) return { kind: "corrupt", why: `indirect len ${len}` };
        if (len / 16 > size)
          return { kind: "corrupt", why: "indirect table longer than the queue" };
        if (!m.inOneRegion(addr, len))
          return { kind: "corrupt", why: "indirect table outside memory" };
        table = Number(addr);
        tableLen = len / 16;
        budget = tableLen;
        visited = 0;
        inIndirect = true;
        i = 0;
        continue;
      }
      const writable = (flags & WRITE) !== 0;
      if (!writable && sawWritable) return { kind: "corrupt", why: "readable after writable" };
      if (writable) sawWritable = true;
      if (len > 0) {
        total += BigInt(len);
        if (total > 2n ** 32n) return { kind: "corrupt", why: "more than 2^32 bytes" };
        if (!m.inOneRegion(addr, len)) return { kind: "corrupt", why: "buffer outside memory" };
        buffers.push({ addr: Number(addr), len, writable });
      }
      if ((flags & NEXT) === 0) break;
      if (next >= tableLen) return { kind: "corrupt", why: `next ${next} ≥ ${tableLen}` };
      i = next;
    }
    this.inFlight.push(head);
    return { kind: "chain", head, buffers };
  }
}

// ── writing a round into guest memory ─────────────────────────────────────────────

/** Writes a round's tables and avail entries; returns the ranges of indirect tables written. */
function writeRound(mock: MockSplitQueue, size: number, round: Round, model: Model): MemoryRange[] {
  const table: RawDescriptor[] = [...round.raw];
  const tables: (readonly RawDescriptor[])[] = [...round.rawTables];
  const heads: number[] = [];
  if (round.wellFormed) {
    // Descriptor indices not holding an in-flight head, in order (a driver reuses only
    // returned descriptors; reusing an in-flight head is a separate hostile case).
    const free = [...Array(size).keys()].filter((k) => !model.inFlight.includes(k));
    let nextTable = 0;
    for (const spec of round.specs) {
      const bufs = spec.buffers.slice(0, size);
      const descOf = (b: BufferSpec, k: number, n: number, nextIdx: number): RawDescriptor => ({
        addr: b.area + b.off,
        len: b.len,
        flags: (b.writable ? WRITE : 0) | (k < n - 1 ? NEXT : 0),
        next: k < n - 1 ? nextIdx : 0,
      });
      if (spec.indirect && nextTable < TABLES.length && free.length > 0) {
        const t = nextTable++;
        tables[t] = bufs.map((b, k) => descOf(b, k, bufs.length, k + 1));
        const head = free.shift()!;
        table[head] = { addr: TABLES[t]!, len: 16 * bufs.length, flags: INDIRECT, next: 0 };
        heads.push(head);
      } else if (bufs.length <= free.length) {
        const ids = free.splice(0, bufs.length);
        bufs.forEach((b, k) => {
          table[ids[k]!] = descOf(b, k, bufs.length, ids[k + 1] ?? 0);
        });
        heads.push(ids[0]!);
      }
    }
    for (const mu of round.mutations) {
      const d = table[mu.index]!;
      table[mu.index] = { ...d, [mu.field]: mu.desc[mu.field] };
    }
  } else {
    for (let k = 0; k < size; k++) heads.push((round.raw[k]!.next ?? 0) % size);
  }
  heads.push(...round.extraHeads);
  table.forEach((d, k) => {
    mock.writeDescriptor(k, d);
  });
  const ranges: MemoryRange[] = [];
  tables.forEach((t, k) => {
    const len = mock.writeIndirectTable(TABLES[k]!, t);
    ranges.push({ addr: TABLES[k]!, len });
  });
  for (const h of heads) mock.pushAvail(h);
  if (round.idx !== null) {
    mock.setAvailIdx("abs" in round.idx ? round.idx.abs : model.nextAvail + round.idx.delta);
  }
  return ranges;
}

// ── the property ───────────────────────────────────────────────────────────────────

function runScenario(s: Scenario, shared: boolean): void {
  const { size } = s;
  const regions = regionsOf(s.holey);
  const mem = new GuestMemory(
    regions.map(([base, end]) => ({
      base,
      size: end - base,
      backing: shared ? new SharedArrayBuffer(end - base) : new ArrayBuffer(end - base),
    })),
  );
  expect(mem.shared).toBe(shared);
  const mock = new MockSplitQueue(mem, size, { desc: DESC, avail: AVAIL, used: USED });
  const errors: VirtioError[] = [];
  const q = new DeviceQueue(0, size, (e) => errors.push(e));
  expect(mock.configure(q, { eventIdx: s.eventIdx, indirect: s.indirect })).toBeUndefined();
  const model = new Model(size, s.indirect);
  const usedRing = mock.ringRanges()[2]!;

  for (const round of s.rounds) {
    const tableRanges = writeRound(mock, size, round, model);
    const keep = [...mock.ringRanges(), ...tableRanges];
    fillCanary(mem, keep);
    const before = new Snapshot(regions, mem);

    // Drain, comparing every pop with the model.
    let calls = 0;
    for (;;) {
      expect(calls).toBeLessThanOrEqual(size);
      const want: Prediction = model.corrupt
        ? { kind: "corrupt", why: "stopped" }
        : model.pop(before);
      calls++;
      const got = q.popChain();
      if (want.kind === "chain") {
        expect(q.error).toBeNull();
        expect(got).not.toBeNull();
        const r = chainRanges(got!);
        expect(r.head).toBe(want.head);
        expect(r.readable).toEqual(
          want.buffers.filter((b) => !b.writable).map(({ addr, len }) => ({ addr, len })),
        );
        expect(r.writable).toEqual(
          want.buffers.filter((b) => b.writable).map(({ addr, len }) => ({ addr, len })),
        );
        continue;
      }
      expect(got).toBeNull();
      if (want.kind === "empty") expect(q.error).toBeNull();
      else {
        if (q.error === null)
          throw new Error(`model says corrupt (${want.why}); the queue did not`);
        model.corrupt = true;
      }
      break;
    }
    expect(calls).toBeLessThanOrEqual(size + 1);
    expect(errors.length).toBe(model.corrupt ? 1 : 0);
    expect(q.inFlight).toBe(model.inFlight.length);
    if (s.eventIdx) expect(mock.availEvent()).toBe(model.nextAvail);

    // Complete a subset (in the order the mask picks) and check the used ring.
    const done = model.inFlight.filter((_, k) => (round.completeMask >> k) & 1);
    for (const h of done) {
      expect(q.addUsed(h, 0)).toBe(true);
      model.inFlight.splice(model.inFlight.indexOf(h), 1);
    }
    q.needsNotification();
    expect(mock.readUsed()).toEqual(done.map((id) => ({ id, len: 0 })));

    // The device wrote nothing but its used ring.
    expect(checkCanary(mem, keep)).toEqual([]);
    for (const [base, end] of regions) {
      const now = mem.slice(base, end - base) as Uint8Array;
      for (let a = base; a < end; a++) {
        if (a >= usedRing.addr && a < usedRing.addr + usedRing.len) continue;
        if (now[a - base] !== before.u8(a))
          throw new Error(`guest byte 0x${a.toString(16)} changed`);
      }
    }
  }
}

describe("DeviceQueue property: matches an independent reference walker", () => {
  it("on ArrayBuffer memory", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => runScenario(s, false)),
      { seed: SEED, numRuns: NUM_RUNS },
    );
  });

  it("on SharedArrayBuffer memory", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => runScenario(s, true)),
      { seed: SEED + 1, numRuns: NUM_RUNS },
    );
  });

  it("the generators reach every outcome (chains, indirect chains, corruption, empty drains)", () => {
    // Guards against a generator change that silently stops exercising a branch.
    const seen = { chain: 0, indirectChain: 0, corrupt: 0, empty: 0, multiBuffer: 0 };
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const mem = new GuestMemory(regionsOf(s.holey).map(([b, e]) => ({ base: b, size: e - b })));
        const mock = new MockSplitQueue(mem, s.size, { desc: DESC, avail: AVAIL, used: USED });
        const model = new Model(s.size, s.indirect);
        for (const round of s.rounds) {
          writeRound(mock, s.size, round, model);
          const snap = new Snapshot(regionsOf(s.holey), mem);
          for (let k = 0; k <= s.size && !model.corrupt; k++) {
            const p = model.pop(snap);
            if (p.kind === "empty") {
              seen.empty++;
              break;
            }
            if (p.kind === "corrupt") {
              seen.corrupt++;
              model.corrupt = true;
              break;
            }
            seen.chain++;
            if (p.buffers.length > 1) seen.multiBuffer++;
            if (mem.readU16(DESC + 16 * p.head + 12) === INDIRECT) seen.indirectChain++;
          }
          model.inFlight.length = 0;
        }
      }),
      { seed: SEED, numRuns: NUM_RUNS },
    );
    expect(seen.chain).toBeGreaterThan(NUM_RUNS / 2);
    expect(seen.indirectChain).toBeGreaterThan(NUM_RUNS / 20);
    expect(seen.multiBuffer).toBeGreaterThan(NUM_RUNS / 10);
    expect(seen.corrupt).toBeGreaterThan(NUM_RUNS / 4);
    expect(seen.empty).toBeGreaterThan(NUM_RUNS / 10);
  });
});
