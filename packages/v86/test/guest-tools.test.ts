/**
 * The guest's random-I/O tool (`guest-tools/randio.c`), run by Linux in v86 on pvkit's
 * virtio-blk: every request it makes reaches the device at the offset an independent
 * xorshift32 reference predicts, with O_DIRECT (one 4 KiB request per call, nothing from
 * the page cache), and what it writes is its documented pattern.
 */

import { MemoryDisk, VirtioBlkDevice } from "@pvkit/virtio-blk";
import { beforeAll, describe, expect, it } from "vitest";
import { attachPvkit, type V86Emulator } from "../src/index.js";
import { ensureFixture, type Fixture } from "./fixture.js";
import { guestTool } from "./guest-tools.js";
import { bootLinux, logTimings } from "./harness.js";

const DISK = 8 << 20;
const SPAN = 4 << 20;
const BS = 4096;
const COUNT = 48;

/** The offsets randio visits: xorshift32 from `seed | 1`, block = x mod (span / bs). */
function expectedOffsets(seed: number, count: number): number[] {
  let x = (seed | 1) >>> 0;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out.push((x % (SPAN / BS)) * BS);
  }
  return out;
}

/** A MemoryDisk that records the guest's requests while `armed`. */
class Recording extends MemoryDisk {
  armed = false;
  readonly reads: number[] = [];
  readonly writes: { offset: number; first: number; last: number; length: number }[] = [];
  override readv(offset: number, buffers: readonly Uint8Array[]) {
    if (this.armed) this.reads.push(offset);
    return super.readv(offset, buffers);
  }
  override writev(offset: number, buffers: readonly Uint8Array[]) {
    const r = super.writev(offset, buffers);
    if (this.armed) {
      const length = buffers.reduce((n, b) => n + b.length, 0);
      const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + offset, length);
      this.writes.push({
        offset,
        length,
        first: view.getUint32(0, true),
        last: view.getUint32(length - 4, true),
      });
    }
    return r;
  }
}

describe("randio in the v86 guest", () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await ensureFixture();
  }, 600_000);

  it("reads and writes 4 KiB blocks at the predicted random offsets, with O_DIRECT", {
    timeout: 400_000,
  }, async () => {
    const disk = new Recording(DISK);
    const device = new VirtioBlkDevice({ backend: disk, serial: "randio" });
    const boot = await bootLinux({
      fixture,
      tools: { randio: await guestTool("randio") },
      onLoaded: (emulator) => {
        attachPvkit(emulator as unknown as V86Emulator, {
          devices: [{ kind: "virtio-pci", device, name: "virtio-blk" }],
        });
      },
      onSerialLine: (line) => {
        if (line === "ARM") disk.armed = true;
        if (line === "DISARM") disk.armed = false;
      },
      script: [
        "echo ARM",
        `/pvkit/randio /dev/vda r ${COUNT} ${BS} ${SPAN} 7; echo "READ-RC $?"`,
        `/pvkit/randio /dev/vda w ${COUNT} ${BS} ${SPAN} 9; echo "WRITE-RC $?"`,
        "echo DISARM",
        // Errors: a bad mode, a span that is not a multiple of BS, a block past the disk.
        `/pvkit/randio /dev/vda x 1 ${BS} ${SPAN} 1 2>/dev/null; echo "USAGE-RC $?"`,
        `/pvkit/randio /dev/vda r 1 ${BS} 5000 1 2>/dev/null; echo "SPAN-RC $?"`,
        `/pvkit/randio /dev/vda r 4 ${BS} ${DISK * 4} 3 2>&1 | sed 's/^/PAST /'`,
        "",
      ].join("\n"),
    });
    logTimings("randio", boot);
    expect(boot.exitStatus).toBe(0);
    expect(boot.scriptLines).toEqual(
      expect.arrayContaining(["READ-RC 0", "WRITE-RC 0", "USAGE-RC 2", "SPAN-RC 2"]),
    );
    // Past the end of the disk: the kernel refuses the request, randio says which.
    expect(boot.scriptLines.find((l) => l.startsWith("PAST "))).toMatch(
      /^PAST randio: read \d+ at block \d+ (failed: errno \d+|moved only 0)$/,
    );

    // One device request per call, in order, where the reference says: nothing was served
    // from the page cache (O_DIRECT) and no read-ahead widened a request.
    expect(disk.reads).toEqual(expectedOffsets(7, COUNT));
    const writeOffsets = expectedOffsets(9, COUNT);
    expect(disk.writes.map((w) => w.offset)).toEqual(writeOffsets);
    // The pattern: u32 word k/4 of request i holds x_i + k.
    let x = 9 | 1;
    disk.writes.forEach((w) => {
      x = (x ^ (x << 13)) >>> 0;
      x = (x ^ (x >>> 17)) >>> 0;
      x = (x ^ (x << 5)) >>> 0;
      expect(w.length).toBe(BS);
      expect(w.first).toBe(x);
      expect(w.last).toBe((x + BS - 4) >>> 0);
    });
    // The offsets are random, not a sequence: most steps are not +4 KiB.
    const sequential = writeOffsets.filter((o, i) => i > 0 && o === writeOffsets[i - 1]! + BS);
    expect(sequential.length).toBeLessThan(COUNT / 4);
  });
});
