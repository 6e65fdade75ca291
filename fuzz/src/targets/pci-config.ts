/**
 * Fuzz target `pci-config`: PCI configuration space through `PciHost` — the 0xCF8/0xCFC
 * mechanism (PCI 3.0 §3.2.2.3.2) and ECAM (PCIe §7.2.2) — with a virtio-pci entropy
 * device that has MSI-X, while a real driver keeps requests running.
 *
 * A case interleaves configuration cycles of any width at any register of any function
 * (ours and absent ones), BAR moves while the queue runs, Command-register decode toggles
 * (I/O, memory, bus master, INTx disable), MSI-X control writes (enable / function mask),
 * MSI-X table and PBA writes through the BAR with per-vector mask races, and requests
 * from the driver. Checks: no exception escapes, the bus caught none, nothing outside
 * guest memory changed, and after restoring the configuration (BARs and Command as
 * firmware sets them) the device, reset, serves a real driver (§2.4).
 *
 * @module
 */

import {
  assignPciBars,
  Bus,
  PCI_CONFIG_ADDRESS_PORT,
  PciConfigOffset,
  PciConfigPortAccess,
  PciHost,
} from "@pvkit/platform";
import {
  DriverError,
  GuestAllocator,
  VirtioPciDriverTransport,
  VirtioPciTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import * as fc from "fast-check";
import {
  expectNoBusFaults,
  expectServesAfterReset,
  GuardedMemory,
  noThrow,
  tick,
} from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

const SLOT = 3;
const ECAM = 0xe000_0000;
const WINDOWS = { io: 0xc000, mem32: 0xfe00_0000, mem64: 0x8_0000_0000 };
const MEMORY_BYTES = 0x10_0000;

/** One step of a `pci-config` case. */
export type PciStep =
  | {
      /** A configuration cycle: 0xCF8/0xCFC or ECAM, any function, any register. */
      readonly k: "cfg";
      readonly via: "port" | "ecam";
      readonly write: boolean;
      readonly size: 1 | 2 | 4;
      readonly devfn: number;
      readonly reg: number;
      readonly value: number;
    }
  | { readonly k: "bar"; readonly bar: number; readonly value: number; readonly high: number }
  | { readonly k: "command"; readonly value: number }
  | { readonly k: "msixCtl"; readonly enable: boolean; readonly maskAll: boolean }
  | {
      /** A write into the MSI-X table (or PBA when `pba`) through the BAR. */
      readonly k: "msix";
      readonly pba: boolean;
      readonly offset: number;
      readonly size: 1 | 2 | 4;
      readonly value: number;
    }
  | { readonly k: "request"; readonly bytes: number }
  | { readonly k: "turn" };

/** A `pci-config` case. */
export interface PciCase {
  readonly steps: readonly PciStep[];
}

const ourDevfn = SLOT << 3;
const sizeArb = fc.constantFrom<1 | 2 | 4>(1, 2, 4);
const valueArb = fc.oneof(fc.nat(0xffff_ffff), fc.constantFrom(0, 0xffff_ffff, 0x7, 0x4, 0x400));

const stepArb: fc.Arbitrary<PciStep> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant("cfg" as const),
      via: fc.constantFrom("port" as const, "ecam" as const),
      write: fc.boolean(),
      size: sizeArb,
      devfn: fc.oneof(
        { weight: 6, arbitrary: fc.constant(ourDevfn) },
        { weight: 1, arbitrary: fc.nat(0xff) },
      ),
      reg: fc.oneof(
        fc.nat(0x3f).map((n) => n * 4),
        fc.nat(0xfff),
      ),
      value: valueArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("bar" as const),
      bar: fc.nat(5),
      value: fc.oneof(
        fc.constant(0xffff_ffff),
        fc.nat(0xffff_ffff),
        fc.constantFrom(0xfe10_0000, 0xd000, 0),
      ),
      high: fc.oneof(fc.constant(0), fc.nat(0xffff_ffff)),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("command" as const),
      value: fc.oneof(fc.nat(0x7ff), fc.constantFrom(0, 7, 0x407, 6, 5)),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("msixCtl" as const),
      enable: fc.boolean(),
      maskAll: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("msix" as const),
      pba: fc.boolean(),
      offset: fc.nat(0x40),
      size: sizeArb,
      value: valueArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("request" as const),
      bytes: fc.integer({ min: 1, max: 256 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("turn" as const) }) },
);

/** The `pci-config` case generator. */
export const pciCaseArb: fc.Arbitrary<PciCase> = fc.record({
  steps: fc.array(stepArb, { minLength: 1, maxLength: 24 }),
});

