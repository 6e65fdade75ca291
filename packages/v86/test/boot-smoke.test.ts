/**
 * Boots Debian's i386 kernel in v86 with no pvkit devices: checks the fixture (kernel
 * version, every module loads), the harness protocol (script output, exit status, the
 * appended script cpio and an early-cpio prefix), and the ACPI configuration the
 * virtio-mmio tests rely on (`acpiphp.disable=1` keeps the PCI devices).
 */

import { beforeAll, describe, expect, it } from "vitest";
import { CpioMode, cpioNewc } from "../src/cpio.js";
import { ensureFixture, type Fixture } from "./fixture.js";
import { type BootResult, bootLinux, logTimings } from "./harness.js";

const FIXTURE_TIMEOUT = 600_000;
const BOOT_TIMEOUT = 300_000;

/** Prints tagged lines, so kernel messages on the same console cannot be mistaken for them. */
const SCRIPT = `echo "UNAME $(uname -r)"
echo "CMDLINE $(cat /proc/cmdline)"
echo "MODULES $(wc -l < /proc/modules)"
for d in /sys/bus/pci/devices/*; do
  echo "PCI \${d##*/} $(cat $d/vendor):$(cat $d/device)"
done
`;

function tagged(r: BootResult, tag: string): string[] {
  return r.scriptLines.filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(tag.length + 1));
}

describe("v86 boots the Debian fixture", () => {
  let fixture: Fixture;

  beforeAll(async () => {
    fixture = await ensureFixture();
  }, FIXTURE_TIMEOUT);

  it("without ACPI: the fixture's kernel, all modules, the PC's PCI devices, exit 0", {
    timeout: BOOT_TIMEOUT,
  }, async () => {
    const r = await bootLinux({ fixture, script: SCRIPT });
    logTimings("no ACPI", r);
    expect(r.timings.readyMs).toBeDefined();
    expect(r.insmodFailures).toEqual([]);
    expect(r.exitStatus).toBe(0);
    expect(tagged(r, "UNAME")).toEqual([fixture.kernelVersion]);
    expect(tagged(r, "CMDLINE")).toEqual([r.cmdline]);
    expect(r.cmdline).not.toContain("acpiphp.disable=1");
    expect(tagged(r, "MODULES")).toEqual([String(fixture.modules.length)]);
    const pci = tagged(r, "PCI");
    expect(pci).toContain("0000:00:00.0 0x8086:0x1237"); // i440FX host bridge
    expect(pci).toContain("0000:00:1e.0 0x8086:0x7010"); // PIIX3 IDE, slot 30
    expect(r.console).not.toMatch(/^[^\n]*ACPI: Interpreter enabled/m);
    expect(r.kernelWarnings).toEqual([]);
  });

  it("with ACPI: tables used, PCI slots ≥3 kept, prefix cpio read, exit 3", {
    timeout: BOOT_TIMEOUT,
  }, async () => {
    const prefix = cpioNewc([
      { name: "pvkit", mode: CpioMode.DIR | 0o755 },
      { name: "pvkit/prefix.txt", mode: CpioMode.FILE | 0o644, data: "from-the-early-cpio\n" },
    ]);
    const r = await bootLinux({
      fixture,
      acpi: true,
      initrdPrefix: prefix,
      script: `${SCRIPT}echo "PREFIX $(cat /pvkit/prefix.txt)"\nexit 3\n`,
    });
    logTimings("ACPI", r);
    expect(r.timings.readyMs).toBeDefined();
    expect(r.insmodFailures).toEqual([]);
    expect(r.exitStatus).toBe(3);
    expect(r.cmdline).toContain("acpiphp.disable=1");
    expect(tagged(r, "CMDLINE")).toEqual([r.cmdline]);
    expect(r.console).toMatch(/^\[[ \d.]+\] ACPI: Interpreter enabled$/m);
    expect(r.console).toMatch(/^\[[ \d.]+\] ACPI: Using IOAPIC for interrupt routing$/m);
    const pci = tagged(r, "PCI");
    expect(pci).toContain("0000:00:07.0 0x8086:0x7113"); // PIIX4 ACPI, only with acpi
    expect(pci).toContain("0000:00:12.0 0x1234:0x1111"); // VGA, slot 18: acpiphp would drop it
    expect(pci).toContain("0000:00:1e.0 0x8086:0x7010");
    expect(tagged(r, "PREFIX")).toEqual(["from-the-early-cpio"]);
    expect(tagged(r, "MODULES")).toEqual([String(fixture.modules.length)]);
    expect(r.kernelWarnings).toEqual([]);
  });
});
