/**
 * The Node examples run, and what they report is checked: bytes round-tripped through
 * the block driver on both transports, frames exchanged and captured by the NIC pair,
 * random bytes from the README's device. The README's code block is the README example,
 * verbatim. And each example also runs as a script.
 */

import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { main as blockMain, runBlockDevice } from "../block-device.js";
import { main as nicPairMain, readPcap } from "../nic-pair.js";
import { main as readmeMain } from "../readme-device.js";

const examples = fileURLToPath(new URL("..", import.meta.url));
const root = join(examples, "..");
const scratch = mkdtempSync(join(tmpdir(), "pvkit-examples-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("block-device example", () => {
  it("writes, flushes and reads back sectors through VirtioBlkDriver on virtio-mmio and virtio-pci", async () => {
    const lines: string[] = [];
    const results = await blockMain(["mmio", "pci"], { log: (line) => lines.push(line) });
    expect(results.map((r) => r.transport)).toEqual(["mmio", "pci"]);
    for (const r of results) {
      expect(r.written.length).toBe(4096 + 512);
      expect(r.readBack).toEqual(r.written);
      expect(r.onDisk).toEqual(r.written);
      expect(r.serial).toBe(`pvkit-${r.transport}`);
      expect(r.capacitySectors).toBe(2048);
      expect(r.requests).toEqual({ write: 2, flush: 1, read: 2, getId: 1 });
      expect(r.setupExits).toBeGreaterThan(0);
      expect(r.ioExits).toBeGreaterThan(0);
      const byDevice = Object.values(r.exitsByDevice).reduce((a, b) => a + b, 0);
      expect(byDevice).toBe(r.setupExits + r.ioExits);
      expect(r.interrupts).toBeGreaterThan(0);
      expect(r.heapAtSetup).toBeGreaterThan(0);
      expect(r.heapInUse).toBe(r.heapAtSetup); // every bounce buffer went back to the heap
    }
    // PCI probing and BAR assignment go through configuration cycles: far more exits.
    expect(results[1]!.setupExits).toBeGreaterThan(results[0]!.setupExits);
    expect(lines.some((l) => l.includes("virtio-blk over virtio-pci"))).toBe(true);
  });

  it("without onInterrupt() the first request never completes, and the CPU loop says why", async () => {
    await expect(runBlockDevice("mmio", { log: () => {}, forgetInterrupts: true })).rejects.toThrow(
      /onInterrupt\(\) called when the IRQ line rises/,
    );
  });
});

describe("nic-pair example", () => {
  it("exchanges frames between virtio-net and an RTL8139 on one switch, captured to pcap", async () => {
    const pcapPath = join(scratch, "pair.pcap");
    const r = await nicPairMain({ rounds: 5, pcapPath, log: () => {} });
    const pongs = [0, 1, 2, 3, 4].map((i) => `pong ${i}`);
    expect(r.replies).toEqual(pongs);
    expect(r.sent).toEqual({ virtio: 5, rtl8139: 5 });
    expect(r.received).toEqual({ virtio: 5, rtl8139: 5 });
    expect(r.switchFrames).toBe(10);
    expect(r.exits.virtio).toBeGreaterThan(0);
    expect(r.exits.rtl8139).toBeGreaterThan(r.exits.virtio); // full emulation costs more exits
    expect(r.interrupts.virtio).toBeGreaterThan(0);
    expect(r.interrupts.rtl8139).toBeGreaterThan(0);
    expect(r.pcap).toEqual({
      path: pcapPath,
      linkType: 1,
      records: 10,
      payloads: pongs.flatMap((p, i) => [`ping ${i}`, p]),
    });
  });

  it("readPcap refuses a file that is not a pcap capture", () => {
    const path = join(scratch, "not.pcap");
    writeFileSync(path, new Uint8Array(32));
    expect(() => readPcap(path)).toThrow(/not a pcap file/);
  });
});

describe("readme-device example", () => {
  it("gets random bytes from VirtioRngDevice through VirtioRngDriver", async () => {
    const r = await readmeMain();
    expect(r.bytes.length).toBe(32);
    expect(r.bytes.some((b) => b !== 0)).toBe(true);
    expect(r.exits).toBeGreaterThan(0);
    expect(r.interrupts).toBe(1);
  });

  it("is the README's code block under 'Using a device from an emulator', verbatim", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const file = readFileSync(join(examples, "readme-device.ts"), "utf8");
    const section = readme
      .split(/^## /m)
      .find((s) => s.startsWith("Using a device from an emulator"));
    expect(section, "README.md has no section '## Using a device from an emulator'").toBeDefined();
    const block = /^```ts\n([\s\S]*?)^```$/m.exec(section!)?.[1];
    expect(block, "the section has no ```ts block").toBeDefined();
    // On a difference: copy examples/readme-device.ts into the README's block, unchanged.
    expect(block).toBe(file);
  });
});

describe("each example runs as a script", () => {
  const tsx = join(root, "node_modules", ".bin", "tsx");
  const run = promisify(execFile);
  const cases = [
    { file: "readme-device.ts", args: [], expect: /32 random bytes: [0-9a-f]{64}; \d+ exits/ },
    { file: "block-device.ts", args: ["pci"], expect: /read them back: identical/ },
    { file: "nic-pair.ts", args: ["3"], expect: /capture: 6 frames \(link type 1\)/ },
  ];
  for (const c of cases) {
    it(`tsx --conditions=@pvkit/source examples/${[c.file, ...c.args].join(" ")}`, async () => {
      const { stdout } = await run(
        tsx,
        ["--conditions=@pvkit/source", join(examples, c.file), ...c.args],
        // The NIC pair writes its capture under TMPDIR: keep it in this test's scratch space.
        { cwd: root, env: { ...process.env, TMPDIR: scratch }, timeout: 60_000 },
      );
      expect(stdout).toMatch(c.expect);
    });
  }
});
