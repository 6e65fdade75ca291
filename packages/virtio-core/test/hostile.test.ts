/**
 * One negative test per hostile-guest check of the device side (DESIGN.md, "A hostile
 * guest"; virtio 1.2 §2.7). Every test asserts the error code the queue reports AND that
 * no guest byte outside the rings (and the tables the test itself wrote) changed.
 */
import { GuestMemory } from "@pvkit/platform";
import {
  type DescriptorChain,
  DeviceQueue,
  featureMask,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VirtioDeviceBase,
  type VirtioError,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import {
  checkCanary,
  fillCanary,
  type MemoryRange,
  MockSplitQueue,
} from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

const MEM = 0x10000;
const DATA = 0x8000;
const TABLE = 0x6000;
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

interface HostileCase {
  /** Queue size (default 8). */
  size?: number;
  /** VIRTIO_F_INDIRECT_DESC negotiated (default true). */
  indirect?: boolean;
  /** VIRTIO_F_EVENT_IDX negotiated (default true: the device then writes avail_event too). */
  eventIdx?: boolean;
  /** Guest memory (default 64 KiB flat). */
  memory?: () => GuestMemory;
  /** Writes the hostile ring; returns extra ranges it wrote (indirect tables) to keep out of the canary. */
  build: (mock: MockSplitQueue) => MemoryRange[] | undefined;
  /** Well-formed chains the build made available before the bad one. */
  validBefore?: number;
}

interface HostileResult {
  mem: GuestMemory;
  mock: MockSplitQueue;
  q: DeviceQueue;
  error: VirtioError;
  served: DescriptorChain[];
}

/**
 * Builds the case, fills every other byte with a canary, drains the queue, and checks:
 * exactly `validBefore` chains, then exactly one error with `code`, canary intact, the
 * descriptor table and avail ring never written, and no re-parse afterwards.
 */
function expectCorruption(code: VirtioErrorCode, c: HostileCase): HostileResult {
  const mem = c.memory?.() ?? GuestMemory.create(MEM);
  const size = c.size ?? 8;
  const mock = new MockSplitQueue(mem, size);
  const errors: VirtioError[] = [];
  const q = new DeviceQueue(0, size, (e) => errors.push(e));
  expect(
    mock.configure(q, { indirect: c.indirect ?? true, eventIdx: c.eventIdx ?? true }),
  ).toBeUndefined();
  const keep = [...mock.ringRanges(), ...(c.build(mock) ?? [])];
  fillCanary(mem, keep);
  const driverArea = [mock.ringRanges()[0]!, mock.ringRanges()[1]!, ...keep.slice(3)];
  const before = driverArea.map((r) => (mem.slice(r.addr, r.len) as Uint8Array).slice());

  const served: DescriptorChain[] = [];
  let calls = 0;
  for (; calls < size + 2; calls++) {
    const chain = q.popChain();
    if (chain === null) break;
    served.push(chain);
  }
  expect(calls).toBeLessThanOrEqual(size + 1);
  expect(served).toHaveLength(c.validBefore ?? 0);
  expect(q.error?.code).toBe(code);
  expect(errors).toHaveLength(1);
  expect(errors[0]).toBe(q.error);
  expect(q.error!.queue).toBe(0);
  expect(q.error!.message.length).toBeGreaterThan(10);
  expect(q.isActive).toBe(false);

  // Nothing outside the rings (and the tables the test wrote) changed; the device never
  // wrote the descriptor table, the avail ring or an indirect table.
  expect(checkCanary(mem, keep)).toEqual([]);
  driverArea.forEach((r, i) => {
    expect(sameBytes(mem.slice(r.addr, r.len) as Uint8Array, before[i]!)).toBe(true);
  });

  // Stopped for good: no re-parse of the bad head, not even of avail.idx.
  const reads = q.stats.availReads;
  const popped = q.stats.popped;
  mock.addChain([{ addr: DATA, len: 4 }], { descriptors: [size - 1] });
  for (let i = 0; i < 3; i++) expect(q.popChain()).toBeNull();
  expect(q.hasAvailable()).toBe(false);
  expect(q.stats.availReads).toBe(reads);
  expect(q.stats.popped).toBe(popped);
  expect(errors).toHaveLength(1);
  // Chains popped before the corruption can still be returned (no leaked head).
  for (const ch of served) expect(q.addUsed(ch.head, 0)).toBe(true);
  return { mem, mock, q, error: q.error!, served };
}

/** A build step that writes only ring entries or descriptors (no extra ranges to keep). */
function only(write: (m: MockSplitQueue) => unknown): (m: MockSplitQueue) => undefined {
  return (m) => {
    write(m);
    return undefined;
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A ring whose `enable()` must fail: checks the code and that memory stayed untouched. */
function expectRingRejected(
  code: VirtioErrorCode,
  size: number,
  layout: { desc?: number; avail?: number; used?: number },
  memory: GuestMemory = GuestMemory.create(MEM),
  maxSize = 8,
): VirtioError {
  const mock = new MockSplitQueue(memory, size, { ...layout, zero: false });
  fillCanary(memory, []);
  const errors: VirtioError[] = [];
  const q = new DeviceQueue(0, maxSize, (e) => errors.push(e));
  const err = mock.configure(q, { indirect: true, eventIdx: true });
  expect(err?.code).toBe(code);
  expect(errors).toEqual([err]);
  expect(q.ready).toBe(false);
  expect(q.isActive).toBe(false);
  expect(q.popChain()).toBeNull();
  q.disableNotification();
  expect(q.enableNotification()).toBe(false);
  expect(q.needsNotification()).toBe(false);
  expect(q.addUsed(0, 0)).toBe(false);
  expect(checkCanary(memory, [])).toEqual([]);
  return err!;
}

describe("hostile guest: available ring", () => {
  it("avail.idx jumping more than the queue size ahead → AVAIL_IDX_JUMP", () => {
    expectCorruption(VirtioErrorCode.AVAIL_IDX_JUMP, {
      build: (m) => {
        for (let i = 0; i < 8; i++) m.setAvailEntry(i, i);
        m.setAvailIdx(9);
        return undefined;
      },
    });
  });

  it("avail.idx of 0xffff ahead of the device (a decrement) → AVAIL_IDX_JUMP", () => {
    expectCorruption(VirtioErrorCode.AVAIL_IDX_JUMP, {
      build: (m) => {
        m.addChain([{ addr: DATA, len: 4 }]); // a valid head in slot 0 is never popped
        m.setAvailIdx(0xffff);
        return undefined;
      },
    });
  });

  it("avail.idx decremented after the device consumed a buffer → AVAIL_IDX_JUMP", () => {
    const mem = GuestMemory.create(MEM);
    const mock = new MockSplitQueue(mem, 8);
    const errors: VirtioError[] = [];
    const q = new DeviceQueue(0, 8, (e) => errors.push(e));
    mock.configure(q);
    mock.addChain([{ addr: DATA, len: 4 }]);
    mock.addChain([{ addr: DATA, len: 4 }]);
    expect(q.popChain()).not.toBeNull();
    expect(q.popChain()).not.toBeNull();
    fillCanary(mem, mock.ringRanges());
    mock.setAvailIdx(1); // 2 → 1: 0xffff buffers "available"
    expect(q.popChain()).toBeNull();
    expect(q.error?.code).toBe(VirtioErrorCode.AVAIL_IDX_JUMP);
    expect(errors).toHaveLength(1);
    expect(checkCanary(mem, mock.ringRanges())).toEqual([]);
  });

  it("a jump of exactly the queue size is legal (boundary)", () => {
    const mem = GuestMemory.create(MEM);
    const mock = new MockSplitQueue(mem, 8);
    const q = new DeviceQueue(0, 8);
    mock.configure(q);
    for (let i = 0; i < 8; i++) mock.addChain([{ addr: DATA + i, len: 1 }]);
    let n = 0;
    while (q.popChain() !== null) n++;
    expect(n).toBe(8);
    expect(q.error).toBeNull();
  });

  it("head ≥ queue size → HEAD_OUT_OF_RANGE", () => {
    expectCorruption(VirtioErrorCode.HEAD_OUT_OF_RANGE, {
      validBefore: 1,
      build: (m) => {
        m.addChain([{ addr: DATA, len: 4 }]);
        m.pushAvail(8);
        return undefined;
      },
    });
    expectCorruption(VirtioErrorCode.HEAD_OUT_OF_RANGE, {
      build: only((m) => m.pushAvail(0xffff)),
    });
  });

  it("a head made available again while in flight → HEAD_IN_USE (and it can still be returned)", () => {
    const { q, served, mock } = expectCorruption(VirtioErrorCode.HEAD_IN_USE, {
      validBefore: 1,
      build: (m) => {
        const head = m.addChain([{ addr: DATA, len: 4, writable: true }]);
        m.pushAvail(head);
        return undefined;
      },
    });
    // expectCorruption returned the in-flight head; it reaches the used ring exactly once.
    q.publishUsed();
    expect(mock.readUsed()).toEqual([{ id: served[0]!.head, len: 0 }]);
  });
});

describe("hostile guest: descriptor chains", () => {
  it("next ≥ queue size → NEXT_OUT_OF_RANGE", () => {
    expectCorruption(VirtioErrorCode.NEXT_OUT_OF_RANGE, {
      build: (m) => {
        m.writeDescriptor(0, { addr: DATA, len: 4, flags: NEXT, next: 8 });
        m.pushAvail(0);
        return undefined;
      },
    });
  });

  it("a loop (0 → 1 → 2 → 0) → CHAIN_TOO_LONG", () => {
    expectCorruption(VirtioErrorCode.CHAIN_TOO_LONG, {
      build: (m) => {
        m.writeDescriptor(0, { addr: DATA, len: 4, flags: NEXT, next: 1 });
        m.writeDescriptor(1, { addr: DATA, len: 4, flags: NEXT, next: 2 });
        m.writeDescriptor(2, { addr: DATA, len: 4, flags: NEXT, next: 0 });
        m.pushAvail(0);
        return undefined;
      },
    });
  });

  it("a descriptor pointing at itself, with zero length → CHAIN_TOO_LONG", () => {
    expectCorruption(VirtioErrorCode.CHAIN_TOO_LONG, {
      size: 32768,
      memory: () => GuestMemory.create(0x100000),
      build: (m) => {
        m.writeDescriptor(5, { addr: 0, len: 0, flags: NEXT, next: 5 });
        m.pushAvail(5);
        return undefined;
      },
    });
  });

  it("a chain longer than the queue size (size + 1 descriptors) → CHAIN_TOO_LONG", () => {
    expectCorruption(VirtioErrorCode.CHAIN_TOO_LONG, {
      build: (m) => {
        // 0 → 1 → … → 7 → 0: the ninth descriptor is one too many.
        for (let i = 0; i < 8; i++)
          m.writeDescriptor(i, { addr: DATA + i, len: 1, flags: NEXT, next: (i + 1) % 8 });
        m.pushAvail(0);
        return undefined;
      },
    });
  });

  it("a loop inside an indirect table → CHAIN_TOO_LONG", () => {
    expectCorruption(VirtioErrorCode.CHAIN_TOO_LONG, {
      build: (m) => {
        const len = m.writeIndirectTable(TABLE, [
          { addr: DATA, len: 4, flags: NEXT, next: 1 },
          { addr: DATA, len: 4, flags: NEXT, next: 0 },
        ]);
        m.writeDescriptor(0, { addr: TABLE, len, flags: INDIRECT });
        m.pushAvail(0);
        return [{ addr: TABLE, len }];
      },
    });
  });

  it("next ≥ indirect table length → NEXT_OUT_OF_RANGE", () => {
    expectCorruption(VirtioErrorCode.NEXT_OUT_OF_RANGE, {
      build: (m) => {
        // Entry 2 exists in memory but is outside the 2-entry table.
        const len = m.writeIndirectTable(TABLE, [
          { addr: DATA, len: 4, flags: NEXT, next: 2 },
          { addr: DATA, len: 4 },
          { addr: DATA, len: 4 },
        ]);
        m.writeDescriptor(0, { addr: TABLE, len: 32, flags: INDIRECT });
        m.pushAvail(0);
        return [{ addr: TABLE, len }];
      },
    });
  });

  it("device-readable after device-writable → READABLE_AFTER_WRITABLE", () => {
    expectCorruption(VirtioErrorCode.READABLE_AFTER_WRITABLE, {
      build: (m) => {
        m.addChain([
          { addr: DATA, len: 4 },
          { addr: DATA + 16, len: 4, writable: true },
          { addr: DATA + 32, len: 4 },
        ]);
        return undefined;
      },
    });
  });

  it("readable after writable, even with zero length or inside an indirect table", () => {
    expectCorruption(VirtioErrorCode.READABLE_AFTER_WRITABLE, {
      build: (m) => {
        m.addChain([
          { addr: DATA, len: 4, writable: true },
          { addr: DATA, len: 0 },
        ]);
        return undefined;
      },
    });
    expectCorruption(VirtioErrorCode.READABLE_AFTER_WRITABLE, {
      build: (m) => {
        m.addChain(
          [
            { addr: DATA, len: 4, writable: true },
            { addr: DATA + 8, len: 4 },
          ],
          { indirectTable: TABLE },
        );
        return [{ addr: TABLE, len: 32 }];
      },
    });
  });

  it("chain total length above 2^32 bytes → CHAIN_TOO_BIG", () => {
    // 2 + (2^32 - 1) bytes: the second descriptor's length alone breaks the limit.
    expectCorruption(VirtioErrorCode.CHAIN_TOO_BIG, {
      build: (m) => {
        m.writeDescriptor(0, { addr: DATA, len: 2, flags: NEXT, next: 1 });
        m.writeDescriptor(1, { addr: DATA, len: 0xffff_ffff, flags: 0 });
        m.pushAvail(0);
        return undefined;
      },
    });
  });

  it("chain total above 2^32 made only of in-range buffers → CHAIN_TOO_BIG", () => {
    // 4097 descriptors, each the whole 1 MiB of guest memory: 4097 MiB > 4 GiB, every
    // single buffer valid — only the sum is wrong (§2.7.5.2).
    expectCorruption(VirtioErrorCode.CHAIN_TOO_BIG, {
      size: 8192,
      memory: () => GuestMemory.create(0x100000),
      build: (m) => {
        for (let i = 0; i < 4097; i++)
          m.writeDescriptor(i, { addr: 0, len: 0x100000, flags: NEXT, next: i + 1 });
        m.pushAvail(0);
        return undefined;
      },
    });
  });
});

describe("hostile guest: indirect descriptors (§2.7.5.3)", () => {
  it("INDIRECT inside an indirect table → NESTED_INDIRECT", () => {
    expectCorruption(VirtioErrorCode.NESTED_INDIRECT, {
      build: (m) => {
        const len = m.writeIndirectTable(TABLE, [
          { addr: DATA, len: 4, flags: NEXT, next: 1 },
          { addr: TABLE, len: 32, flags: INDIRECT },
        ]);
        m.writeDescriptor(0, { addr: TABLE, len, flags: INDIRECT });
        m.pushAvail(0);
        return [{ addr: TABLE, len }];
      },
    });
  });

  it("INDIRECT together with NEXT → INDIRECT_WITH_NEXT", () => {
    expectCorruption(VirtioErrorCode.INDIRECT_WITH_NEXT, {
      build: (m) => {
        const len = m.writeIndirectTable(TABLE, [{ addr: DATA, len: 4 }]);
        m.writeDescriptor(0, { addr: TABLE, len, flags: INDIRECT | NEXT, next: 1 });
        m.writeDescriptor(1, { addr: DATA, len: 4 });
        m.pushAvail(0);
        return [{ addr: TABLE, len }];
      },
    });
  });

  it("indirect length not a multiple of 16 → BAD_INDIRECT_LENGTH", () => {
    expectCorruption(VirtioErrorCode.BAD_INDIRECT_LENGTH, {
      build: (m) => {
        m.writeIndirectTable(TABLE, [
          { addr: DATA, len: 4 },
          { addr: DATA, len: 4 },
        ]);
        m.writeDescriptor(0, { addr: TABLE, len: 24, flags: INDIRECT });
        m.pushAvail(0);
        return [{ addr: TABLE, len: 32 }];
      },
    });
  });

  it("indirect length zero → BAD_INDIRECT_LENGTH", () => {
    expectCorruption(VirtioErrorCode.BAD_INDIRECT_LENGTH, {
      build: (m) => {
        m.writeDescriptor(0, { addr: TABLE, len: 0, flags: INDIRECT });
        m.pushAvail(0);
        return undefined;
      },
    });
  });

  it("indirect table with more entries than the queue size → INDIRECT_TOO_LONG", () => {
    expectCorruption(VirtioErrorCode.INDIRECT_TOO_LONG, {
      build: (m) => {
        const table = Array.from({ length: 9 }, (_, i) => ({
          addr: DATA,
          len: 1,
          flags: i < 8 ? NEXT : 0,
          next: i + 1,
        }));
        const len = m.writeIndirectTable(TABLE, table);
        m.writeDescriptor(0, { addr: TABLE, len, flags: INDIRECT });
        m.pushAvail(0);
        return [{ addr: TABLE, len }];
      },
    });
  });

  it("INDIRECT without VIRTIO_F_INDIRECT_DESC → INDIRECT_NOT_NEGOTIATED", () => {
    expectCorruption(VirtioErrorCode.INDIRECT_NOT_NEGOTIATED, {
      indirect: false,
      build: (m) => {
        m.addChain([{ addr: DATA, len: 4 }], { indirectTable: TABLE });
        return [{ addr: TABLE, len: 16 }];
      },
    });
  });

  it("indirect table outside guest memory → BUFFER_OUT_OF_RANGE", () => {
    expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
      build: (m) => {
        m.writeDescriptor(0, { addr: MEM - 16, len: 32, flags: INDIRECT });
        m.pushAvail(0);
        return undefined;
      },
    });
  });
});

describe("hostile guest: buffer addresses", () => {
  it("buffer past the end of guest memory → BUFFER_OUT_OF_RANGE", () => {
    expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
      validBefore: 1,
      build: (m) => {
        m.addChain([{ addr: MEM - 4, len: 4 }]); // the last 4 bytes: fine
        m.addChain([{ addr: MEM - 4, len: 5, writable: true }]);
        return undefined;
      },
    });
    expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
      build: only((m) => m.addChain([{ addr: 0x1_0000_0000n, len: 1 }])),
    });
  });

  it("buffer in a hole between regions, or running into one → BUFFER_OUT_OF_RANGE", () => {
    const holey = (): GuestMemory =>
      new GuestMemory([
        { base: 0, size: 0x8000 },
        { base: 0x10000, size: 0x8000 },
      ]);
    expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
      memory: holey,
      validBefore: 1,
      build: (m) => {
        m.addChain([{ addr: 0x10000, len: 0x8000 }]);
        m.addChain([{ addr: 0xc000, len: 16 }]);
        return undefined;
      },
    });
    expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
      memory: holey,
      build: only((m) => m.addChain([{ addr: 0x7ff0, len: 0x20, writable: true }])),
    });
  });

  it("address + length overflowing 2^53, or a 64-bit address ≥ 2^53 → BUFFER_OUT_OF_RANGE", () => {
    for (const [addr, len] of [
      [2 ** 53 - 8, 16],
      [2 ** 53 - 1, 2],
      [2n ** 53n, 1],
      [0xffff_ffff_ffff_f000n, 0x1000],
      [0xffff_ffff_ffff_ffffn, 2],
      [0x8000_0000_0000_8000n, 4], // low word is in memory; the high word is not ignored
    ] as const) {
      expectCorruption(VirtioErrorCode.BUFFER_OUT_OF_RANGE, {
        build: only((m) => m.addChain([{ addr, len }])),
      });
    }
  });
});

