/**
 * Fuzz targets `ring` and `ring-packed`: hostile split virtqueues (virtio 1.2 §2.7) and
 * packed virtqueues (§2.8) through virtio-mmio (§4.2) and virtio-pci (§4.1) for
 * virtio-blk, virtio-net and virtio-rng.
 *
 * A case picks a device, a transport, the negotiated ring features (EVENT_IDX §2.7.10,
 * INDIRECT_DESC §2.7.5.3) and a queue size, then plays a sequence of steps on the rings:
 * well-formed chains (with real request headers and frames), raw descriptors with any
 * address, length, flags and `next` (out of memory, across the end, 2^64-1, loops, nested
 * indirect, device-readable after device-writable), indirect tables of any length,
 * avail-index jumps (packed: the driver's position and wrap counter moved), kicks, and
 * frames arriving from the network. After every case:
 *
 * - no exception escaped and the bus caught none (`handlerFaults` = 0);
 * - nothing outside guest memory, or outside the rings and the buffers flagged
 *   device-writable, changed (canaries; device-readable buffers and indirect tables are
 *   compared with what the driver wrote);
 * - every used element names a head (split) or buffer ID (packed) the driver made
 *   available and that is still outstanding, never more than were made available, with a
 *   used length no larger than the chain's writable bytes (§2.7.8.1) — on a packed ring,
 *   for queues that only had well-formed buffers: after a raw step the driver cannot tell
 *   where the device's used descriptors are;
 * - once the device set DEVICE_NEEDS_RESET (§2.1.2) it publishes nothing more;
 * - when the device broke, and on a sample of the other cases, it serves a real driver
 *   again after a reset (§2.4).
 *
 * One device per (device, transport) pair is kept across cases in a worker, reset at the
 * start of each case (§2.4: a reset returns the device to its initial state): building a
 * device and its PCI function per case would cost more than the case itself. A replay
 * runs the case on a fresh device; if a failure does not replay, the reset left state
 * behind — itself a bug.
 *
 * @module
 */

import { LoopbackBackend } from "@pvkit/platform";
import { MemoryDisk, VIRTIO_BLK_HEADER_SIZE, VirtioBlkDevice } from "@pvkit/virtio-blk";
import {
  PackedDeviceQueue,
  unbindVirtioDriver,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type VirtioDevice,
  VirtioRngDevice,
} from "@pvkit/virtio-core";
import {
  type MemoryRange,
  MockPackedQueue,
  MockSplitQueue,
  type RawDescriptor,
  type TestGuest,
  type TestTransport,
  testGuest,
} from "@pvkit/virtio-core/testing";
import { VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE, VirtioNetDevice } from "@pvkit/virtio-net";
import * as fc from "fast-check";
import {
  expectModel,
  expectNoBusFaults,
  expectServesAfterReset,
  GuardedMemory,
  noThrow,
  type ServeProbe,
  tick,
} from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

// ── guest layout (256 KiB of guest RAM; above 64 KiB is scratch) ─────────────────────────────────────────────

const MEMORY_BYTES = 0x4_0000;
/** Ring i lives at i * RING_STRIDE (queue sizes up to 16 fit in 0x400). */
const RING_STRIDE = 0x400;
/** Indirect tables. */
const TABLE_BASE = 0x1000;
const TABLE_STRIDE = 0x100;
/** Data buffers. */
const DATA_BASE = 0x2000;
const DATA_BYTES = 0x6000;
/** Scratch RAM for the real driver of the serve-after-reset check. */
const SCRATCH: MemoryRange = { addr: 0x1_0000, len: 0x3_0000 };
const DISK_BYTES = 64 * 512;

// ── the case ────────────────────────────────────────────────────────────────────────

/** Where a buffer address points. */
export type AddrKind = "data" | "ring" | "end" | "outside" | "max" | "table";

/** A buffer: `off` inside the area `kind` names; `len` as written. */
export interface BufSpec {
  readonly kind: AddrKind;
  readonly off: number;
  readonly len: number;
}

/** A raw descriptor: a buffer plus verbatim flags and next. */
export interface RawDescSpec extends BufSpec {
  readonly flags: number;
  readonly next: number;
}

/** One step of a ring case. */
export type RingStep =
  | {
      /** A well-formed chain: readable buffers then writable ones (§2.7.13.1). */
      readonly k: "good";
      readonly q: number;
      readonly read: readonly BufSpec[];
      readonly write: readonly BufSpec[];
      readonly indirect: boolean;
      /** blk: request type and sector written into the header. */
      readonly type: number;
      readonly sector: number;
    }
  | {
      /** Raw descriptors written at `at`, `at+1`, …; then `head` made available. */
      readonly k: "raw";
      readonly q: number;
      readonly at: number;
      readonly descs: readonly RawDescSpec[];
      readonly head: number;
    }
  | {
      /** An indirect table of raw entries, pointed at by one descriptor of length `len`. */
      readonly k: "table";
      readonly q: number;
      readonly entries: readonly RawDescSpec[];
      /** Added to 16·entries (a length that is not a multiple of 16, zero, too long). */
      readonly lenDelta: number;
      readonly flags: number;
    }
  | { readonly k: "avail"; readonly q: number; readonly delta: number }
  | { readonly k: "kick"; readonly q: number }
  | { readonly k: "frame"; readonly len: number; readonly bcast: boolean };

