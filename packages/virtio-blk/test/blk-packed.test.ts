/**
 * virtio-blk over packed virtqueues (§2.8): the unchanged `VirtioBlkDevice` and
 * `VirtioBlkDriver` negotiate VIRTIO_F_RING_PACKED when the device offers it
 * (`ringPacked: true`) and serve random concurrent batches byte-exact against a model, on
 * virtio-mmio and virtio-pci, with and without EVENT_IDX and indirect tables.
 */

import { MemoryDisk } from "@pvkit/virtio-blk";
import {
  featureMask,
  hasFeature,
  PackedDeviceQueue,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from "@pvkit/virtio-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { blkRig, expectSameBytes, pattern } from "./harness.js";

const DISK = 1 << 20;
const SECTORS = DISK / 512;

interface Cfg {
  readonly name: string;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}
const CFGS: readonly Cfg[] = [
  { name: "EVENT_IDX + INDIRECT_DESC", eventIdx: true, indirect: true },
  { name: "EVENT_IDX, chained descriptors", eventIdx: true, indirect: false },
  { name: "flags only, INDIRECT_DESC", eventIdx: false, indirect: true },
  { name: "flags only, chained descriptors", eventIdx: false, indirect: false },
];

const opArb = fc.record({
  write: fc.boolean(),
  sector: fc.nat(SECTORS - 1),
  sectors: fc.integer({ min: 1, max: 48 }),
  seed: fc.nat(),
});

describe.each(["mmio", "pci"] as const)("virtio-blk on packed rings over %s", (transport) => {
  it.each(CFGS)("random concurrent batches are byte-exact: $name", async (cfg) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 20 }), { minLength: 1, maxLength: 5 }),
        async (batches) => {
          const disk = new MemoryDisk(DISK);
          disk.bytes.set(pattern(7, DISK));
          const model = disk.bytes.slice();
          const without =
            (cfg.eventIdx ? 0n : featureMask(VIRTIO_F_EVENT_IDX)) |
            (cfg.indirect ? 0n : featureMask(VIRTIO_F_INDIRECT_DESC));
          const rig = blkRig(disk, {
            transport,
            device: { ringPacked: true, maxInFlight: 6, numQueues: 2, queueSize: 16 },
            driver: { withoutFeatures: without },
          });
          expect(hasFeature(rig.device.negotiatedFeatures, VIRTIO_F_RING_PACKED)).toBe(true);
          expect(rig.device.ringPacked).toBe(true);
          expect(rig.device.queues.every((q) => q instanceof PackedDeviceQueue)).toBe(true);
          for (const batch of batches) {
            // Disjoint ranges within a batch, so the model is exact whatever the order.
            const taken = new Uint8Array(SECTORS);
            const ops = batch.filter((op) => {
              const end = Math.min(op.sector + op.sectors, SECTORS);
              if (taken.subarray(op.sector, end).some((t) => t !== 0)) return false;
              taken.fill(1, op.sector, end);
              return true;
            });
            const results = await Promise.all(
              ops.map(async (op) => {
                const n = Math.min(op.sectors, SECTORS - op.sector);
                if (op.write) {
                  await rig.driver.write(op.sector, pattern(op.seed, n * 512));
                  return null;
                }
                return await rig.driver.read(op.sector, n * 512);
              }),
            );
            ops.forEach((op, i) => {
              const n = Math.min(op.sectors, SECTORS - op.sector);
              if (op.write) model.set(pattern(op.seed, n * 512), op.sector * 512);
              else
                expectSameBytes(
                  results[i]!,
                  model.subarray(op.sector * 512, (op.sector + n) * 512),
                );
            });
          }
          await rig.driver.flush();
          expectSameBytes(await rig.driver.read(0, DISK), model);
          expectSameBytes(disk.bytes, model);
          expect(rig.device.stats.errors).toEqual({});
          expect(rig.device.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
          const q0 = rig.device.queues[0]!;
          expect(q0.stats.popped).toBeGreaterThan(0);
          expect(q0.inFlight).toBe(0);
          if (cfg.eventIdx)
            expect(hasFeature(rig.device.negotiatedFeatures, VIRTIO_F_EVENT_IDX)).toBe(true);
        },
      ),
      { seed: 0x9acced, numRuns: 6 },
    );
  });

  it("a driver that does not want packed rings gets split rings from the same device", async () => {
    const disk = new MemoryDisk(DISK);
    const rig = blkRig(disk, {
      transport,
      device: { ringPacked: true },
      driver: { withoutFeatures: featureMask(VIRTIO_F_RING_PACKED) },
    });
    expect(rig.device.ringPacked).toBe(false);
    expect(rig.device.queues[0]).not.toBeInstanceOf(PackedDeviceQueue);
    await rig.driver.write(3, pattern(1, 4096));
    expectSameBytes(await rig.driver.read(3, 4096), pattern(1, 4096));
  });

  it("a device that does not offer the bit keeps split rings (the default)", async () => {
    const rig = blkRig(new MemoryDisk(DISK), { transport });
    expect(hasFeature(rig.device.deviceFeatures, VIRTIO_F_RING_PACKED)).toBe(false);
    expect(rig.device.ringPacked).toBe(false);
    await rig.driver.write(0, pattern(2, 1024));
    expectSameBytes(await rig.driver.read(0, 1024), pattern(2, 1024));
  });
});
