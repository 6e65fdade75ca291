// Issue 17, found by `pnpm fuzz blk-inflight`: with an asynchronous back-end, a request in
// flight when the driver resets the device must neither take its write data from guest
// memory after the reset (the guest owns it again, §2.4, and may have reused it) nor land
// its read data in guest memory, nor acknowledge anything. Before the fix the device gave
// the back-end zero-copy views of guest memory, so a slow disk wrote whatever the guest put
// there after the reset to the old request's sector.

import {
  type BlockBackend,
  type BlockResult,
  MemoryDisk,
  VirtioBlkDevice,
  VirtioBlkType,
} from "@pvkit/virtio-blk";
import { VirtioMmio } from "@pvkit/virtio-core";
import { rawMmioGuest } from "@pvkit/virtio-core/testing";
import { describe, expect, it } from "vitest";

/** A disk whose operations start only when released (a slow, asynchronous back-end). */
class GatedDisk implements BlockBackend {
  readonly inner = new MemoryDisk(64 * 512);
  private readonly held: Array<() => void> = [];
  get byteLength(): number {
    return this.inner.byteLength;
  }
  get readOnly(): boolean {
    return false;
  }
  private gate(op: () => BlockResult): Promise<BlockResult> {
    return new Promise((resolve) => this.held.push(() => resolve(op())));
  }
  readv(offset: number, buffers: readonly Uint8Array[]) {
    return this.gate(() => this.inner.readv(offset, buffers));
  }
  writev(offset: number, buffers: readonly Uint8Array[]) {
    return this.gate(() => this.inner.writev(offset, buffers));
  }
  flush() {
    return undefined;
  }
  discard() {
    return undefined;
  }
  writeZeroes() {
    return undefined;
  }
  close() {}
  async release(): Promise<void> {
    for (const f of this.held.splice(0)) f();
    await new Promise((r) => setImmediate(r));
  }
  get pending(): number {
    return this.held.length;
  }
}

const HDR = 0x1_0000;
const DATA = 0x2_0000;
const STATUS = 0x3_0000;

function setup() {
  const disk = new GatedDisk();
  disk.inner.bytes.fill(0x77);
  const device = new VirtioBlkDevice({ backend: disk, writeback: true, flush: true });
  const g = rawMmioGuest(device, { queues: [{ base: 0, size: 16 }] });
  const header = (type: number, sector: number) => {
    g.memory.fill(HDR, 16, 0);
    g.memory.writeU32(HDR, type);
    g.memory.writeU32(HDR + 8, sector);
  };
  return { disk, device, g, header };
}

describe("virtio-blk: requests in flight on an asynchronous back-end across a reset", () => {
  it("a write writes the data it had when submitted, not what the guest put there after the reset", async () => {
    const { disk, g, header } = setup();
    header(VirtioBlkType.OUT, 2);
    g.memory.fill(DATA, 512, 0x11);
    g.memory.fill(STATUS, 1, 0xa5);
    g.queues[0]!.addChain([
      { addr: HDR, len: 16 },
      { addr: DATA, len: 512 },
      { addr: STATUS, len: 1, writable: true },
    ]);
    g.notify(0);
    expect(disk.pending).toBe(1);
    g.write(VirtioMmio.STATUS, 0); // reset with the write in flight
    g.memory.fill(DATA, 512, 0xee); // the guest reuses its buffer
    await disk.release();
    const sector = disk.inner.bytes.subarray(1024, 1536);
    expect(sector.every((b) => b === 0x11 || b === 0x77)).toBe(true);
    expect(sector.includes(0xee)).toBe(false);
    expect(g.memory.readU8(STATUS)).toBe(0xa5); // no status written
    expect(g.queues[0]!.usedIdx()).toBe(0); // nothing acknowledged
  });

  it("a read that finishes after the reset does not land in guest memory", async () => {
    const { disk, g, header } = setup();
    header(VirtioBlkType.IN, 5);
    g.memory.fill(STATUS, 1, 0xa5);
    g.queues[0]!.addChain([
      { addr: HDR, len: 16 },
      { addr: DATA, len: 512, writable: true },
      { addr: STATUS, len: 1, writable: true },
    ]);
    g.notify(0);
    expect(disk.pending).toBe(1);
    g.write(VirtioMmio.STATUS, 0);
    g.memory.fill(DATA, 512, 0xcc);
    await disk.release();
    const data = g.memory.slice(DATA, 512) as Uint8Array;
    expect(data.every((b) => b === 0xcc)).toBe(true);
    expect(g.memory.readU8(STATUS)).toBe(0xa5);
    expect(g.queues[0]!.usedIdx()).toBe(0);
  });

  it("without a reset the asynchronous read and write complete as usual", async () => {
    const { disk, g, header } = setup();
    header(VirtioBlkType.IN, 5);
    g.queues[0]!.addChain([
      { addr: HDR, len: 16 },
      { addr: DATA, len: 512, writable: true },
      { addr: STATUS, len: 1, writable: true },
    ]);
    g.notify(0);
    await disk.release();
    expect((g.memory.slice(DATA, 512) as Uint8Array).every((b) => b === 0x77)).toBe(true);
    expect(g.memory.readU8(STATUS)).toBe(0);
    expect(g.queues[0]!.readUsed()).toEqual([{ id: 0, len: 513 }]);
  });
});