/** Which device the case drives. */
export type RingDevice = "blk" | "net" | "rng";

/** The ring layout a case negotiates: split (§2.7) or packed (VIRTIO_F_RING_PACKED, §2.8). */
export type RingLayout = "split" | "packed";

/** A ring case. */
export interface RingCase {
  /** Default split. */
  readonly layout?: RingLayout;
  readonly device: RingDevice;
  readonly transport: TestTransport;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly mrgRxbuf: boolean;
  readonly size: number;
  readonly steps: readonly RingStep[];
  /** Run the serve-after-reset check even when the device did not break. */
  readonly serveCheck: boolean;
}

const bufArb: fc.Arbitrary<BufSpec> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant<AddrKind>("data"),
      off: fc.nat(DATA_BYTES - 1),
      len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 2048 })),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constantFrom<AddrKind>("ring", "end", "outside", "max", "table"),
      off: fc.nat(0x1000),
      len: fc.oneof(
        fc.integer({ min: 0, max: 4096 }),
        fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x1_0000),
      ),
    }),
  },
);

const flagsArb = fc.oneof(
  { weight: 6, arbitrary: fc.nat(7) },
  { weight: 1, arbitrary: fc.nat(0xffff) },
);

const rawDescArb = (size: number): fc.Arbitrary<RawDescSpec> =>
  fc
    .tuple(
      bufArb,
      flagsArb,
      fc.oneof(
        { weight: 6, arbitrary: fc.nat(size - 1) },
        { weight: 1, arbitrary: fc.nat(0xffff) },
      ),
    )
    .map(([b, flags, next]) => ({ ...b, flags, next }));

function stepArb(device: RingDevice, size: number, queues: number): fc.Arbitrary<RingStep> {
  const q = fc.oneof(
    { weight: 8, arbitrary: fc.nat(queues - 1) },
    { weight: 1, arbitrary: fc.nat(0xffff) },
  );
  const qn = fc.nat(queues - 1);
  const arbs: fc.WeightedArbitrary<RingStep>[] = [
    {
      weight: 8,
      arbitrary: fc.record({
        k: fc.constant("good" as const),
        q: qn,
        read: fc.array(bufArb, {
          minLength: device === "rng" ? 0 : 1,
          maxLength: device === "rng" ? 1 : 3,
        }),
        write: fc.array(bufArb, { minLength: 0, maxLength: 3 }),
        indirect: fc.boolean(),
        type: fc.constantFrom(0, 0, 1, 1, 4, 8, 11, 13, 99),
        sector: fc.oneof(fc.nat(DISK_BYTES / 512 + 2), fc.nat(0xffff_ffff)),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant("raw" as const),
        q: qn,
        at: fc.nat(size - 1),
        descs: fc.array(rawDescArb(size), { minLength: 1, maxLength: 4 }),
        head: fc.oneof(
          { weight: 6, arbitrary: fc.nat(size - 1) },
          { weight: 1, arbitrary: fc.nat(0xffff) },
        ),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant("table" as const),
        q: qn,
        entries: fc.array(rawDescArb(8), { minLength: 0, maxLength: 8 }),
        lenDelta: fc.oneof(
          { weight: 5, arbitrary: fc.constant(0) },
          { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }) },
        ),
        flags: fc.oneof(
          { weight: 5, arbitrary: fc.constant(VIRTQ_DESC_F_INDIRECT) },
          { weight: 1, arbitrary: fc.nat(7) },
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        k: fc.constant("avail" as const),
        q: qn,
        delta: fc.oneof(fc.integer({ min: -2, max: 2 }), fc.integer({ min: 0, max: 0xffff })),
      }),
    },
    { weight: 6, arbitrary: fc.record({ k: fc.constant("kick" as const), q }) },
  ];
  if (device === "net") {
    arbs.push({
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant("frame" as const),
        len: fc.oneof(fc.integer({ min: 14, max: 128 }), fc.integer({ min: 0, max: 1600 })),
        bcast: fc.boolean(),
      }),
    });
  }
  return fc.oneof(...arbs);
}

/** The `ring` case generator: device, transport, features, size, then steps for them. */
export const ringCaseArb: fc.Arbitrary<RingCase> = fc
  .record({
    device: fc.constantFrom<RingDevice>("blk", "net", "rng"),
    transport: fc.constantFrom<TestTransport>("mmio", "pci"),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    mrgRxbuf: fc.boolean(),
    size: fc.constantFrom(2, 4, 8, 16),
    serveCheck: fc.integer({ min: 0, max: 15 }).map((n) => n === 0),
  })
  .chain((h) =>
    fc
      .array(stepArb(h.device, h.size, queueCount(h.device)), { minLength: 1, maxLength: 12 })
      .map((steps) => ({ ...h, steps })),
  );

