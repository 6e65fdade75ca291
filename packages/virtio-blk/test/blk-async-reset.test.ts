// Issue 17, found by `pnpm fuzz blk-inflight`: with an asynchronous back-end, a request in
// flight when the driver resets the device must neither take its write data from guest
// memory after the reset (the guest owns it again, §2.4, and may have reused it) nor land
// its read data in guest memory, nor acknowledge anything. Before the fix the device gave
// the back-end zero-copy views of guest memory, so a slow disk wrote whatever the guest put
// there after the reset to the old request's sector.

import { GuestMemory } from "@pvkit/platform";
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

function setup(memory?: GuestMemory) {
  const disk = new GatedDisk();
  disk.inner.bytes.fill(0x77);
  const device = new VirtioBlkDevice({ backend: disk, writeback: true, flush: true });
  const g = rawMmioGuest(device, { queues: [{ base: 0, size: 16 }], ...(memory && { memory }) });
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

  // The CI flake of boot-blk.test.ts (PCI disk on a FileDisk: the guest read its pattern
  // back wrong, once in a few runs): v86's RAM is a WebAssembly.Memory that v86's own Rust
  // code grows (its JIT allocates), and growing detaches every view of the old buffer. The
  // device took views of the read's buffers when the request started; a read that
  // finished after a growth found them detached, so its data never reached the guest.
  it("a read in flight while a WebAssembly.Memory grows lands in the new buffer", async () => {
    const wasm = new WebAssembly.Memory({ initial: 16, maximum: 32 }); // 1 MiB
    const memory = new GuestMemory([
      { base: 0, size: 0x3_8000, backing: wasm },
      { base: 0x4_0000, size: 0x4_0000, backing: wasm, backingOffset: 0x4_0000 },
    ]);
    const { disk, g, header } = setup(memory);
    disk.inner.bytes.set(
      Uint8Array.from({ length: 1024 }, (_, i) => (i * 7 + 3) & 0xff),
      5 * 512,
    );
    header(VirtioBlkType.IN, 5);
    g.memory.fill(STATUS, 1, 0xa5);
    g.memory.fill(DATA, 1024, 0);
    g.queues[0]!.addChain([
      { addr: HDR, len: 16 },
      { addr: DATA, len: 512, writable: true },
      { addr: 0x4_2000, len: 512, writable: true }, // the second region
      { addr: STATUS, len: 1, writable: true },
    ]);
    g.notify(0);
    const before = wasm.buffer;
    wasm.grow(1); // as v86's allocator does between two slices
    expect(before.byteLength).toBe(0); // the old buffer is detached
    await disk.release();
    expect(g.memory.readU8(STATUS)).toBe(0); // OK
    expect(g.queues[0]!.readUsed()).toEqual([{ id: 0, len: 1025 }]);
    expect(g.memory.slice(DATA, 512)).toEqual(disk.inner.bytes.slice(5 * 512, 6 * 512));
    expect(g.memory.slice(0x4_2000, 512)).toEqual(disk.inner.bytes.slice(6 * 512, 7 * 512));
  });
});