describe("hostile guest: ring placement and size (enable)", () => {
  it("used ring outside guest memory → RING_OUT_OF_RANGE", () => {
    expectRingRejected(VirtioErrorCode.RING_OUT_OF_RANGE, 8, { used: MEM - 8 });
    expectRingRejected(VirtioErrorCode.RING_OUT_OF_RANGE, 8, { used: 2 ** 40 });
  });

  it("descriptor table outside guest memory → RING_OUT_OF_RANGE", () => {
    expectRingRejected(VirtioErrorCode.RING_OUT_OF_RANGE, 8, {
      desc: MEM - 64,
      avail: 0x100,
      used: 0x200,
    });
    expectRingRejected(VirtioErrorCode.RING_OUT_OF_RANGE, 8, {
      desc: 2 ** 53 - 16,
      avail: 0x100,
      used: 0x200,
    });
  });

  it("available ring outside guest memory or in a hole → RING_OUT_OF_RANGE", () => {
    expectRingRejected(VirtioErrorCode.RING_OUT_OF_RANGE, 8, {
      desc: 0,
      avail: MEM - 10,
      used: 0x200,
    });
    const holey = new GuestMemory([
      { base: 0, size: 0x1000 },
      { base: 0x2000, size: 0x1000 },
    ]);
    expectRingRejected(
      VirtioErrorCode.RING_OUT_OF_RANGE,
      8,
      { desc: 0, avail: 0x1000, used: 0x200 },
      holey,
    );
    expectRingRejected(
      VirtioErrorCode.RING_OUT_OF_RANGE,
      8,
      { desc: 0xfc0, avail: 0x2000, used: 0x2100 },
      holey,
    );
  });

  it("misaligned rings → RING_MISALIGNED", () => {
    expectRingRejected(VirtioErrorCode.RING_MISALIGNED, 8, { desc: 8, avail: 0x100, used: 0x200 });
    expectRingRejected(VirtioErrorCode.RING_MISALIGNED, 8, { desc: 0, avail: 0x101, used: 0x200 });
    expectRingRejected(VirtioErrorCode.RING_MISALIGNED, 8, { desc: 0, avail: 0x100, used: 0x202 });
  });

  it("queue size not a power of two, zero, or above the maximum → BAD_QUEUE_SIZE", () => {
    expectRingRejected(VirtioErrorCode.BAD_QUEUE_SIZE, 3, {});
    expectRingRejected(VirtioErrorCode.BAD_QUEUE_SIZE, 6, {});
    expectRingRejected(VirtioErrorCode.BAD_QUEUE_SIZE, 0, {});
    expectRingRejected(VirtioErrorCode.BAD_QUEUE_SIZE, 16, {}); // max is 8
    expectRingRejected(VirtioErrorCode.BAD_QUEUE_SIZE, 65536, {}, GuestMemory.create(MEM), 32768);
  });
});