function queueCount(device: RingDevice): number {
  return device === "net" ? 2 : 1;
}

// ── the rig (one per device and transport, per worker) ─────────────────────────────

interface Rig {
  readonly device: RingDevice;
  readonly transport: TestTransport;
  readonly guard: GuardedMemory;
  readonly guest: TestGuest;
  readonly dev: VirtioDevice;
  readonly disk: MemoryDisk | null;
  readonly backend: LoopbackBackend | null;
  readonly offered: bigint;
  /** Per byte of guest RAM: what the driver wrote into a device-readable area. */
  readonly image: Uint8Array;
  /** Per byte: 1 when the driver wrote it into a device-readable area. */
  readonly roMask: Uint8Array;
  /** Per byte: 1 when the device may write it (rings, writable buffers, scratch). */
  readonly wMask: Uint8Array;
}

const rigs = new Map<string, Rig>();

function rigFor(device: RingDevice, transport: TestTransport): Rig {
  const key = `${device}/${transport}`;
  const have = rigs.get(key);
  if (have !== undefined) return have;
  const guard = new GuardedMemory(MEMORY_BYTES);
  let dev: VirtioDevice;
  let disk: MemoryDisk | null = null;
  let backend: LoopbackBackend | null = null;
  if (device === "blk") {
    disk = new MemoryDisk(DISK_BYTES);
    for (let i = 0; i < DISK_BYTES; i++) disk.bytes[i] = (i * 7 + (i >> 9)) & 0xff;
    dev = new VirtioBlkDevice({
      backend: disk,
      queueSize: 16,
      flush: true,
      discard: true,
      writeZeroes: true,
      ringPacked: true,
    });
  } else if (device === "net") {
    backend = new LoopbackBackend();
    dev = new VirtioNetDevice({ backend, queueSize: 16, mrgRxbuf: true, ringPacked: true });
  } else {
    let x = 1;
    dev = new VirtioRngDevice({
      queueSize: 16,
      ringPacked: true,
      source: (b: Uint8Array) => {
        for (let i = 0; i < b.length; i++) {
          x = (x * 1103515245 + 12345) >>> 0;
          b[i] = x >>> 24;
        }
      },
    });
  }
  const guest = testGuest(dev, { transport, memory: guard.memory });
  const rig: Rig = {
    device,
    transport,
    guard,
    guest,
    dev,
    disk,
    backend,
    offered: guest.transport.readDeviceFeatures(),
    image: new Uint8Array(MEMORY_BYTES),
    roMask: new Uint8Array(MEMORY_BYTES),
    wMask: new Uint8Array(MEMORY_BYTES),
  };
  rigs.set(key, rig);
  return rig;
}

// ── playing a case ──────────────────────────────────────────────────────────────────

function addrOf(b: BufSpec): bigint | number {
  switch (b.kind) {
    case "data":
      return DATA_BASE + (b.off % DATA_BYTES);
    case "ring":
      return b.off % TABLE_BASE;
    case "table":
      return TABLE_BASE + (b.off % 0x1000);
    case "end":
      return MEMORY_BYTES - 1 - (b.off % 64);
    case "outside":
      return MEMORY_BYTES + b.off * 16;
    case "max":
      return (1n << 64n) - 1n - BigInt(b.off);
  }
}

/** The part of `[addr, addr+len)` inside guest memory, or null. */
function clip(addr: bigint | number, len: number): MemoryRange | null {
  if (typeof addr === "bigint" || addr >= MEMORY_BYTES || len === 0) return null;
  return { addr, len: Math.min(len, MEMORY_BYTES - addr) };
}

/** What the player knows about one queue's chains, whatever the layout. */
interface Outstanding {
  /** Heads (split) or buffer IDs (packed) made available and not yet used (multiset). */
  readonly outstanding: Map<number, number>;
  outstandingCount: number;
  /** Exact writable bytes of well-formed chains by head or ID; raw steps make it loose. */
  readonly writable: Map<number, number>;
  loose: boolean;
  looseBound: number;
}

interface SplitQueueState extends Outstanding {
  readonly mock: MockSplitQueue;
  /** used.idx at the previous check. */
  seen: number;
}

interface PackedQueueState extends Outstanding {
  readonly mock: MockPackedQueue;
}

/** The queue's ring, its driver area and its device area, as the transport takes them. */
interface RingAddresses {
  readonly desc: number;
  readonly driver: number;
  readonly device: number;
}

/**
 * Plays a case on one layout. The layout-independent part (negotiation, canaries, which
 * bytes the device may write, device-readable contents) is here; the rings are the
 * subclasses'.
 */
