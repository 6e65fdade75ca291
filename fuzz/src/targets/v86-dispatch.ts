/**
 * Fuzz target `v86-dispatch`: the v86 adapter's dispatch (`attachPvkit`,
 * packages/v86/src/attach.ts) driven with random port and MMIO accesses of every width v86
 * has (read8/16/32, write8/16/32, the split `mmap_write16`) and random PCI configuration
 * cycles through v86's `pci_addr`/`pci_query`/`pci_write*` entry points — no boot: the
 * emulator is a fake shaped like what attach.ts uses.
 *
 * Attached: a virtio-pci entropy device (I/O BAR) and a virtio-mmio block device.
 * Checks: no exception reaches v86, the bus caught none, nothing outside guest RAM in the
 * wasm memory changed (canaries around `mem8`), and afterwards the virtio-mmio disk,
 * reset through the same v86 MMIO path, serves a real driver (§2.4).
 *
 * @module
 */

import type { AccessSize, AddressSpace, BusAccess } from "@pvkit/platform";
import {
  attachPvkit,
  type PvkitV86,
  type V86Cpu,
  type V86Emulator,
  type V86PciDevice,
  type V86PortEntry,
} from "@pvkit/v86";
import { MemoryDisk, VirtioBlkDevice } from "@pvkit/virtio-blk";
import { DriverError, VirtioMmioDriverTransport, VirtioRngDevice } from "@pvkit/virtio-core";
import * as fc from "fast-check";
import { CANARY_BYTE, expectNoBusFaults, expectServesAfterReset, noThrow } from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

const RAM = 0x20_0000;
const GUARD = 0x1_0000;
const PAGE = 0x1_0000;

let wasm: WebAssembly.Memory | null = null;
function sharedWasm(): WebAssembly.Memory {
  wasm ??= new WebAssembly.Memory({ initial: (RAM + 2 * GUARD) / PAGE });
  new Uint8Array(wasm.buffer).fill(0);
  return wasm;
}

const nothing = (): void => {};
/** What an unclaimed v86 port reads and writes (shared by every free port). */
const EMPTY: V86PortEntry = {
  read8: () => 0xff,
  read16: () => 0xffff,
  read32: () => -1,
  write8: nothing,
  write16: nothing,
  write32: nothing,
};

/** A fake v86 CPU: port table, MMIO granules, PCI bus 0, wasm memory with guards. */
class FakeCpu implements V86Cpu {
  // One wasm memory per worker, reused: each one reserves a large address range, and
  // creating one per case leaves the collector most of the work.
  readonly wasm_memory = sharedWasm();
  readonly mem8 = new Uint8Array(this.wasm_memory.buffer, GUARD, RAM);
  readonly irqs = new Map<number, number>();
  readonly mmio = new Map<
    number,
    {
      r8: (a: number) => number;
      w8: (a: number, v: number) => void;
      r32: (a: number) => number;
      w32: (a: number, v: number) => void;
    }
  >();
  readonly io;
  readonly devices;

  constructor() {
    const empty8 = EMPTY.read8;
    const ports: V86PortEntry[] = [];
    for (let p = 0; p < 0x1_0000; p++) ports.push({ ...EMPTY });
    const mmio = this.mmio;
    this.io = {
      empty_port_read8: empty8,
      ports,
      register_read(
        port: number,
        _d: object,
        r8?: (p: number) => number,
        r16?: (p: number) => number,
        r32?: (p: number) => number,
      ) {
        const e = ports[port]!;
        if (r8) e.read8 = r8;
        if (r16) e.read16 = r16;
        if (r32) e.read32 = r32;
      },
      register_write(
        port: number,
        _d: object,
        w8?: (v: number) => void,
        w16?: (v: number) => void,
        w32?: (v: number) => void,
      ) {
        const e = ports[port]!;
        if (w8) e.write8 = w8;
        if (w16) e.write16 = w16;
        if (w32) e.write32 = w32;
      },
      mmap_register(
        addr: number,
        size: number,
        r8: (a: number) => number,
        w8: (a: number, v: number) => void,
        r32: (a: number) => number,
        w32: (a: number, v: number) => void,
      ) {
        for (let g = addr; g < addr + size; g += 0x2_0000) mmio.set(g >>> 17, { r8, w8, r32, w32 });
      },
    };
    const spaces: (Int32Array | undefined)[] = [];
    const devices: (object | undefined)[] = [];
    const pci = {
      devices,
      device_spaces: spaces,
      pci_addr: new Uint8Array(4),
      pci_response32: new Int32Array(1),
      isa_bridge_space8: new Uint8Array(256),
      register_device(d: V86PciDevice): Int32Array {
        const s = new Int32Array(64);
        const b = new Uint8Array(s.buffer);
        for (let i = 0; i < 256; i++) b[i] = d.pci_space[i] ?? 0;
        spaces[d.pci_id] = s;
        devices[d.pci_id] = d;
        return s;
      },
      pci_query(): void {
        const a = pci.pci_addr;
        const bdf = (a[2]! << 8) | a[1]!;
        const s = spaces[bdf];
        pci.pci_response32[0] = s === undefined ? -1 : s[(a[0]! & 0xfc) >> 2]!;
      },
      pci_write8(address: number, value: number): void {
        const s = spaces[(address >> 8) & 0xffff];
        if (s !== undefined) new Uint8Array(s.buffer)[address & 0xff] = value;
      },
      pci_write16(address: number, value: number): void {
        const s = spaces[(address >> 8) & 0xffff];
        if (s !== undefined) new DataView(s.buffer).setUint16(address & 0xfe, value, true);
      },
      pci_write32(address: number, value: number): void {
        const s = spaces[(address >> 8) & 0xffff];
        if (s !== undefined) s[(address & 0xfc) >> 2] = value | 0;
      },
    };
    this.devices = { pci };
  }

