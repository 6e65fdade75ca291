/**
 * The guest-visible comparison: Debian's own Linux drivers in v86 on emulated devices
 * (v86's IDE disk, pvkit's RTL8139) and on pvkit's paravirtual ones (virtio-blk,
 * virtio-net). Boots the fixture twice (about a minute, plus the first download of the
 * Debian packages); not part of the main job.
 *
 * @module
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureFixture } from "../../../packages/v86/test/fixture.js";
import {
  comparisonTables,
  runDiskCompareBoot,
  runNetBoot,
} from "../../../packages/v86/test/scenarios.js";
import type { ResultCheck, Suite, SuiteOptions, SuiteResult } from "../suite.js";

async function run(options: SuiteOptions): Promise<SuiteResult> {
  const fixture = await ensureFixture();
  options.log(`v86-guest: Linux ${fixture.kernelVersion}`);
  const dir = mkdtempSync(join(tmpdir(), "pvkit-bench-v86-"));
  try {
    const disk = await runDiskCompareBoot(fixture);
    options.log("v86-guest: disk boot done");
    const net = await runNetBoot(fixture, dir);
    options.log("v86-guest: network boot done");
    const exits = (d: string, op: string) =>
      disk.runs.find((r) => r.disk === d && r.op === op)?.exits ?? Number.NaN;
    const ratio = (emulated: number, pv: number) => emulated / Math.max(1, pv);
    const checks: ResultCheck[] = [
      [
        "dd read: IDE exits ÷ virtio-blk exits",
        ratio(exits("ide", "read"), exits("virtio-blk", "read")),
      ],
      [
        "dd write: IDE exits ÷ virtio-blk exits",
        ratio(exits("ide", "write"), exits("virtio-blk", "write")),
      ],
      [
        "ping flood: RTL8139 exits ÷ virtio-net exits",
        ratio(net.rtl8139.flood.exits, net.virtio.flood.exits),
      ],
      [
        "TCP transfer: RTL8139 exits ÷ virtio-net exits",
        ratio(net.rtl8139.bulk.exits, net.virtio.bulk.exits),
      ],
    ].map(([name, value]) => ({
      name: name as string,
      value: value as number,
      limit: 5,
      unit: "×",
      pass: (value as number) >= 5,
    }));
    const boots = [disk.boot, net.boot].map((b) => (b.timings.readyMs ?? Number.NaN) / 1000);
    return {
      name: "v86-guest",
      title: "Inside Linux in v86: emulated IDE and RTL8139 vs pvkit virtio-blk and virtio-net",
      description:
        "Debian's i386 kernel (" +
        fixture.kernelVersion +
        ") runs in v86 with its own drivers (ata_piix, 8139too, virtio_blk, virtio_net). Times are what the guest " +
        "measured; exits are counted on the host (pvkit's Bus for pvkit devices, V86ExitCounter on v86's IDE ports).",
      tables: comparisonTables(disk, net),
      checks,
      notes: [
        `Boots reached /init's READY in ${boots.map((s) => s.toFixed(1)).join(" s and ")} s.`,
        "The flood is paced (-i 5 ms: busybox ping hangs with -i 0), so packets/s is the same for both NICs; the round trip and the exits per packet are what differ.",
        "Guest times have /proc/uptime's 10 ms resolution and runs are short: the MiB/s columns vary by tens of percent between runs. The exits and instruction counts barely move.",
        "An exit in v86 is a JavaScript call, not a hardware VM exit: far cheaper relative to the emulated CPU, so 11–25× fewer exits show as 2–6× faster dd but not as faster networking.",
        "Every device gets an untimed warm-up pass first: v86's JIT compiles the guest's paths on first use (1 MiB over TCP took 2.9 s cold, 1.25 s warm), which favoured whichever device was measured second.",
        "The TCP transfer stays idle-bound after warm-up: the guest executes only 25–35 million instructions per second during it, and both drivers spend 26–30 thousand instructions per frame. virtio-net still took 1.2–1.4× longer than the RTL8139 and had a longer ping round trip; the extra time is guest idle time, not yet explained: EVENT_IDX on or off, PIC or IO-APIC, the notify register in an I/O or a memory BAR, and virtio_net with napi_tx=0 (ruling out TCP Small Queues) changed nothing.",
      ],
      data: {
        disk: disk.runs,
        net: {
          virtio: { flood: net.virtio.flood, bulk: net.virtio.bulk },
          rtl8139: { flood: net.rtl8139.flood, bulk: net.rtl8139.bulk },
        },
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The registered suite. */
export const v86GuestSuite: Suite = {
  name: "v86-guest",
  summary:
    "Linux in v86: dd on IDE vs virtio-blk, TCP transfer and ping flood on RTL8139 vs virtio-net (boots twice)",
  run,
};