abstract class Player {
  /** Ranges the device may write: rings and device-writable buffers. */
  readonly keep: MemoryRange[] = [{ ...SCRATCH }];
  /** Ranges written by the driver that the device must only read. */
  readonly readOnly: MemoryRange[] = [];
  /** Each queue's descriptor table (split) or descriptor ring (packed). */
  readonly descRanges: MemoryRange[] = [];
  /** Per queue: the next indirect-table slot. */
  readonly tableNext: number[] = [];
  broken = false;
  /** Set when a device-writable buffer covers ring memory. */
  ringsWritable = false;
  /**
   * Set when a device-writable buffer covers a descriptor table or an indirect table: the
   * device then rewrites, as the guest asked, the descriptors it reads next, so which
   * bytes it may write is no longer known (only writes outside guest memory are checked).
   */
  descriptorsWritable = false;
  /** One past the last ring byte. */
  ringEnd = 0;

  constructor(
    readonly rig: Rig,
    readonly c: RingCase,
  ) {}

  what(): string {
    return `${this.c.device} over ${this.c.transport}${this.c.layout === "packed" ? " (packed ring)" : ""}`;
  }

  /** The features to negotiate beyond the ring features. */
  protected abstract layoutFeatures(): bigint;
  /** Creates queue `i`'s driver-side ring; returns its ring ranges and addresses. */
  protected abstract addQueue(i: number): { ranges: MemoryRange[]; at: RingAddresses };
  /** Zeroes every ring (after the canaries were laid). */
  protected abstract clearRings(): void;
  /** Plays a ring step on queue `q`. */
  protected abstract ringStep(q: number, s: RingStep & { q: number }): void;
  /** Reads what the device published and checks it against what was made available. */
  abstract checkUsed(): void;
  /** Remembers what the device had published when it broke. */
  abstract noteBreak(): void;
  /** Throws the `model` finding when the device published anything since {@link noteBreak}. */
  abstract expectNothingSinceBreak(): void;

  setup(): void {
    const { rig, c } = this;
    const t = rig.guest.transport;
    let features = (1n << BigInt(VIRTIO_F_VERSION_1)) | this.layoutFeatures();
    if (c.eventIdx) features |= 1n << BigInt(VIRTIO_F_EVENT_IDX);
    if (c.indirect) features |= 1n << BigInt(VIRTIO_F_INDIRECT_DESC);
    if (c.device === "net" && c.mrgRxbuf) features |= 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF);
    features &= rig.offered;
    noThrow(`${this.what()}: negotiation`, () => {
      t.reset();
      unbindVirtioDriver(t);
      t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
      t.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
      t.writeDriverFeatures(features);
      t.setStatus(
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
      );
    });
    expectModel(
      rig.dev.queues[0] instanceof PackedDeviceQueue === (c.layout === "packed"),
      () => `${this.what()}: the device did not take the negotiated ring layout`,
    );
    const addresses: RingAddresses[] = [];
    for (let i = 0; i < queueCount(c.device); i++) {
      const { ranges, at } = this.addQueue(i);
      addresses.push(at);
      this.tableNext.push(0);
      this.keep.push(...ranges);
      for (const r of ranges) this.ringEnd = Math.max(this.ringEnd, r.addr + r.len);
    }
    rig.roMask.fill(0);
    rig.wMask.fill(0);
    for (const r of this.keep) rig.wMask.fill(1, r.addr, r.addr + r.len);
    // Canaries first, then the rings are zeroed and queues enabled.
    rig.guard.arm(this.keep);
    this.clearRings();
    for (const [i, at] of addresses.entries()) {
      const err = noThrow(`${this.what()}: queue setup`, () => t.setupQueue(i, c.size, at));
      expectModel(
        err === undefined,
        () => `${this.what()}: queue ${i} setup failed: ${err?.message}`,
      );
    }
    noThrow(`${this.what()}: DRIVER_OK`, () =>
      t.setStatus(
        VIRTIO_CONFIG_S_ACKNOWLEDGE |
          VIRTIO_CONFIG_S_DRIVER |
          VIRTIO_CONFIG_S_FEATURES_OK |
          VIRTIO_CONFIG_S_DRIVER_OK,
      ),
    );
    const status = t.getStatus();
    expectModel(
      (status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && (status & VIRTIO_CONFIG_S_NEEDS_RESET) === 0,
      () =>
        `${this.what()}: a fresh device did not reach DRIVER_OK (status 0x${status.toString(16)})`,
    );
  }

  /** Records `[addr, addr+len)` as device-writable. @returns `len` */
  protected markWritable(addr: bigint | number, len: number): number {
    const r = clip(addr, len);
    if (r !== null) {
      this.keep.push(r);
      this.rig.wMask.fill(1, r.addr, r.addr + r.len);
      // A writable buffer over a ring lets the device overwrite the ring as asked: the
      // used-ring model no longer holds (the canaries still do).
      if (r.addr < this.ringEnd) this.ringsWritable = true;
      const end = r.addr + r.len;
      if (
        (r.addr < DATA_BASE && end > TABLE_BASE) ||
        this.descRanges.some((d) => r.addr < d.addr + d.len && end > d.addr)
      )
        this.descriptorsWritable = true;
    }
    return len;
  }