  jit_dirty_cache(): void {}
  device_raise_irq(line: number): void {
    this.irqs.set(line, 1);
  }
  device_lower_irq(line: number): void {
    this.irqs.set(line, 0);
  }
  /** v86 splits an unclaimed 16-bit MMIO write into two byte writes. */
  mmap_write16(addr: number, value: number): void {
    const h = this.mmio.get(addr >>> 17);
    if (h === undefined) return;
    h.w8(addr, value & 0xff);
    h.w8(addr + 1, (value >> 8) & 0xff);
  }

  /** A CPU read through v86's tables. */
  read(space: AddressSpace, addr: number, size: AccessSize): number {
    if (space === "pio") {
      const e = this.io.ports[addr & 0xffff]!;
      return size === 1 ? e.read8(addr) : size === 2 ? e.read16(addr) : e.read32(addr) >>> 0;
    }
    const h = this.mmio.get(addr >>> 17);
    if (h === undefined) return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
    if (size === 4) return h.r32(addr) >>> 0;
    if (size === 1) return h.r8(addr);
    return h.r8(addr) | (h.r8(addr + 1) << 8); // v86 reads 16-bit MMIO as two bytes
  }

  /** A CPU write through v86's tables. */
  write(space: AddressSpace, addr: number, size: AccessSize, value: number): void {
    if (space === "pio") {
      const e = this.io.ports[addr & 0xffff]!;
      if (size === 1) e.write8(value & 0xff);
      else if (size === 2) e.write16(value & 0xffff);
      else e.write32(value | 0);
      return;
    }
    if (size === 2) {
      this.mmap_write16(addr, value & 0xffff);
      return;
    }
    const h = this.mmio.get(addr >>> 17);
    if (h === undefined) return;
    if (size === 4) h.w32(addr, value | 0);
    else h.w8(addr, value & 0xff);
  }

  /** Guard bytes around guest RAM that changed. */
  guardsBroken(): number {
    const all = new Uint8Array(this.wasm_memory.buffer);
    let n = 0;
    for (let i = 0; i < GUARD; i++) if (all[i] !== CANARY_BYTE) n++;
    for (let i = GUARD + RAM; i < all.length; i++) if (all[i] !== CANARY_BYTE) n++;
    return n;
  }
}

/** One access of a `v86-dispatch` case. */
export type V86Access =
  | {
      readonly k: "port" | "mmio";
      readonly write: boolean;
      readonly size: AccessSize;
      /** Index into the interesting addresses, plus an offset. */
      readonly where: number;
      readonly off: number;
      readonly value: number;
    }
  | {
      /** A PCI configuration cycle through v86's entry points. */
      readonly k: "cfg";
      readonly write: boolean;
      readonly size: AccessSize;
      readonly devfn: number;
      readonly reg: number;
      readonly value: number;
    };

/** A `v86-dispatch` case. */
export interface V86Case {
  readonly accesses: readonly V86Access[];
  /** Run the serve-after-reset check (a sample of the cases: it costs more than a case). */
  readonly serveCheck: boolean;
}

const sizeArb = fc.constantFrom<AccessSize>(1, 2, 4);
const valueArb = fc.oneof(
  fc.nat(0xff),
  fc.nat(0xffff_ffff),
  fc.constantFrom(0, 1, 0xffff_ffff, 0x8000_0000),
);

/** The `v86-dispatch` case generator. */
export const v86CaseArb: fc.Arbitrary<V86Case> = fc.record({
  accesses: fc.array(
    fc.oneof(
      fc.record({
        k: fc.constantFrom("port" as const, "mmio" as const),
        write: fc.boolean(),
        size: sizeArb,
        where: fc.nat(7),
        off: fc.oneof(fc.nat(0x200), fc.nat(0x2_0000)),
        value: valueArb,
      }),
      fc.record({
        k: fc.constant("cfg" as const),
        write: fc.boolean(),
        size: sizeArb,
        devfn: fc.oneof(fc.constantFrom(8 << 3, 9 << 3), fc.nat(0xff)),
        reg: fc.nat(0xff),
        value: valueArb,
      }),
    ),
    { minLength: 1, maxLength: 40 },
  ),
  serveCheck: fc.nat(7).map((n) => n === 0),
});

