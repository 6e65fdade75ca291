import { GuestMemory, IrqLine } from "@pvkit/platform";
import {
  BlkErrorCode,
  BlkRequestError,
  type BlockBackend,
  blkTypeName,
  MemoryDisk,
  VirtioBlkDevice,
  VirtioBlkDriver,
  VirtioBlkStatus,
  VirtioBlkType,
} from "@pvkit/virtio-blk";
import {
  DriverError,
  GuestAllocator,
  VirtioErrorCode,
  VirtioMmioTransport,
} from "@pvkit/virtio-core";
import { testGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";
import { blkRig, pattern } from "./harness.js";

const DISK = 64 * 1024; // 128 sectors

async function failure(p: Promise<unknown>): Promise<BlkRequestError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BlkRequestError);
  return e as BlkRequestError;
}

describe("VirtioBlkDriver refuses bad requests before they reach the ring", () => {
  it("a read of 100 bytes: length must be a positive multiple of 512", async () => {
    const rig = blkRig(new MemoryDisk(DISK));
    const exits = rig.bus.exits;
    const submitted = rig.driver.stats.submitted;
    const e = await failure(rig.driver.read(0, 100));
    expect(e.message).toBe(
      "VIRTIO_BLK_T_IN (read) of 100 bytes at sector 0: length must be a positive multiple of 512 (§5.2.6)",
    );
    expect(e.code).toBe(BlkErrorCode.INVALID_REQUEST);
    expect(e.rule).toBe(BlkErrorCode.UNALIGNED_LENGTH);
    expect(e.type).toBe(VirtioBlkType.IN);
    expect(e.status).toBe(VirtioBlkStatus.IOERR); // what the device would have answered
    // Nothing was posted: no exit, no request, the device saw nothing.
    expect(rig.bus.exits).toBe(exits);
    expect(rig.driver.stats.submitted).toBe(submitted);
    expect(rig.driver.stats.refused).toBe(1);
    expect(rig.device.stats.byType[VirtioBlkType.IN]).toBeUndefined();
  });

  it("a sector past the end, sector −1, and a zero length", async () => {
    const rig = blkRig(new MemoryDisk(DISK));
    expect(rig.driver.info.capacity).toBe(128);
    const past = await failure(rig.driver.read(127, 1024));
    expect(past.message).toBe(
      "VIRTIO_BLK_T_IN (read) of 1024 bytes at sector 127: request must lie within the capacity of 128 sectors the device reported (§5.2.4, §5.2.6.1), but covers sectors 127 to 128",
    );
    expect(past.rule).toBe(BlkErrorCode.OUT_OF_RANGE);
    const neg = await failure(rig.driver.read(-1, 512));
    expect(neg.message).toBe(
      "VIRTIO_BLK_T_IN (read) of 512 bytes at sector -1: sector must be a non-negative integer below 2^53 (§5.2.6)",
    );
    expect(neg.rule).toBe(BlkErrorCode.OUT_OF_RANGE);
    const frac = await failure(rig.driver.write(1.5, pattern(1, 512)));
    expect(frac.message).toBe(
      "VIRTIO_BLK_T_OUT (write) of 512 bytes at sector 1.5: sector must be a non-negative integer below 2^53 (§5.2.6)",
    );
    const empty = await failure(rig.driver.writeGuest(0, []));
    expect(empty.rule).toBe(BlkErrorCode.UNALIGNED_LENGTH);
    expect(rig.device.stats.errors).toEqual({}); // the device never saw any of them
    // The last sector is fine.
    expect((await rig.driver.read(127, 512)).length).toBe(512);
  });

  it("a write on a read-only disk", async () => {
    const rig = blkRig(new MemoryDisk(DISK, { readOnly: true }));
    const e = await failure(rig.driver.write(0, pattern(1, 512)));
    expect(e.message).toBe(
      "VIRTIO_BLK_T_OUT (write) of 512 bytes at sector 0: the device is read-only (VIRTIO_BLK_F_RO, §5.2.3) and answers writes with VIRTIO_BLK_S_IOERR (§5.2.6.2)",
    );
    expect(e.rule).toBe(BlkErrorCode.READ_ONLY);
    expect(e.status).toBe(VirtioBlkStatus.IOERR);
  });

  it("FLUSH, DISCARD and WRITE_ZEROES without their feature", async () => {
    const rig = blkRig(new MemoryDisk(DISK), {
      device: { flush: false, discard: false, writeZeroes: false },
    });
    const f = await failure(rig.driver.flush());
    expect(f.message).toBe(
      "VIRTIO_BLK_T_FLUSH: needs VIRTIO_BLK_F_FLUSH, which was not negotiated (§5.2.3); the device would answer VIRTIO_BLK_S_UNSUPP",
    );
    expect(f.status).toBe(VirtioBlkStatus.UNSUPP);
    expect(f.rule).toBe(BlkErrorCode.UNSUPPORTED);
    const d = await failure(rig.driver.discard([{ sector: 0, sectors: 8 }]));
    expect(d.message).toBe(
      "VIRTIO_BLK_T_DISCARD of 1 range: needs VIRTIO_BLK_F_DISCARD, which was not negotiated (§5.2.3); the device would answer VIRTIO_BLK_S_UNSUPP",
    );
    const z = await failure(rig.driver.writeZeroes([{ sector: 0, sectors: 8 }]));
    expect(z.message).toContain("needs VIRTIO_BLK_F_WRITE_ZEROES");
  });

  it("discard / write-zeroes limits the device reported", async () => {
    const rig = blkRig(new MemoryDisk(DISK), {
      device: { maxDiscardSeg: 2, maxDiscardSectors: 16 },
    });
    const many = await failure(
      rig.driver.discard([
        { sector: 0, sectors: 1 },
        { sector: 8, sectors: 1 },
        { sector: 16, sectors: 1 },
      ]),
    );
    expect(many.message).toBe(
      "VIRTIO_BLK_T_DISCARD of 3 ranges: at most 2 ranges per request (max_discard_seg, §5.2.4)",
    );
    expect(many.rule).toBe(BlkErrorCode.TOO_MANY_SEGMENTS);
    const big = await failure(rig.driver.discard([{ sector: 0, sectors: 32 }]));
    expect(big.message).toBe(
      "VIRTIO_BLK_T_DISCARD of 1 range: range 0 must cover 1 to 16 sectors (max_discard_sectors, §5.2.4), got number 32",
    );
    const past = await failure(rig.driver.writeZeroes([{ sector: 120, sectors: 16 }]));
    expect(past.message).toBe(
      "VIRTIO_BLK_T_WRITE_ZEROES of 1 range: range 0 must lie within the capacity of 128 sectors the device reported (§5.2.4, §5.2.6.1), but covers sectors 120 to 135",
    );
    const none = await failure(rig.driver.discard([]));
    expect(none.message).toBe(
      "VIRTIO_BLK_T_DISCARD of 0 ranges: at least one range is needed (§5.2.6)",
    );
    await rig.driver.discard([{ sector: 0, sectors: 16 }]); // within the limits
  });

  it("enqueue returns the refusal and never calls back", () => {
    const rig = blkRig(new MemoryDisk(DISK));
    let called = 0;
    const e = rig.driver.enqueue(VirtioBlkType.IN, 0, [{ addr: 0x1000, len: 512 }], [], () => {
      called++;
    });
    expect(e).toBeInstanceOf(BlkRequestError);
    expect(e?.message).toBe(
      "VIRTIO_BLK_T_IN (read) of 0 bytes at sector 0: its data must be device-writable (inBufs), but 1 buffer is device-readable (§5.2.6.1)",
    );
    expect(e?.rule).toBe(BlkErrorCode.DATA_DIRECTION);
    expect(called).toBe(0);
    expect(rig.driver.inFlight).toBe(0);
  });
});