  private fillReadable(b: BufSpec, first: boolean, step: RingStep & { k: "good" }): void {
    // Only buffers in the data area get contents; a hostile pointer (into the rings, past
    // the end) is left pointing at whatever is there.
    if (b.kind !== "data") return;
    const addr = addrOf(b) as number;
    const end = Math.min(addr + b.len, DATA_BASE + DATA_BYTES);
    if (end <= addr) return;
    const r: MemoryRange = { addr, len: end - addr };
    const mem = this.rig.guard.memory;
    const bytes = mem.slice(r.addr, r.len);
    if (!(bytes instanceof Uint8Array)) return;
    for (let i = 0; i < bytes.length; i++) bytes[i] = (r.addr + i * 13) & 0xff;
    if (first && this.c.device === "blk" && bytes.length >= 8) {
      const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      v.setUint32(0, step.type, true);
      v.setUint32(4, 0, true);
      if (bytes.length >= VIRTIO_BLK_HEADER_SIZE) {
        v.setUint32(8, step.sector, true);
        v.setUint32(12, 0, true);
      }
    }
    if (first && this.c.device === "net")
      bytes.fill(0, 0, Math.min(bytes.length, VIRTIO_NET_HDR_SIZE));
    this.noteReadOnly(r);
  }

  /**
   * A well-formed step's buffers: readable ones filled (a blk or net header first), writable
   * ones recorded. @returns the buffers and their writable bytes
   */
  protected goodBuffers(s: RingStep & { k: "good" }): {
    bufs: { addr: bigint | number; len: number; writable: boolean }[];
    writable: number;
  } {
    const bufs = [
      ...s.read.map((b) => ({ addr: addrOf(b), len: b.len, writable: false })),
      ...s.write.map((b) => ({ addr: addrOf(b), len: b.len, writable: true })),
    ];
    let writable = 0;
    for (const [i, b] of s.read.entries()) this.fillReadable(b, i === 0, s);
    for (const b of bufs) if (b.writable) writable += this.markWritable(b.addr, b.len);
    return { bufs, writable };
  }

  /** Records what the driver just wrote at `r` (device-readable: must stay as written). */
  noteReadOnly(r: MemoryRange): void {
    const bytes = this.rig.guard.memory.slice(r.addr, r.len);
    if (!(bytes instanceof Uint8Array)) return;
    this.readOnly.push(r);
    this.rig.image.set(bytes, r.addr);
    this.rig.roMask.fill(1, r.addr, r.addr + r.len);
  }

  protected tableAddr(q: number, n: number): number {
    const at = TABLE_BASE + (((q * 8 + (this.tableNext[q]!++ % 8)) * TABLE_STRIDE) % 0x1000);
    return n * 16 <= TABLE_STRIDE ? at : TABLE_BASE;
  }

  /** The raw descriptor a spec describes, its writable part recorded. */
  protected rawBuffer(d: RawDescSpec): { addr: bigint | number; len: number } {
    const addr = addrOf(d);
    if ((d.flags & VIRTQ_DESC_F_WRITE) !== 0) this.markWritable(addr, d.len);
    return { addr, len: d.len };
  }

  async step(s: RingStep): Promise<void> {
    const what = this.what();
    if (s.k === "frame") {
      const backend = this.rig.backend!;
      const frame = new Uint8Array(s.len);
      for (let i = 0; i < frame.length; i++) frame[i] = (i * 31 + s.len) & 0xff;
      if (s.bcast && frame.length >= 6) frame.fill(0xff, 0, 6);
      noThrow(`${what}: a frame from the network`, () => backend.inject(frame));
      return;
    }
    if (s.k === "kick") {
      noThrow(`${what}: kick of queue ${s.q}`, () => this.rig.guest.transport.notify(s.q));
      return;
    }
    if (s.q < this.tableNext.length) this.ringStep(s.q, s);
  }

  status(): number {
    return this.rig.guest.transport.getStatus();
  }
}

/** Adds one to `head`'s count in `o`. */
function makeOutstanding(o: Outstanding, head: number, n = 1): void {
  o.outstanding.set(head, (o.outstanding.get(head) ?? 0) + n);
  o.outstandingCount += n;
}

/**
 * Checks one used element against what was made available (§2.7.8 / §2.8.7): its head or
 * ID outstanding, its length within the chain's writable bytes (§2.7.8.1).
 */
function expectUsed(what: string, i: number, q: Outstanding, id: number, len: number): void {
  const n = q.outstanding.get(id) ?? 0;
  expectModel(
    n > 0,
    () => `${what}: queue ${i} returned ${id}, which was not outstanding (§2.7.8, §2.8.7)`,
  );
  if (n === 1) q.outstanding.delete(id);
  else q.outstanding.set(id, n - 1);
  q.outstandingCount--;
  const bound = q.loose ? q.looseBound : (q.writable.get(id) ?? 0);
  expectModel(
    len <= bound,
    () => `${what}: queue ${i} chain ${id} used length ${len} > ${bound} writable bytes (§2.7.8.1)`,
  );
}