describe("hostile guest: recovery", () => {
  it("after corruption popChain returns null until reset; after reset the queue works again", () => {
    const { mem, q, error } = expectCorruption(VirtioErrorCode.HEAD_OUT_OF_RANGE, {
      build: only((m) => m.pushAvail(100)),
    });
    for (let i = 0; i < 100; i++) expect(q.popChain()).toBeNull();
    expect(q.error).toBe(error);
    q.reset();
    expect(q.error).toBeNull();
    const mock = new MockSplitQueue(mem, 8);
    expect(mock.configure(q, { eventIdx: true })).toBeUndefined();
    const head = mock.addChain([{ addr: DATA, len: 8, writable: true }]);
    const c = q.popChain();
    expect(c?.head).toBe(head);
    expect(q.addUsed(head, 8)).toBe(true);
    expect(q.needsNotification()).toBe(true);
    expect(mock.readUsed()).toEqual([{ id: head, len: 8 }]);
  });
});

// ── through a device: NEEDS_RESET and the config interrupt ────────────────────────────

/** A minimal device: serves every chain by filling its writable bytes with 0x5a. */
class EchoDevice extends VirtioDeviceBase {
  constructor(size: number) {
    super({ deviceId: 0x7f, queueSizes: [size] });
  }
  protected onQueueNotify(_index: number, queue: DeviceQueue): void {
    this.serveQueue(queue, (chain) => {
      const w = chain.writer;
      while (w.writeU8(0x5a)) {}
      return w.bytesWritten;
    });
  }
}