describe("device-reported errors name the request type", () => {
  it("a write the back-end fails reads VIRTIO_BLK_T_OUT … the device answered VIRTIO_BLK_S_IOERR", async () => {
    const disk = new MemoryDisk(DISK);
    disk.writev = () => "EIO";
    const rig = blkRig(disk);
    const e = await failure(rig.driver.write(4, pattern(2, 1024)));
    expect(e.message).toBe(
      "VIRTIO_BLK_T_OUT (write) of 1024 bytes at sector 4: the device answered VIRTIO_BLK_S_IOERR",
    );
    expect(e.code).toBe(BlkErrorCode.DEVICE_ERROR);
    expect(e.rule).toBeNull();
    expect(e.status).toBe(VirtioBlkStatus.IOERR);
  });

  it("spells every request type as §5.2.6 does", () => {
    expect(blkTypeName(VirtioBlkType.IN)).toBe("VIRTIO_BLK_T_IN (read)");
    expect(blkTypeName(VirtioBlkType.OUT)).toBe("VIRTIO_BLK_T_OUT (write)");
    expect(blkTypeName(VirtioBlkType.FLUSH)).toBe("VIRTIO_BLK_T_FLUSH");
    expect(blkTypeName(VirtioBlkType.GET_ID)).toBe("VIRTIO_BLK_T_GET_ID");
    expect(blkTypeName(VirtioBlkType.WRITE_ZEROES)).toBe("VIRTIO_BLK_T_WRITE_ZEROES");
    expect(blkTypeName(99)).toBe("request type 99");
  });
});