/** Plays one `pci-config` case on a fresh machine. */
export async function runPciCase(c: PciCase): Promise<void> {
  const guard = new GuardedMemory(MEMORY_BYTES);
  const memory = guard.memory;
  const bus = new Bus();
  const messages: Array<[bigint, number]> = [];
  const pci = new VirtioPciTransport({
    device: new VirtioRngDevice({ queueSize: 16 }),
    memory,
    name: "virtio-rng-pci",
    layout: "mem64",
    msix: {
      vectors: 2,
      onMessage: (addr: bigint, data: number) => void messages.push([addr, data]),
    },
  });
  const host = new PciHost(bus);
  host.attach(pci, SLOT);
  host.mapConfigPorts();
  host.mapEcam(ECAM);
  const cfg = new PciConfigPortAccess(bus, SLOT);
  const msixCap = pci.config.capabilities().find((e) => e.id === 0x11)?.offset ?? -1;
  const firmware = (): void => {
    assignPciBars(cfg, WINDOWS);
    // A driver that uses INTx turns MSI-X off (PCI 3.0 §6.8.2.3: with MSI-X enabled the
    // function must not use INTx).
    if (msixCap >= 0) cfg.write(msixCap + 3, 1, 0);
  };
  firmware();
  const t = VirtioPciDriverTransport.probe(bus, cfg);
  if (t instanceof DriverError) throw new Error(`probe failed: ${t.message}`);
  const drv = VirtioRngDriver.create(t, {
    memory,
    allocator: new GuestAllocator(0x1000, 0x7_f000),
    queueSize: 16,
  });
  if (drv instanceof DriverError) throw new Error(`driver failed: ${drv.message}`);
  guard.arm([{ addr: 0, len: MEMORY_BYTES }]); // guest RAM is the driver's; guard the outside
  const what = "virtio-rng over PCI";
  for (const s of c.steps) {
    switch (s.k) {
      case "cfg": {
        const reg = s.reg & ~(s.size - 1);
        const label = `${s.via} config ${s.write ? "write" : "read"}${8 * s.size} devfn ${s.devfn} reg 0x${reg.toString(16)}`;
        noThrow(label, () => {
          if (s.via === "ecam") {
            const addr = ECAM + (s.devfn << 12) + (reg & 0xfff);
            if (s.write)
              bus.write(
                "mmio",
                addr,
                s.size,
                s.value & (s.size === 4 ? 0xffff_ffff : (1 << (8 * s.size)) - 1),
              );
            else bus.read("mmio", addr, s.size);
          } else {
            bus.write(
              "pio",
              PCI_CONFIG_ADDRESS_PORT,
              4,
              (0x8000_0000 | (s.devfn << 8) | (reg & 0xfc)) >>> 0,
            );
            const data = 0xcfc + (reg & 3);
            if (s.write)
              bus.write(
                "pio",
                data,
                s.size,
                s.value & (s.size === 4 ? 0xffff_ffff : (1 << (8 * s.size)) - 1),
              );
            else bus.read("pio", data, s.size);
          }
        });
        break;
      }
      case "bar":
        noThrow(`BAR ${s.bar} move`, () => {
          cfg.write(PciConfigOffset.BASE_ADDRESS_0 + 4 * s.bar, 4, s.value >>> 0);
          if (s.bar < 5) cfg.write(PciConfigOffset.BASE_ADDRESS_0 + 4 * s.bar + 4, 4, s.high >>> 0);
        });
        break;
      case "command":
        noThrow(`Command 0x${s.value.toString(16)}`, () =>
          cfg.write(PciConfigOffset.COMMAND, 2, s.value),
        );
        break;
      case "msixCtl":
        if (msixCap >= 0)
          noThrow("MSI-X control", () =>
            cfg.write(msixCap + 3, 1, (s.enable ? 0x80 : 0) | (s.maskAll ? 0x40 : 0)),
          );
        break;
      case "msix": {
        const m = pci.msix;
        if (m === null || m === undefined) break;
        const off = s.offset & ~(s.size - 1);
        noThrow(`MSI-X ${s.pba ? "PBA" : "table"} write at ${off}`, () => {
          const v = s.value & (s.size === 4 ? 0xffff_ffff : (1 << (8 * s.size)) - 1);
          if (s.pba) m.readPba(off, s.size);
          else m.writeTable(off, s.size, v);
        });
        break;
      }
      case "request":
        drv.read(s.bytes).then(
          () => {},
          () => {},
        );
        break;
      case "turn":
        await tick();
        noThrow("interrupt", () => drv.onInterrupt());
        break;
    }
  }
  await tick();
  expectNoBusFaults(bus, what);
  const outside = guard.outsideWrites();
  if (outside.length > 0)
    throw new FuzzFinding("canary", `${what}: wrote outside guest memory at ${outside.join(", ")}`);
  // Firmware puts the BARs and Command back; the device, reset, serves a real driver.
  noThrow("firmware BAR assignment", firmware);
  const t2 = VirtioPciDriverTransport.probe(bus, cfg);
  if (t2 instanceof DriverError)
    throw new FuzzFinding(
      "serve-after-reset",
      `${what}: the function no longer probes: ${t2.message}`,
    );
  await expectServesAfterReset(
    { transport: t2, memory, scratch: { addr: 0x8_0000, len: 0x8_0000 } },
    { kind: "rng", bytes: 32 },
    what,
  );
  expectNoBusFaults(bus, `${what} (serve check)`);
}

/** The `pci-config` target. */
export const pciConfigTarget: FuzzTarget<PciCase> = {
  name: "pci-config",
  description:
    "PCI configuration space through PciHost (0xCF8/0xCFC and ECAM), BAR moves while the queue runs, MSI-X table/PBA and masking, Command decode toggles",
  kind: "register",
  arbitrary: pciCaseArb,
  run: runPciCase,
};