interface DeviceRig {
  mem: GuestMemory;
  mock: MockSplitQueue;
  dev: EchoDevice;
  config: number;
  used: number;
  needsReset: VirtioError[];
}

function liveDevice(): DeviceRig {
  const mem = GuestMemory.create(MEM);
  const dev = new EchoDevice(8);
  const rig: DeviceRig = {
    mem,
    mock: new MockSplitQueue(mem, 8),
    dev,
    config: 0,
    used: 0,
    needsReset: [],
  };
  dev.bind(mem, {
    signalConfig: () => rig.config++,
    signalUsed: () => rig.used++,
  });
  dev.on("needsReset", (e) => rig.needsReset.push(e));
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  const f = featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC);
  dev.writeDriverFeatures(0, Number(f & 0xffff_ffffn));
  dev.writeDriverFeatures(1, Number(f >> 32n));
  const s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
  dev.setStatus(s);
  expect(dev.status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(VIRTIO_CONFIG_S_FEATURES_OK);
  rig.mock.applyLayout(dev.queues[0]!);
  dev.enableQueue(0);
  dev.setStatus(s | VIRTIO_CONFIG_S_DRIVER_OK);
  expect(dev.isLive).toBe(true);
  return rig;
}

describe("hostile guest through VirtioDeviceBase: NEEDS_RESET + one config interrupt", () => {
  const cases: Array<[VirtioErrorCode, (m: MockSplitQueue) => MemoryRange[] | undefined]> = [
    [VirtioErrorCode.HEAD_OUT_OF_RANGE, only((m) => m.pushAvail(9))],
    [VirtioErrorCode.AVAIL_IDX_JUMP, only((m) => m.setAvailIdx(m.availIdx() + 9))],
    [
      VirtioErrorCode.CHAIN_TOO_LONG,
      (m) => {
        m.writeDescriptor(6, { addr: DATA, len: 1, flags: NEXT | WRITE, next: 7 });
        m.writeDescriptor(7, { addr: DATA, len: 1, flags: NEXT | WRITE, next: 6 });
        m.pushAvail(6);
        return undefined;
      },
    ],
    [
      VirtioErrorCode.NESTED_INDIRECT,
      (m) => {
        m.writeIndirectTable(TABLE, [{ addr: TABLE, len: 16, flags: INDIRECT }]);
        m.writeDescriptor(6, { addr: TABLE, len: 16, flags: INDIRECT });
        m.pushAvail(6);
        return [{ addr: TABLE, len: 16 }];
      },
    ],
    [
      VirtioErrorCode.BUFFER_OUT_OF_RANGE,
      only((m) => m.addChain([{ addr: MEM, len: 1, writable: true }])),
    ],
    [
      VirtioErrorCode.READABLE_AFTER_WRITABLE,
      only((m) =>
        m.addChain([
          { addr: DATA + 0x100, len: 4, writable: true },
          { addr: DATA + 0x200, len: 4 },
        ]),
      ),
    ],
  ];

  it.each(cases)("%s", (code, build) => {
    const rig = liveDevice();
    const { mem, mock, dev } = rig;
    // One good request first: served and returned; then the bad one stops the device.
    const good = mock.addChain([
      { addr: DATA, len: 4 },
      { addr: DATA + 0x10, len: 6, writable: true },
    ]);
    dev.notifyQueue(0);
    expect(rig.used).toBe(1);
    const keep = [...mock.ringRanges(), { addr: DATA + 0x10, len: 6 }, ...(build(mock) ?? [])];
    fillCanary(mem, keep);
    expect(rig.config).toBe(0);
    dev.notifyQueue(0);
    expect(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.isLive).toBe(false);
    expect(rig.config).toBe(1);
    expect(rig.needsReset.map((e) => e.code)).toEqual([code]);
    expect(dev.queues[0]!.error?.code).toBe(code);
    // The good request was completed and the driver told about it.
    expect(mock.readUsed()).toEqual([{ id: good, len: 6 }]);
    expect(rig.used).toBe(1);
    expect([...(mem.slice(DATA + 0x10, 6) as Uint8Array)]).toEqual(Array(6).fill(0x5a));
    expect(checkCanary(mem, keep)).toEqual([]);

    // More notifications, more buffers: nothing happens, no second config interrupt.
    mock.addChain([{ addr: DATA + 0x400, len: 4, writable: true }], { descriptors: [3] });
    for (let i = 0; i < 5; i++) dev.notifyQueue(0);
    expect(rig.config).toBe(1);
    expect(rig.used).toBe(1);
    expect(mock.usedIdx()).toBe(1);
    expect(checkCanary(mem, keep)).toEqual([]);
    // The driver writing NEEDS_RESET away is ignored (§2.1.2: it is the device's bit).
    dev.setStatus(dev.status & ~VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);

    // Reset (status 0) and re-initialise: the device works again.
    dev.setStatus(0);
    expect(dev.status).toBe(0);
    expect(dev.queues[0]!.error).toBeNull();
    const again = liveDeviceAgain(rig);
    expect(again).toEqual([{ id: 0, len: 4 }]);
    expect(rig.config).toBe(1);
  });

  /** Re-runs the init sequence on the same device and serves one request. */
  function liveDeviceAgain(rig: DeviceRig): unknown {
    const { dev, mem } = rig;
    const mock = new MockSplitQueue(mem, 8);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev.writeDriverFeatures(1, 1); // VERSION_1 only
    dev.setStatus(
      VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    mock.applyLayout(dev.queues[0]!);
    dev.enableQueue(0);
    dev.setStatus(
      VIRTIO_CONFIG_S_ACKNOWLEDGE |
        VIRTIO_CONFIG_S_DRIVER |
        VIRTIO_CONFIG_S_FEATURES_OK |
        VIRTIO_CONFIG_S_DRIVER_OK,
    );
    mock.addChain([{ addr: DATA + 0x800, len: 4, writable: true }]);
    dev.notifyQueue(0);
    return mock.readUsed();
  }

  it("a bad ring at enable time sets NEEDS_RESET without a config interrupt before DRIVER_OK", () => {
    const mem = GuestMemory.create(MEM);
    const dev = new EchoDevice(8);
    let config = 0;
    dev.bind(mem, { signalConfig: () => config++, signalUsed: () => {} });
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const q = dev.queues[0]!;
    q.size = 5;
    dev.enableQueue(0);
    expect(q.error?.code).toBe(VirtioErrorCode.BAD_QUEUE_SIZE);
    expect(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(config).toBe(0); // §2.1.2: the notification is only owed once DRIVER_OK is set
  });
});
