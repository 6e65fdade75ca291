/**
 * Linux's own `virtio_ring` on pvkit's packed virtqueues (§2.8): the blk and net boot
 * scenarios run again with VIRTIO_F_RING_PACKED offered (`ringPacked: true`); the guest
 * prints each virtio device's negotiated features from sysfs (one '0'/'1' per bit), bit 34
 * must be '1', and the same disk and network checks must pass.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VIRTIO_F_RING_PACKED } from "@pvkit/virtio-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureFixture, type Fixture } from "./fixture.js";
import { logTimings } from "./harness.js";
import {
  BULK_BYTES,
  DISK_SECTORS,
  FLOOD,
  KNOWN_SECTORS,
  NICS,
  runBlkBoot,
  runNetBoot,
  virtioFeatures,
} from "./scenarios.js";

const dir = mkdtempSync(join(tmpdir(), "pvkit-v86-packed-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("Linux on pvkit packed virtqueues in v86", () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await ensureFixture();
  }, 600_000);

  it("virtio_blk over virtio-pci and virtio-mmio negotiates RING_PACKED and passes the disk checks", {
    timeout: 400_000,
  }, async () => {
    const r = await runBlkBoot(fixture, { pci: "memory", mmio: "file" }, dir, {
      ringPacked: true,
    });
    logTimings("blk packed", r.boot);
    expect(r.boot.exitStatus).toBe(0);
    expect(r.boot.insmodFailures).toEqual([]);
    expect(r.boot.kernelWarnings).toEqual([]);
    const features = virtioFeatures(r.boot.scriptLines);
    expect(features.size).toBe(2);
    for (const [path, bits] of features) {
      expect(bits.length, path).toBeGreaterThanOrEqual(64);
      expect(bits[VIRTIO_F_RING_PACKED], path).toBe("1");
    }
    expect(r.disks.map((d) => d.transport)).toEqual(["pci", "mmio"]);
    for (const d of r.disks) {
      expect(features.get(d.sysfs)?.[VIRTIO_F_RING_PACKED]).toBe("1");
      expect(d.sectors).toBe(DISK_SECTORS);
      expect(d.readsMatching).toBe(KNOWN_SECTORS.length);
      expect(d.wroteOk).toBe(true);
      expect(d.readBackOk, `${d.backLine}\n${r.boot.scriptOutput}`).toBe(true);
      expect(d.hostHasPattern).toBe(true);
      expect(d.errors).toEqual({});
      expect(d.otherBytesChanged).toBe(0);
      expect(d.flushes).toBeGreaterThanOrEqual(1);
    }
    expect(r.disks.map((d) => d.serial)).toEqual(["pvkit-pci-disk", "pvkit-mmio-disk"]);
  });

  it("virtio_net negotiates RING_PACKED: ping, a ping flood and a 4 MiB TCP transfer", {
    timeout: 400_000,
  }, async () => {
    const net = await runNetBoot(fixture, dir, { ringPacked: true });
    logTimings("net packed", net.boot);
    expect(net.boot.exitStatus).toBe(0);
    expect(net.boot.kernelWarnings).toEqual([]);
    const features = [...virtioFeatures(net.boot.scriptLines).values()];
    expect(features).toHaveLength(1);
    expect(features[0]![VIRTIO_F_RING_PACKED]).toBe("1");
    const n = net.virtio;
    expect(n.mac).toBe(NICS.virtio.mac);
    expect(n.ping).toEqual({ status: 0, replies: 4 });
    expect(n.floodSummary).toContain(
      `${FLOOD.count} packets transmitted, ${FLOOD.count} packets received, 0% packet loss`,
    );
    expect(n.host.echoReplies).toBeGreaterThanOrEqual(4 + FLOOD.count);
    expect(n.bulk.status).toBe(0);
    expect(n.bulk.tcpBytes).toBe(BULK_BYTES);
    expect(n.host.tcpRefused).toBe(0);
    // The emulated NIC in the same boot is untouched by the option.
    expect(net.rtl8139.ping).toEqual({ status: 0, replies: 4 });
  });
});