describe("one VirtioBlkDriver per device", () => {
  it("a second driver on the same transport is refused until the device is reset", () => {
    const g = testGuest(new VirtioBlkDevice({ backend: new MemoryDisk(DISK) }));
    const opts = { memory: g.memory, allocator: g.allocator };
    expect(VirtioBlkDriver.create(g.transport, opts)).toBeInstanceOf(VirtioBlkDriver);
    const second = VirtioBlkDriver.create(g.transport, opts);
    expect(second).toBeInstanceOf(DriverError);
    expect((second as DriverError).code).toBe(VirtioErrorCode.ALREADY_BOUND);
    expect((second as DriverError).message).toBe(
      "virtio-blk device at mmio 0xfeb00000 is already driven by VirtioBlkDriver; reset the device (transport.reset() or the driver's reset(), §2.4) first",
    );
    g.transport.reset();
    expect(VirtioBlkDriver.create(g.transport, opts)).toBeInstanceOf(VirtioBlkDriver);
  });
});

describe("constructor arguments name the option, the type expected and the value given", () => {
  it("VirtioBlkDevice without a backend", () => {
    const New = VirtioBlkDevice as unknown as new (o?: unknown) => VirtioBlkDevice;
    expect(() => new New()).toThrow(
      "new VirtioBlkDevice expects an options object { backend, serial?, readOnly?, … }, got undefined",
    );
    expect(() => new New({})).toThrow(TypeError);
    expect(() => new New({})).toThrow(
      "new VirtioBlkDevice: options.backend must be a BlockBackend (e.g. new MemoryDisk(1 << 20); byteLength, readOnly, readv, writev, flush, discard, writeZeroes, close), got undefined",
    );
    expect(() => new New({ backend: new Uint8Array(512) })).toThrow(/got a Uint8Array$/);
    const ok: BlockBackend = new MemoryDisk(512);
    expect(new New({ backend: ok }).backend).toBe(ok);
  });

  it("MemoryDisk with a string size or a size that is not a multiple of 512", () => {
    expect(() => new MemoryDisk("1M" as unknown as number)).toThrow(
      'new MemoryDisk expects a size in bytes (a multiple of 512) or a Uint8Array, got string "1M"',
    );
    expect(() => new MemoryDisk(1000)).toThrow(
      "new MemoryDisk: a disk's size must be a non-negative multiple of 512 bytes (§5.2.4: capacity is in 512-byte sectors), got 1000",
    );
    expect(() => new MemoryDisk(new Uint8Array(100))).toThrow(/got 100$/);
    expect(new MemoryDisk(1024).byteLength).toBe(1024);
  });

  it("VirtioBlkDriver.create given the device-side transport", () => {
    const memory = GuestMemory.create(1 << 20);
    const device = new VirtioBlkDevice({ backend: new MemoryDisk(DISK) });
    const hostSide = new VirtioMmioTransport({ device, memory, irq: new IrqLine() });
    expect(() =>
      VirtioBlkDriver.create(hostSide as never, {
        memory,
        allocator: new GuestAllocator(0x1000, 0x1000),
      }),
    ).toThrow(
      "VirtioBlkDriver.create: transport must be a driver-side VirtioDriverTransport (VirtioMmioDriverTransport.probe(bus, base) or VirtioPciDriverTransport.probe(bus, config), checked for DriverError), got a VirtioMmioTransport",
    );
  });
});
