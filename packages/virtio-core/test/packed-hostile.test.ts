/**
 * Hostile-guest parity for the packed ring (§2.8): every device-side check the split ring
 * has (test/hostile.test.ts) in its packed form. Each case asserts the error code, that
 * nothing outside the ring and the tables the test wrote changed (canary), that the queue
 * stays stopped, and — through a device — NEEDS_RESET with one config interrupt.
 */
import { GuestMemory } from "@pvkit/platform";
import {
  type DescriptorChain,
  type DeviceVirtqueue,
  featureMask,
  PackedDeviceQueue,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VirtioDeviceBase,
  type VirtioError,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import {
  checkCanary,
  fillCanary,
  type MemoryRange,
  MockPackedQueue,
} from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

const MEM = 0x10000;
const DATA = 0x8000;
const TABLE = 0x6000;
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;
const A1 = VIRTQ_DESC_F_AVAIL; // available in lap 1

type Build = (m: MockPackedQueue) => MemoryRange[] | undefined;

interface Case {
  size?: number;
  indirect?: boolean;
  memory?: () => GuestMemory;
  build: Build;
  validBefore?: number;
}

function expectCorruption(code: VirtioErrorCode, c: Case): PackedDeviceQueue {
  const mem = c.memory?.() ?? GuestMemory.create(MEM);
  const size = c.size ?? 8;
  const mock = new MockPackedQueue(mem, size);
  const errors: VirtioError[] = [];
  const q = new PackedDeviceQueue(0, size, (e) => errors.push(e));
  expect(mock.configure(q, { indirect: c.indirect ?? true, eventIdx: true })).toBeUndefined();
  const keep = [...mock.ringRanges(), ...(c.build(mock) ?? [])];
  fillCanary(mem, keep);
  const ring = mock.ringRanges()[0]!;
  const before = (mem.slice(ring.addr, ring.len) as Uint8Array).slice();
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
  expect(q.error!.queue).toBe(0);
  expect(q.isActive).toBe(false);
  // Nothing outside the ring and the test's tables changed; the ring itself unwritten.
  expect(checkCanary(mem, keep)).toEqual([]);
  expect(Buffer.compare(mem.slice(ring.addr, ring.len) as Uint8Array, before)).toBe(0);
  // Stopped for good: no re-read of the ring.
  const reads = q.stats.availReads;
  for (let i = 0; i < 3; i++) expect(q.popChain()).toBeNull();
  expect(q.hasAvailable()).toBe(false);
  expect(q.stats.availReads).toBe(reads);
  expect(errors).toHaveLength(1);
  for (const ch of served) expect(q.addUsed(ch.head, 0)).toBe(true);
  return q;
}

const only =
  (f: (m: MockPackedQueue) => unknown): Build =>
  (m) => {
    f(m);
    return undefined;
  };

const table = (addr: number, n: number): MemoryRange[] => [{ addr, len: 16 * n }];

const HOSTILE: Array<[string, VirtioErrorCode, Case]> = [
  [
    "buffer ID ≥ queue size",
    VirtioErrorCode.HEAD_OUT_OF_RANGE,
    { build: only((m) => m.addBuffer([{ addr: DATA, len: 4 }], { id: 8 })) },
  ],
  [
    "buffer ID reused while in flight",
    VirtioErrorCode.HEAD_IN_USE,
    {
      validBefore: 1,
      build: only((m) => {
        m.addBuffer([{ addr: DATA, len: 4 }], { id: 3 });
        m.pushRaw([{ addr: DATA, len: 4, id: 3, flags: A1 }]);
      }),
    },
  ],
  [
    "a NEXT list running all around the ring (chain longer than the queue)",
    VirtioErrorCode.CHAIN_TOO_LONG,
    {
      build: only((m) => {
        for (let p = 0; p < 8; p++)
          m.writeDescriptor(p, { addr: DATA, len: 1, id: 0, flags: A1 | NEXT });
      }),
    },
  ],
  [
    "wrap-counter games: more slots made available than the driver owns",
    VirtioErrorCode.AVAIL_IDX_JUMP,
    {
      validBefore: 1,
      build: only((m) => {
        m.addBuffer(
          Array.from({ length: 6 }, (_, i) => ({ addr: DATA + i, len: 1 })),
          { id: 0 },
        );
        // Positions 6, 7 and on into slot 0 of the next lap, which the device still holds.
        m.writeDescriptor(7, { addr: DATA, len: 1, id: 1, flags: A1 | NEXT });
        m.writeDescriptor(6, { addr: DATA, len: 1, id: 1, flags: A1 | NEXT });
      }),
    },
  ],
  [
    "device-readable after device-writable",
    VirtioErrorCode.READABLE_AFTER_WRITABLE,
    {
      build: only((m) =>
        m.addBuffer([
          { addr: DATA, len: 4, writable: true },
          { addr: DATA + 16, len: 4 },
        ]),
      ),
    },
  ],
  [
    "total length above 2^32",
    VirtioErrorCode.CHAIN_TOO_BIG,
    {
      build: only((m) =>
        m.pushRaw([
          { addr: DATA, len: 2, flags: A1 | NEXT },
          { addr: DATA, len: 0xffff_ffff, flags: A1 },
        ]),
      ),
    },
  ],
  [
    "total above 2^32 made only of in-range buffers",
    VirtioErrorCode.CHAIN_TOO_BIG,
    {
      size: 8192,
      memory: () => GuestMemory.create(0x100000),
      build: only((m) =>
        m.pushRaw(
          Array.from({ length: 4097 }, () => ({ addr: 0, len: 0x100000, flags: A1 | NEXT })),
        ),
      ),
    },
  ],
  [
    "buffer past the end of guest memory",
    VirtioErrorCode.BUFFER_OUT_OF_RANGE,
    { build: only((m) => m.addBuffer([{ addr: MEM - 4, len: 8 }])) },
  ],
  [
    "64-bit buffer address ≥ 2^53",
    VirtioErrorCode.BUFFER_OUT_OF_RANGE,
    { build: only((m) => m.addBuffer([{ addr: 1n << 60n, len: 8 }])) },
  ],
  [
    "INDIRECT inside an indirect table",
    VirtioErrorCode.NESTED_INDIRECT,
    {
      build: (m) => {
        m.writeAt(TABLE, { addr: TABLE + 0x100, len: 16, flags: INDIRECT });
        m.pushRaw([{ addr: TABLE, len: 16, id: 0, flags: A1 | INDIRECT }]);
        return table(TABLE, 1);
      },
    },
  ],
  [
    "INDIRECT together with NEXT",
    VirtioErrorCode.INDIRECT_WITH_NEXT,
    {
      build: (m) => {
        m.writeAt(TABLE, { addr: DATA, len: 4 });
        m.pushRaw([
          { addr: TABLE, len: 16, flags: A1 | INDIRECT | NEXT },
          { addr: DATA, len: 4, flags: A1 },
        ]);
        return table(TABLE, 1);
      },
    },
  ],
  [
    "INDIRECT inside a NEXT list",
    VirtioErrorCode.INDIRECT_WITH_NEXT,
    {
      build: (m) => {
        m.writeAt(TABLE, { addr: DATA, len: 4 });
        m.pushRaw([
          { addr: DATA, len: 4, flags: A1 | NEXT },
          { addr: TABLE, len: 16, flags: A1 | INDIRECT },
        ]);
        return table(TABLE, 1);
      },
    },
  ],
  [
    "zero-length indirect table",
    VirtioErrorCode.BAD_INDIRECT_LENGTH,
    { build: only((m) => m.pushRaw([{ addr: TABLE, len: 0, flags: A1 | INDIRECT }])) },
  ],
  [
    "indirect length not a multiple of 16",
    VirtioErrorCode.BAD_INDIRECT_LENGTH,
    { build: only((m) => m.pushRaw([{ addr: TABLE, len: 24, flags: A1 | INDIRECT }])) },
  ],
  [
    "indirect table with more entries than the queue size",
    VirtioErrorCode.INDIRECT_TOO_LONG,
    { build: only((m) => m.pushRaw([{ addr: TABLE, len: 16 * 9, flags: A1 | INDIRECT }])) },
  ],
  [
    "INDIRECT without VIRTIO_F_INDIRECT_DESC",
    VirtioErrorCode.INDIRECT_NOT_NEGOTIATED,
    {
      indirect: false,
      build: only((m) => m.pushRaw([{ addr: TABLE, len: 16, flags: A1 | INDIRECT }])),
    },
  ],
  [
    "indirect table outside guest memory",
    VirtioErrorCode.BUFFER_OUT_OF_RANGE,
    { build: only((m) => m.pushRaw([{ addr: MEM - 8, len: 16, flags: A1 | INDIRECT }])) },
  ],
  [
    "indirect entry outside guest memory",
    VirtioErrorCode.BUFFER_OUT_OF_RANGE,
    {
      build: (m) => {
        m.writeAt(TABLE, { addr: MEM, len: 4, flags: WRITE });
        m.pushRaw([{ addr: TABLE, len: 16, flags: A1 | INDIRECT }]);
        return table(TABLE, 1);
      },
    },
  ],
  [
    "readable after writable inside an indirect table",
    VirtioErrorCode.READABLE_AFTER_WRITABLE,
    {
      build: (m) => {
        m.writeAt(TABLE, { addr: DATA, len: 4, flags: WRITE });
        m.writeAt(TABLE + 16, { addr: DATA, len: 4 });
        m.pushRaw([{ addr: TABLE, len: 32, flags: A1 | INDIRECT }]);
        return table(TABLE, 2);
      },
    },
  ],
];

describe("hostile guest on a packed ring (§2.8): one error, nothing outside touched", () => {
  it.each(HOSTILE)("%s → %s", (_name, code, c) => {
    expectCorruption(code, c);
  });

  it("a buffer that continues into a slot the device already used is refused before anything is written (fuzz ring-packed, seed 68ef26c6)", () => {
    // Size 4: a three-descriptor buffer at 0..2 is served and returned (the device writes
    // a used descriptor, WRITE set, into slot 0); then the driver makes slot 3 available
    // with NEXT, so the buffer would go on into slot 0 of the next lap — the used
    // descriptor, not available in that lap. Taking it would let the device write where
    // the old descriptor pointed, a buffer the driver never made writable this time.
    for (const withFastPath of [true, false]) {
      const mem = GuestMemory.create(MEM);
      const mock = new MockPackedQueue(mem, 4);
      const errors: VirtioError[] = [];
      const q = new PackedDeviceQueue(0, 4, (e) => errors.push(e));
      mock.configure(q, { eventIdx: false, indirect: true });
      const id = mock.addBuffer([
        { addr: DATA, len: 16 },
        { addr: DATA + 0x100, len: 16, writable: true },
        { addr: DATA + 0x200, len: 16, writable: true },
      ]);
      const first = q.popChain()!;
      expect(first.head).toBe(id);
      expect(q.addUsed(id, 1)).toBe(true);
      expect(mock.readUsed()?.id).toBe(id);
      // Slot 3: NEXT and WRITE, one byte (two slots: the fast path's shape when enabled).
      const flags = A1 | NEXT | (withFastPath ? WRITE : 0);
      mock.pushRaw([{ addr: DATA + 0x300, len: 1, id: 1, flags }]);
      const keep = mock.ringRanges();
      fillCanary(mem, keep);
      expect(q.popChain()).toBeNull();
      expect(errors.map((e) => e.code)).toEqual([VirtioErrorCode.AVAIL_IDX_JUMP]);
      expect(errors[0]!.message).toMatch(/continues at position 0, which is not available/);
      expect(checkCanary(mem, keep)).toEqual([]);
    }
  });

  it("descriptors of the wrong lap, or with AVAIL = USED, are simply not available", () => {
    const mem = GuestMemory.create(MEM);
    const mock = new MockPackedQueue(mem, 8);
    const q = new PackedDeviceQueue(0, 8);
    mock.configure(q, { eventIdx: true, indirect: true });
    for (const flags of [0, VIRTQ_DESC_F_USED, A1 | VIRTQ_DESC_F_USED]) {
      mock.writeDescriptor(0, { addr: DATA, len: 4, flags });
      expect(q.hasAvailable()).toBe(false);
      expect(q.popChain()).toBeNull();
    }
    expect(q.error).toBeNull();
  });

  it("ring placement and size are checked at enable (size, alignment, outside memory)", () => {
    const cases: Array<[VirtioErrorCode, (q: PackedDeviceQueue) => void]> = [
      [VirtioErrorCode.BAD_QUEUE_SIZE, (q) => (q.size = 0)],
      [VirtioErrorCode.BAD_QUEUE_SIZE, (q) => (q.size = 9)],
      [VirtioErrorCode.RING_MISALIGNED, (q) => (q.descAddr = 8)],
      [VirtioErrorCode.RING_MISALIGNED, (q) => (q.driverAddr = 2)],
      [VirtioErrorCode.RING_OUT_OF_RANGE, (q) => (q.descAddr = MEM - 64)],
      [VirtioErrorCode.RING_OUT_OF_RANGE, (q) => (q.deviceAddr = MEM)],
    ];
    for (const [code, spoil] of cases) {
      const mem = GuestMemory.create(MEM);
      const mock = new MockPackedQueue(mem, 8);
      const q = new PackedDeviceQueue(0, 8);
      q.bind(mem);
      mock.applyLayout(q);
      spoil(q);
      expect(q.enable()?.code).toBe(code);
      expect(q.ready).toBe(false);
    }
    // A size that is not a power of two is legal on a packed ring (§2.8).
    const mem = GuestMemory.create(MEM);
    const q = new PackedDeviceQueue(0, 8);
    expect(new MockPackedQueue(mem, 5).configure(q)).toBeUndefined();
  });

  it("a hostile driver event (offset ≥ size, reserved flags) only decides an interrupt", () => {
    const mem = GuestMemory.create(MEM);
    const mock = new MockPackedQueue(mem, 8);
    const q = new PackedDeviceQueue(0, 8);
    mock.configure(q, { eventIdx: true });
    for (const [offWrap, flags] of [
      [0x7fff, 2],
      [0xffff, 3],
      [0x1234, 0xffff],
    ] as const) {
      mock.setDriverEvent(offWrap, flags);
      mock.addBuffer([{ addr: DATA, len: 4, writable: true }]);
      const ch = q.popChain()!;
      expect(q.addUsed(ch.head, 4)).toBe(true);
      expect(typeof q.needsNotification()).toBe("boolean");
      expect(mock.readUsed()?.id).toBe(ch.head);
    }
    expect(q.error).toBeNull();
  });
});

/** Fills writable bytes with 0x5a, through the same `serveQueue` every device uses. */
class EchoDevice extends VirtioDeviceBase {
  constructor() {
    super({ deviceId: 0x7f, queueSizes: [8], ringPacked: true });
  }
  protected onQueueNotify(_index: number, queue: DeviceVirtqueue): void {
    this.serveQueue(queue, (chain) => {
      const w = chain.writer;
      while (w.writeU8(0x5a)) {}
      return w.bytesWritten;
    });
  }
}

describe("hostile packed ring through VirtioDeviceBase: NEEDS_RESET + one config interrupt", () => {
  // Cases with a valid buffer first are left out: the device serves and returns it at once.
  it.each(
    HOSTILE.filter(
      ([, , c]) => c.indirect !== false && c.memory === undefined && c.validBefore === undefined,
    ),
  )("%s", (_name, code, c) => {
    const mem = GuestMemory.create(MEM);
    const dev = new EchoDevice();
    let config = 0;
    const resets: VirtioError[] = [];
    dev.bind(mem, { signalConfig: () => config++, signalUsed: () => {} });
    dev.on("needsReset", (e) => resets.push(e));
    const s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    dev.setStatus(s);
    const f = featureMask(
      VIRTIO_F_VERSION_1,
      VIRTIO_F_EVENT_IDX,
      VIRTIO_F_INDIRECT_DESC,
      VIRTIO_F_RING_PACKED,
    );
    dev.writeDriverFeatures(0, Number(f & 0xffff_ffffn));
    dev.writeDriverFeatures(1, Number(f >> 32n));
    dev.setStatus(s | VIRTIO_CONFIG_S_FEATURES_OK);
    expect(dev.ringPacked).toBe(true);
    const mock = new MockPackedQueue(mem, 8);
    mock.applyLayout(dev.queues[0]!);
    dev.enableQueue(0);
    dev.setStatus(s | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    expect(dev.isLive).toBe(true);
    const keep = [...mock.ringRanges(), ...(c.build(mock) ?? [])];
    fillCanary(mem, keep);
    dev.notifyQueue(0);
    expect(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(resets.map((e) => e.code)).toEqual([code]);
    expect(config).toBe(1);
    expect(checkCanary(mem, keep)).toEqual([]);
    dev.notifyQueue(0);
    expect(config).toBe(1);
    // A reset brings the split layout back and clears the error.
    dev.setStatus(0);
    expect(dev.ringPacked).toBe(false);
    expect(dev.status).toBe(0);
  });
});
