import {
  BlkErrorCode,
  MemoryDisk,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VirtioBlkDevice,
  VirtioBlkStatus,
  VirtioBlkType,
} from "@pvkit/virtio-blk";
import {
  featureMask,
  VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
  VirtioMmio as R,
} from "@pvkit/virtio-core";
import {
  type ChainBuffer,
  checkCanary,
  fillCanary,
  rawMmioGuest,
} from "@pvkit/virtio-core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { expectSameBytes, pattern } from "./harness.js";

const QSIZE = 16;
const RING = 0x1_0000;
const HDR = 0x2_0000; // request headers
const DATA = 0x3_0000; // data buffers
const STATUS = 0x4_0000; // status bytes
const DISK = 64 * 1024; // 128 sectors

/** A live virtio-blk device driven by a raw (unvalidated) driver. */
function rawRig(options: { readOnly?: boolean; maxDiscardSeg?: number } = {}) {
  const disk = new MemoryDisk(pattern(77, DISK), { readOnly: options.readOnly ?? false });
  const device = new VirtioBlkDevice({
    backend: disk,
    queueSize: QSIZE,
    maxDiscardSeg: options.maxDiscardSeg ?? 4,
  });
  const features = options.readOnly
    ? featureMask(VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO)
    : featureMask(VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES);
  const g = rawMmioGuest(device, { features, queues: [{ base: RING, size: QSIZE }] });
  const { memory } = g;
  const header = (at: number, type: number, sectorLo: number, sectorHi = 0) => {
    memory.writeU32(at, type);
    memory.writeU32(at + 4, 0);
    memory.writeU32(at + 8, sectorLo);
    memory.writeU32(at + 12, sectorHi);
  };
  /** Posts a chain, notifies, waits for the device; returns the used element (or undefined). */
  const submit = async (buffers: ChainBuffer[]) => {
    const mock = g.queues[0]!;
    memory.writeU8(STATUS, 0xee);
    const before = mock.usedIdx();
    mock.addChain(buffers);
    g.notify(0);
    await new Promise((res) => setTimeout(res, 0));
    const after = mock.usedIdx();
    return after === before ? undefined : mock.usedElem(before);
  };
  const status = () => memory.readU8(STATUS);
  return {
    memory,
    disk,
    device,
    r: g.read,
    init: g.init,
    header,
    submit,
    status,
    mock: () => g.queues[0]!,
  };
}

const hdr = (): ChainBuffer => ({ addr: HDR, len: 16 });
const data = (len: number, writable: boolean): ChainBuffer => ({ addr: DATA, len, writable });
const st = (writable = true, len = 1): ChainBuffer => ({ addr: STATUS, len, writable });