function emptyOutstanding(): Outstanding {
  return {
    outstanding: new Map(),
    outstandingCount: 0,
    writable: new Map(),
    loose: false,
    looseBound: 0,
  };
}

/** Split rings (§2.7): descriptor table, avail ring, used ring. */
class SplitPlayer extends Player {
  readonly queues: SplitQueueState[] = [];
  private usedAtBreak: number[] = [];

  protected layoutFeatures(): bigint {
    return 0n;
  }

  protected addQueue(i: number): { ranges: MemoryRange[]; at: RingAddresses } {
    const mem = this.rig.guard.memory;
    const mock = new MockSplitQueue(mem, this.c.size, { base: i * RING_STRIDE, zero: false });
    this.queues.push({ ...emptyOutstanding(), mock, seen: 0 });
    this.descRanges.push({ addr: mock.descAddr, len: 16 * this.c.size });
    return {
      ranges: mock.ringRanges(),
      at: { desc: mock.descAddr, driver: mock.availAddr, device: mock.usedAddr },
    };
  }

  protected clearRings(): void {
    for (const q of this.queues) q.mock.clearRings();
  }

  protected ringStep(qi: number, s: RingStep & { q: number }): void {
    const q = this.queues[qi]!;
    const mock = q.mock;
    switch (s.k) {
      case "good": {
        if (mock.freeDescriptors < (s.indirect ? 1 : s.read.length + s.write.length)) return;
        if (s.read.length + s.write.length === 0) return;
        const { bufs, writable } = this.goodBuffers(s);
        const indirectTable = s.indirect ? this.tableAddr(s.q, bufs.length) : undefined;
        const head = mock.addChain(bufs, {
          makeAvailable: false,
          ...(indirectTable === undefined ? {} : { indirectTable }),
        });
        if (indirectTable !== undefined)
          this.noteReadOnly({ addr: indirectTable, len: 16 * bufs.length });
        q.writable.set(head, Math.max(q.writable.get(head) ?? 0, writable));
        q.looseBound += writable;
        mock.pushAvail(head);
        makeOutstanding(q, head & 0xffff);
        return;
      }
      case "raw": {
        q.loose = true;
        for (const [i, d] of s.descs.entries()) {
          const b = this.rawBuffer(d);
          q.looseBound += (d.flags & VIRTQ_DESC_F_WRITE) !== 0 ? d.len : 0;
          mock.writeDescriptor((s.at + i) % this.c.size, { ...b, flags: d.flags, next: d.next });
        }
        mock.pushAvail(s.head);
        makeOutstanding(q, s.head & 0xffff);
        return;
      }
      case "table": {
        q.loose = true;
        const at = this.tableAddr(s.q, s.entries.length);
        const entries: RawDescriptor[] = s.entries.map((e) => ({
          ...this.rawBuffer(e),
          flags: e.flags,
          next: e.next,
        }));
        for (const e of s.entries) q.looseBound += (e.flags & VIRTQ_DESC_F_WRITE) !== 0 ? e.len : 0;
        if (entries.length > 0) {
          mock.writeIndirectTable(at, entries);
          this.noteReadOnly({ addr: at, len: 16 * entries.length });
        }
        const len = Math.max(0, 16 * entries.length + s.lenDelta);
        if ((s.flags & VIRTQ_DESC_F_WRITE) !== 0) {
          this.markWritable(at, len);
          q.looseBound += len;
        }
        const idx = (mock.availIdx() + 3) % this.c.size;
        mock.writeDescriptor(idx, { addr: at, len, flags: s.flags & ~VIRTQ_DESC_F_NEXT, next: 0 });
        mock.pushAvail(idx);
        makeOutstanding(q, idx);
        return;
      }
      case "avail": {
        q.loose = true;
        const from = mock.availIdx();
        const to = (from + s.delta) & 0xffff;
        // Entries between the old and new index hold whatever the ring has: count them.
        const n = (to - from) & 0xffff;
        for (let k = 0; k < Math.min(n, this.c.size); k++) {
          const slot = (from + k) % this.c.size;
          const v = this.rig.guard.memory.readU16(mock.availAddr + 4 + 2 * slot);
          makeOutstanding(q, typeof v === "number" ? v : 0, Math.ceil(n / this.c.size));
        }
        mock.setAvailIdx(to);
        return;
      }
    }
  }

  checkUsed(): void {
    if (this.ringsWritable || this.descriptorsWritable) return;
    const what = this.what();
    for (const [i, q] of this.queues.entries()) {
      const now = q.mock.usedIdx();
      const moved = (now - q.seen) & 0xffff;
      q.seen = now;
      const used = q.mock.readUsed();
      expectModel(
        moved <= q.outstandingCount,
        () =>
          `${what}: queue ${i} moved used.idx by ${moved} with ${q.outstandingCount} chains outstanding (§2.7.8)`,
      );
      for (const e of used) expectUsed(what, i, q, e.id, e.len);
    }
  }