interface Rig {
  readonly cpu: FakeCpu;
  readonly pv: PvkitV86;
  readonly disk: MemoryDisk;
  readonly ports: number[];
  readonly mmio: number[];
}

function makeRig(): Rig {
  const cpu = new FakeCpu();
  new Uint8Array(cpu.wasm_memory.buffer).fill(CANARY_BYTE, 0, GUARD);
  new Uint8Array(cpu.wasm_memory.buffer).fill(CANARY_BYTE, GUARD + RAM);
  const emulator: V86Emulator = { v86: { cpu } };
  const disk = new MemoryDisk(64 * 512);
  for (let i = 0; i < disk.bytes.length; i++) disk.bytes[i] = (i * 11) & 0xff;
  const pv = attachPvkit(emulator, {
    devices: [
      { kind: "virtio-pci", device: new VirtioRngDevice({ queueSize: 16 }), slot: 8 },
      { kind: "virtio-mmio", device: new VirtioBlkDevice({ backend: disk, queueSize: 16 }) },
    ],
  });
  const ports: number[] = [0xcf8, 0xcfc, 0x60, 0x3f8];
  const bar = pv.pciHost.barMapping(
    8 << 3,
    pv.pci[0]!.fn.bars.findIndex((b) => b?.kind === "io"),
  );
  if (bar !== null) ports.push(bar.base, bar.base + 0x10, bar.base + 0x40);
  const mmio = [pv.mmio[0]!.address, pv.mmio[0]!.address + 0x100, 0xfee0_0000];
  return { cpu, pv, disk, ports, mmio };
}

/** Plays one `v86-dispatch` case on a fresh fake emulator. */
export async function runV86Case(c: V86Case): Promise<void> {
  const rig = makeRig();
  const { cpu, pv } = rig;
  const pci = cpu.devices.pci;
  for (const a of c.accesses) {
    if (a.k === "cfg") {
      const address = (a.devfn << 8) | a.reg;
      noThrow(
        `v86 PCI config ${a.write ? "write" : "read"} ${a.size} at ${address.toString(16)}`,
        () => {
          if (a.write) {
            if (a.size === 1) pci.pci_write8(address, a.value & 0xff);
            else if (a.size === 2) pci.pci_write16(address & ~1, a.value & 0xffff);
            else pci.pci_write32(address & ~3, a.value | 0);
          } else {
            pci.pci_addr[0] = a.reg & 0xfc;
            pci.pci_addr[1] = a.devfn;
            pci.pci_addr[2] = 0;
            pci.pci_query();
          }
        },
      );
      continue;
    }
    const list = a.k === "port" ? rig.ports : rig.mmio;
    const addr =
      ((list[a.where % list.length]! + a.off) >>> 0) & (a.k === "port" ? 0xffff : 0xffff_ffff);
    const space: AddressSpace = a.k === "port" ? "pio" : "mmio";
    noThrow(
      `v86 ${space} ${a.write ? "write" : "read"}${8 * a.size} at 0x${addr.toString(16)}`,
      () => {
        if (a.write) cpu.write(space, addr, a.size, a.value);
        else cpu.read(space, addr, a.size);
      },
    );
  }
  expectNoBusFaults(pv.bus, "v86 dispatch");
  const broken = cpu.guardsBroken();
  if (broken > 0)
    throw new FuzzFinding(
      "canary",
      `v86 dispatch: ${broken} byte(s) of wasm memory outside guest RAM changed`,
    );
  if (!c.serveCheck) return;
  // The virtio-mmio disk serves a real driver again, through v86's MMIO path.
  const access: BusAccess = {
    read: (space, address, size) => cpu.read(space, address, size),
    write: (space, address, size, value) => cpu.write(space, address, size, value),
  };
  const t = VirtioMmioDriverTransport.probe(access, pv.mmio[0]!.address);
  if (t instanceof DriverError)
    throw new FuzzFinding(
      "serve-after-reset",
      `the virtio-mmio disk no longer probes through v86: ${t.message}`,
    );
  await expectServesAfterReset(
    { transport: t, memory: pv.memory, scratch: { addr: 0x10_0000, len: 0x10_0000 } },
    { kind: "blk", sector: 7, expected: rig.disk.bytes.slice(7 * 512, 8 * 512) },
    "v86 virtio-mmio disk",
  );
  expectNoBusFaults(pv.bus, "v86 dispatch (serve check)");
}

/** The `v86-dispatch` target. */
export const v86DispatchTarget: FuzzTarget<V86Case> = {
  name: "v86-dispatch",
  description:
    "the v86 adapter's port, MMIO and PCI-config dispatch with random widths and addresses (fake emulator, no boot)",
  kind: "register",
  arbitrary: v86CaseArb,
  run: runV86Case,
};