describe("virtio-blk against a hostile driver (§5.2.6)", () => {
  type Case = {
    name: string;
    type: number;
    sector?: [number, number];
    chain: ChainBuffer[];
    status: number;
    code: string;
    readOnly?: boolean;
    segments?: Array<[number, number, number]>;
  };
  const cases: Case[] = [
    {
      name: "header in a device-writable descriptor",
      type: VirtioBlkType.IN,
      chain: [{ addr: HDR, len: 16, writable: true }, st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.SHORT_HEADER,
    },
    {
      name: "a header shorter than 16 bytes",
      type: VirtioBlkType.IN,
      chain: [{ addr: HDR, len: 12 }, data(512, true), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.SHORT_HEADER,
    },
    {
      name: "IN with device-readable data",
      type: VirtioBlkType.IN,
      chain: [hdr(), data(512, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.DATA_DIRECTION,
    },
    {
      name: "OUT with device-writable data",
      type: VirtioBlkType.OUT,
      chain: [hdr(), data(512, true), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.DATA_DIRECTION,
    },
    {
      name: "a data length that is not a multiple of 512",
      type: VirtioBlkType.OUT,
      chain: [hdr(), data(100, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.UNALIGNED_LENGTH,
    },
    {
      name: "a sector beyond the capacity",
      type: VirtioBlkType.IN,
      sector: [128, 0],
      chain: [hdr(), data(512, true), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.OUT_OF_RANGE,
    },
    {
      name: "a request running past the end",
      type: VirtioBlkType.OUT,
      sector: [127, 0],
      chain: [hdr(), data(1024, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.OUT_OF_RANGE,
    },
    {
      name: "sector + length overflowing 2^64",
      type: VirtioBlkType.OUT,
      sector: [0xffff_ffff, 0xffff_ffff],
      chain: [hdr(), data(1024, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.OUT_OF_RANGE,
    },
    {
      name: "a sector at 2^53 (not representable exactly)",
      type: VirtioBlkType.IN,
      sector: [0, 0x20_0000],
      chain: [hdr(), data(512, true), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.OUT_OF_RANGE,
    },
    {
      name: "an unknown request type",
      type: 99,
      chain: [hdr(), st()],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.UNSUPPORTED,
    },
    {
      name: "GET_LIFETIME (not offered)",
      type: VirtioBlkType.GET_LIFETIME,
      chain: [hdr(), data(16, true), st()],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.UNSUPPORTED,
    },
    {
      name: "FLUSH carrying data",
      type: VirtioBlkType.FLUSH,
      chain: [hdr(), data(512, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.DATA_DIRECTION,
    },
    {
      name: "too many discard segments",
      type: VirtioBlkType.DISCARD,
      segments: [
        [0, 1, 0],
        [1, 1, 0],
        [2, 1, 0],
        [3, 1, 0],
        [4, 1, 0],
      ],
      chain: [],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.TOO_MANY_SEGMENTS,
    },
    {
      name: "a discard segment past the end",
      type: VirtioBlkType.DISCARD,
      segments: [[120, 16, 0]],
      chain: [],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.OUT_OF_RANGE,
    },
    {
      name: "UNMAP on a discard",
      type: VirtioBlkType.DISCARD,
      segments: [[0, 8, 1]],
      chain: [],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.BAD_SEGMENT_FLAGS,
    },
    {
      name: "reserved write-zeroes flags",
      type: VirtioBlkType.WRITE_ZEROES,
      segments: [[0, 8, 6]],
      chain: [],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.BAD_SEGMENT_FLAGS,
    },
    {
      name: "discard segments that are not 16 bytes each",
      type: VirtioBlkType.DISCARD,
      chain: [hdr(), data(20, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.BAD_SEGMENT_LAYOUT,
    },
    {
      name: "a write on a read-only disk",
      type: VirtioBlkType.OUT,
      readOnly: true,
      chain: [hdr(), data(512, false), st()],
      status: VirtioBlkStatus.IOERR,
      code: BlkErrorCode.READ_ONLY,
    },
    {
      name: "a discard on a read-only disk",
      type: VirtioBlkType.DISCARD,
      readOnly: true,
      segments: [[0, 8, 0]],
      chain: [],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.UNSUPPORTED,
    },
    {
      name: "write-zeroes on a read-only disk",
      type: VirtioBlkType.WRITE_ZEROES,
      readOnly: true,
      segments: [[0, 8, 0]],
      chain: [],
      status: VirtioBlkStatus.UNSUPP,
      code: BlkErrorCode.UNSUPPORTED,
    },
  ];

  it.each(cases)(
    "$name → status $status ($code), disk unchanged, device keeps serving",
    async (c) => {
      const rig = rawRig({ readOnly: c.readOnly ?? false });
      const errors: string[] = [];
      rig.device.on("requestError", (code) => errors.push(code));
      const [lo, hi] = c.sector ?? [0, 0];
      rig.header(HDR, c.type, lo, hi);
      rig.memory.fill(DATA, 4096, 0x5a);
      let chain = c.chain;
      if (c.segments !== undefined) {
        c.segments.forEach(([sector, n, flags], i) => {
          rig.memory.writeU32(DATA + 16 * i, sector);
          rig.memory.writeU32(DATA + 16 * i + 4, 0);
          rig.memory.writeU32(DATA + 16 * i + 8, n);
          rig.memory.writeU32(DATA + 16 * i + 12, flags);
        });
        chain = [hdr(), data(16 * c.segments.length, false), st()];
      }
      const used = await rig.submit(chain);
      expect(used?.len).toBe(1); // the status byte only
      expect(rig.status()).toBe(c.status);
      expect(errors).toEqual([c.code]);
      expectSameBytes(rig.disk.bytes, pattern(77, DISK));
      expect(rig.device.status & NEEDS_RESET).toBe(0);
      // The device keeps serving: a well-formed read of sector 3.
      rig.header(HDR, VirtioBlkType.IN, 3);
      const ok = await rig.submit([hdr(), data(512, true), st()]);
      expect(ok?.len).toBe(513);
      expect(rig.status()).toBe(VirtioBlkStatus.OK);
      expectSameBytes(
        rig.memory.slice(DATA, 512) as Uint8Array,
        pattern(77, DISK).subarray(1536, 2048),
      );
    },
  );

  it.each([
    ["no device-writable descriptor at all", [hdr(), data(512, false)]],
    ["a device-readable status descriptor", [hdr(), data(512, false), st(false)]],
    ["a zero-length status descriptor", [hdr(), st(true, 0)]],
  ] as Array<[string, ChainBuffer[]]>)(
    "%s: no byte for the status is queue corruption → NEEDS_RESET, head not completed, serving again after reset",
    async (_n, chain) => {
      const rig = rawRig();
      const resets: string[] = [];
      rig.device.on("needsReset", (e) => resets.push(e.code));
      rig.header(HDR, VirtioBlkType.OUT, 0);
      rig.memory.fill(DATA, 512, 0x11);
      const used = await rig.submit(chain);
      // Not completed (issue 17): a used element would acknowledge a request the device
      // never executed; the driver reclaims the head by resetting (§2.4).
      expect(used).toBeUndefined();
      expect(rig.mock().usedIdx()).toBe(0);
      expect(resets).toEqual(["MALFORMED_REQUEST"]);
      expect(rig.r(R.STATUS) & NEEDS_RESET).toBe(NEEDS_RESET);
      expect(rig.r(R.INTERRUPT_STATUS) & 2).toBe(2); // config interrupt
      expectSameBytes(rig.disk.bytes, pattern(77, DISK));
      // Stopped: further requests are not served until the driver resets the device.
      rig.header(HDR, VirtioBlkType.IN, 0);
      expect(await rig.submit([hdr(), data(512, true), st()])).toBeUndefined();
      rig.init();
      rig.header(HDR, VirtioBlkType.IN, 0);
      const ok = await rig.submit([hdr(), data(512, true), st()]);
      expect(ok?.len).toBe(513);
      expect(rig.status()).toBe(VirtioBlkStatus.OK);
    },
  );

  it("accepts a header split across two descriptors (§2.6.4: no framing assumed)", async () => {
    const rig = rawRig();
    rig.header(HDR, VirtioBlkType.IN, 5);
    const used = await rig.submit([
      { addr: HDR, len: 8 },
      { addr: HDR + 8, len: 8 },
      data(512, true),
      st(),
    ]);
    expect(used?.len).toBe(513);
    expect(rig.status()).toBe(VirtioBlkStatus.OK);
    expectSameBytes(
      rig.memory.slice(DATA, 512) as Uint8Array,
      pattern(77, DISK).subarray(2560, 3072),
    );
  });

  it("random requests never throw, never touch memory outside their buffers, and change the disk only as valid writes say", async () => {
    const descArb = fc.record({
      region: fc.constantFrom(HDR, DATA, DATA + 0x800, STATUS),
      len: fc.oneof(fc.constantFrom(0, 1, 16, 512, 1024), fc.nat(2048)),
      writable: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          type: fc.oneof(fc.constantFrom(0, 1, 4, 8, 10, 11, 13, 14), fc.nat(0xffff_ffff)),
          lo: fc.oneof(fc.nat(130), fc.nat(0xffff_ffff)),
          hi: fc.oneof(fc.constant(0), fc.nat(0xffff_ffff)),
          descs: fc.array(descArb, { minLength: 1, maxLength: 5 }),
          fill: fc.nat(255),
        }),
        async ({ type, lo, hi, descs, fill }) => {
          const rig = rawRig();
          rig.header(HDR, type, lo, hi);
          rig.memory.fill(DATA, 0x1000, fill);
          // Readable before writable (the queue itself rejects the other order).
          const chain = [
            ...descs.filter((d) => !d.writable),
            ...descs.filter((d) => d.writable),
          ].map((d) => ({ addr: d.region, len: d.len, writable: d.writable }));
          const keep = [
            ...rig.mock().ringRanges(),
            { addr: HDR, len: 0x1000 },
            { addr: DATA, len: 0x1000 },
            { addr: STATUS, len: 0x1000 },
          ];
          fillCanary(rig.memory, keep, 0xc3);
          const used = await rig.submit(chain);
          expect(checkCanary(rig.memory, keep, 0xc3)).toEqual([]);
          const broken = (rig.device.status & NEEDS_RESET) !== 0;
          expect(used === undefined ? broken : used.len >= 0).toBe(true);
          const lastWritable = chain.filter((d) => d.writable && d.len > 0).at(-1);
          if (!broken && used !== undefined && lastWritable !== undefined) {
            // The status byte is the last writable byte of the chain.
            const statusByte = rig.memory.readU8(lastWritable.addr + lastWritable.len - 1);
            expect([VirtioBlkStatus.OK, VirtioBlkStatus.IOERR, VirtioBlkStatus.UNSUPP]).toContain(
              statusByte,
            );
          }
          const changed = !Buffer.from(rig.disk.bytes).equals(Buffer.from(pattern(77, DISK)));
          if (changed)
            expect([
              VirtioBlkType.OUT,
              VirtioBlkType.DISCARD,
              VirtioBlkType.WRITE_ZEROES,
            ]).toContain(type);
        },
      ),
      { seed: 0xb10c, numRuns: 300 },
    );
  });
});