  noteBreak(): void {
    this.usedAtBreak = this.queues.map((q) => q.mock.usedIdx());
  }

  expectNothingSinceBreak(): void {
    const now = this.queues.map((q) => q.mock.usedIdx());
    expectModel(
      now.every((v, i) => v === this.usedAtBreak[i]),
      () =>
        `${this.what()}: the device published used entries after DEVICE_NEEDS_RESET (used.idx ${this.usedAtBreak.join(",")} → ${now.join(",")}); §2.1.2 / DESIGN: stop until reset`,
    );
  }
}

/**
 * Packed rings (§2.8): one descriptor ring the driver fills and the device overwrites with
 * used descriptors, and the two event suppression structures. A case step means here:
 * good = a well-formed buffer (§2.8.21.1) with a fresh buffer ID; raw = descriptors with
 * any address, length, ID and flags (AVAIL/USED bits of either lap included) at the
 * driver's next positions; table = an indirect table of raw entries; avail = the driver's
 * position and wrap counter moved by `delta` (wrap-counter games: the device must not take
 * stale descriptors, nor hang).
 */
class PackedPlayer extends Player {
  readonly queues: PackedQueueState[] = [];
  private usedAtBreak: number[] = [];

  protected layoutFeatures(): bigint {
    return 1n << BigInt(VIRTIO_F_RING_PACKED);
  }

  protected addQueue(i: number): { ranges: MemoryRange[]; at: RingAddresses } {
    const mock = new MockPackedQueue(this.rig.guard.memory, this.c.size, i * RING_STRIDE);
    this.queues.push({ ...emptyOutstanding(), mock });
    this.descRanges.push({ addr: mock.descAddr, len: 16 * this.c.size });
    return {
      ranges: mock.ringRanges(),
      at: { desc: mock.descAddr, driver: mock.driverAddr, device: mock.deviceAddr },
    };
  }

  protected clearRings(): void {
    const mem = this.rig.guard.memory;
    for (const q of this.queues) for (const r of q.mock.ringRanges()) mem.fill(r.addr, r.len, 0);
  }

  /** The AVAIL/USED bits of the driver's current lap, or the hostile flags as given. */
  private lapFlags(q: PackedQueueState, flags: number): number {
    // Mostly the current lap's bits, so the device takes the descriptor; sometimes as drawn.
    if (flags > 7) return flags;
    return (flags & 7) | MockPackedQueue.availBits(q.mock.availWrap);
  }

  protected ringStep(qi: number, s: RingStep & { q: number }): void {
    const q = this.queues[qi]!;
    const mock = q.mock;
    switch (s.k) {
      case "good": {
        const n = s.indirect ? 1 : s.read.length + s.write.length;
        if (n === 0) return;
        // A driver reuses ring slots only once it has seen them used (§2.8.21.1).
        if (!q.loose && !this.ringsWritable && !this.descriptorsWritable) this.collectUsed(qi);
        let inUse = 0;
        for (const k of mock.slotsOf.values()) inUse += k;
        if (inUse + n > this.c.size) return;
        const { bufs, writable } = this.goodBuffers(s);
        const indirectTable = s.indirect ? this.tableAddr(s.q, bufs.length) : undefined;
        const id = mock.addBuffer(bufs, indirectTable === undefined ? {} : { indirectTable });
        if (indirectTable !== undefined)
          this.noteReadOnly({ addr: indirectTable, len: 16 * bufs.length });
        q.writable.set(id, Math.max(q.writable.get(id) ?? 0, writable));
        q.looseBound += writable;
        makeOutstanding(q, id);
        return;
      }
      case "raw": {
        q.loose = true;
        const id = s.head & 0xffff;
        mock.pushRaw(
          s.descs.map((d) => {
            q.looseBound += (d.flags & VIRTQ_DESC_F_WRITE) !== 0 ? d.len : 0;
            // The ID: the step's head, or a descriptor's own `next` when it is out of range.
            return {
              ...this.rawBuffer(d),
              id: d.next >= this.c.size ? d.next : id,
              flags: this.lapFlags(q, d.flags),
            };
          }),
        );
        return;
      }
      case "table": {
        q.loose = true;
        const at = this.tableAddr(s.q, s.entries.length);
        for (const [i, e] of s.entries.entries()) {
          q.looseBound += (e.flags & VIRTQ_DESC_F_WRITE) !== 0 ? e.len : 0;
          mock.writeAt(at + 16 * i, { ...this.rawBuffer(e), id: e.next, flags: e.flags });
        }
        if (s.entries.length > 0) this.noteReadOnly({ addr: at, len: 16 * s.entries.length });
        const len = Math.max(0, 16 * s.entries.length + s.lenDelta);
        if ((s.flags & VIRTQ_DESC_F_WRITE) !== 0) {
          this.markWritable(at, len);
          q.looseBound += len;
        }
        mock.pushRaw([
          { addr: at, len, id: qi, flags: this.lapFlags(q, s.flags & ~VIRTQ_DESC_F_NEXT) },
        ]);
        return;
      }
      case "avail": {
        q.loose = true;
        const next = mock.nextAvail + (s.delta & 0x7fff);
        mock.availWrap ^= (Math.floor(next / this.c.size) + (s.delta >>> 15)) & 1;
        mock.nextAvail = next % this.c.size;
        return;
      }
    }
  }

