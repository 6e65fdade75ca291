/**
 * Linux's own `virtio_blk` drives pvkit's virtio-blk in v86, over virtio-pci and over
 * virtio-mmio (declared by pvkit's SSDT), with a MemoryDisk and a FileDisk: the guest
 * reads known sectors, writes a pattern with fsync (FLUSH), drops its caches and reads it
 * back; the host checks its disk afterwards.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureFixture, type Fixture } from "./fixture.js";
import { logTimings } from "./harness.js";
import { DISK_SECTORS, KNOWN_SECTORS, runBlkBoot } from "./scenarios.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-v86-blk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("Linux virtio_blk on pvkit virtio-blk in v86", () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await ensureFixture();
  }, 600_000);

  for (const backends of [
    { pci: "memory", mmio: "file" },
    { pci: "file", mmio: "memory" },
  ] as const) {
    it(`PCI disk on a ${backends.pci} back-end, virtio-mmio disk on a ${backends.mmio} back-end`, {
      timeout: 400_000,
    }, async () => {
      const r = await runBlkBoot(fixture, backends, dir);
      logTimings(`blk pci=${backends.pci} mmio=${backends.mmio}`, r.boot);
      for (const d of r.disks) {
        console.log(
          `  ${d.name} (${d.transport}, ${d.backend}): ${d.requests} requests, ${d.flushes} flushes, ` +
            `${d.exits} exits (${(d.exits / d.requests).toFixed(2)} per request)`,
        );
      }
      expect(r.boot.exitStatus).toBe(0);
      expect(r.boot.insmodFailures).toEqual([]);
      expect(r.boot.kernelWarnings).toEqual([]);
      expect(r.disks.map((d) => d.transport)).toEqual(["pci", "mmio"]);
      const [pci, mmio] = r.disks as [(typeof r.disks)[0], (typeof r.disks)[0]];
      expect(pci.sysfs).toMatch(/^\/sys\/devices\/pci0000:00\/0000:00:[0-9a-f]{2}\.0\/virtio\d+$/);
      expect(mmio.sysfs).toMatch(/^\/sys\/devices\/platform\/LNRO0005:00\/virtio\d+$/);
      expect(pci.serial).toBe("pvkit-pci-disk");
      expect(mmio.serial).toBe("pvkit-mmio-disk");
      for (const d of r.disks) {
        expect(d.backend).toBe(backends[d.transport]);
        expect(d.sectors).toBe(DISK_SECTORS);
        expect(d.readsMatching).toBe(KNOWN_SECTORS.length);
        expect(d.wroteOk).toBe(true);
        expect(d.readBackOk, `${d.backLine}\n${r.boot.scriptOutput}`).toBe(true);
        expect(d.hostHasPattern).toBe(true);
        expect(d.errors).toEqual({}); // a FileDisk read lost to a grown v86 RAM failed as EIO
        expect(d.otherBytesChanged).toBe(0);
        expect(d.flushes).toBeGreaterThanOrEqual(1);
        expect(d.exits).toBeGreaterThan(0);
      }
      expect(r.dmesg.some((l) => /ACPI: Table Upgrade: install \[SSDT-\s*PVKIT/.test(l))).toBe(
        true,
      );
      expect(
        r.dmesg.filter((l) =>
          /virtio_blk virtio\d+: \[vd[ab]\] 16384 512-byte logical blocks/.test(l),
        ),
      ).toHaveLength(2);
    });
  }
});