  /** Reads the used descriptors of a queue that only had well-formed buffers, and checks them. */
  private collectUsed(qi: number): void {
    const q = this.queues[qi]!;
    // At most one used descriptor per ring slot since the last look.
    for (let k = 0; k < this.c.size; k++) {
      const e = q.mock.readUsed();
      if (e === null) return;
      expectUsed(this.what(), qi, q, e.id, e.len);
    }
  }

  checkUsed(): void {
    // After a raw step the driver no longer knows where each chain ends, so it cannot tell
    // a used descriptor from one it wrote itself: only well-formed queues are checked.
    if (this.ringsWritable || this.descriptorsWritable) return;
    for (const [i, q] of this.queues.entries()) if (!q.loose) this.collectUsed(i);
  }

  /** Used elements the device added per queue (its own count: the ring is shared). */
  private usedCounts(): number[] {
    return this.queues.map((_, i) => this.rig.dev.queues[i]?.stats.used ?? 0);
  }

  noteBreak(): void {
    this.usedAtBreak = this.usedCounts();
  }

  expectNothingSinceBreak(): void {
    const now = this.usedCounts();
    expectModel(
      now.every((v, i) => v === this.usedAtBreak[i]),
      () =>
        `${this.what()}: the device returned buffers after DEVICE_NEEDS_RESET (used ${this.usedAtBreak.join(",")} → ${now.join(",")}); §2.1.2 / DESIGN: stop until reset`,
    );
  }
}

/** Plays one ring case (see the module comment for the checks). */
export async function runRingCase(c: RingCase): Promise<void> {
  const rig = rigFor(c.device, c.transport);
  rig.guest.bus.resetStats();
  const p: Player = c.layout === "packed" ? new PackedPlayer(rig, c) : new SplitPlayer(rig, c);
  p.setup();
  for (const s of c.steps) {
    await p.step(s);
    if (!p.broken && (p.status() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) {
      await tick();
      p.checkUsed();
      p.broken = true;
      p.noteBreak();
    }
  }
  await tick();
  p.checkUsed();
  const what = p.what();
  expectNoBusFaults(rig.guest.bus, what);
  if (p.descriptorsWritable) rig.guard.checkOutside(what);
  else {
    rig.guard.check(what, p.readOnly);
    checkReadOnly(p);
  }
  if (!p.broken && (p.status() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) p.broken = true;
  else if (p.broken && !p.ringsWritable && !p.descriptorsWritable) p.expectNothingSinceBreak();
  if (p.broken || c.serveCheck) {
    const probe: ServeProbe =
      c.device === "blk"
        ? { kind: "blk", sector: 3, expected: rig.disk!.bytes.slice(3 * 512, 4 * 512) }
        : c.device === "rng"
          ? { kind: "rng", bytes: 64 }
          : { kind: "net" };
    await expectServesAfterReset(
      { transport: rig.guest.transport, memory: rig.guard.memory, scratch: SCRATCH },
      probe,
      what,
    );
    expectNoBusFaults(rig.guest.bus, `${what} (serve check)`);
  }
}

/** Device-readable buffers and indirect tables must hold what the driver wrote. */
function checkReadOnly(p: Player): void {
  const { image, roMask, wMask } = p.rig;
  for (const r of p.readOnly) {
    const bytes = p.rig.guard.memory.slice(r.addr, r.len);
    if (!(bytes instanceof Uint8Array)) continue;
    for (let i = 0; i < bytes.length; i++) {
      const a = r.addr + i;
      if (roMask[a] === 1 && wMask[a] === 0 && bytes[i] !== image[a]) {
        throw new FuzzFinding(
          "canary",
          `${p.what()}: wrote into a device-readable buffer or indirect table at 0x${a.toString(16)} (§2.7.4: the device must not write it)`,
        );
      }
    }
  }
}

/** The `ring` target. */
export const ringTarget: FuzzTarget<RingCase> = {
  name: "ring",
  description:
    "hostile split rings for virtio-blk, virtio-net and virtio-rng through virtio-mmio and virtio-pci",
  kind: "ring",
  weight: 6,
  arbitrary: ringCaseArb,
  run: runRingCase,
};

/** The `ring-packed` target: the same cases on packed rings (§2.8). */
export const ringPackedTarget: FuzzTarget<RingCase> = {
  name: "ring-packed",
  description:
    "hostile packed rings (IDs, wrap counters, chains, indirect tables) for virtio-blk, virtio-net and virtio-rng through virtio-mmio and virtio-pci",
  kind: "ring",
  weight: 3,
  arbitrary: ringCaseArb.map((c): RingCase => ({ ...c, layout: "packed" })),
  run: runRingCase,
};
