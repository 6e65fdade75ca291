/**
 * The parts of v86 0.5.462 (`build/libv86-debug.mjs`) the adapter reaches, typed
 * structurally: v86 ships no type declarations for its internals. Field and method names
 * are v86's own (src/pci.js, src/io.js, src/cpu.js).
 *
 * @module
 */

/** A v86 I/O port entry: the handlers one port dispatches to. */
export interface V86PortEntry {
  read8: (port: number) => number;
  read16: (port: number) => number;
  read32: (port: number) => number;
  write8: (value: number) => void;
  write16: (value: number) => void;
  write32: (value: number) => void;
}

/** v86's `IO`: port handlers and memory-mapped ranges. */
export interface V86Io {
  /** The read handler of ports nothing claimed. */
  readonly empty_port_read8: (port: number) => number;
  /** One entry per port, 0–0xFFFF. */
  readonly ports: V86PortEntry[];
  /** Installs read handlers at `port` (called with `this = device` and the port). */
  register_read(
    port: number,
    device: object,
    r8?: (port: number) => number,
    r16?: (port: number) => number,
    r32?: (port: number) => number,
  ): void;
  /** Installs write handlers at `port` (called with `this = device` and the value only). */
  register_write(
    port: number,
    device: object,
    w8?: (value: number) => void,
    w16?: (value: number) => void,
    w32?: (value: number) => void,
  ): void;
  /**
   * Maps `[addr, addr + size)` (both 128 KiB aligned) to handlers that receive the address
   * as a signed int32.
   */
  mmap_register(
    addr: number,
    size: number,
    r8: (addr: number) => number,
    w8: (addr: number, value: number) => void,
    r32: (addr: number) => number,
    w32: (addr: number, value: number) => void,
  ): void;
}

/** What v86's `PCI.register_device` expects of a device. */
export interface V86PciDevice {
  /** Diagnostics name. */
  name: string;
  /** Bus 0 device/function: `slot << 3 | function`. */
  pci_id: number;
  /** At least 64 bytes of initial configuration space. */
  pci_space: number[];
  /** Per BAR slot: its size (a power of two), or undefined. */
  pci_bars: ({ size: number } | undefined)[];
}

/** v86's PCI host bridge (src/pci.js). */
export interface V86Pci {
  /** The registered devices by `pci_id`. */
  readonly devices: (object | undefined)[];
  /** The configuration spaces (64 dwords) by `pci_id`. */
  readonly device_spaces: (Int32Array | undefined)[];
  /** The last CONFIG_ADDRESS written (bytes). */
  readonly pci_addr: Uint8Array;
  /** The response of the last configuration read, as one dword. */
  readonly pci_response32: Int32Array;
  /** The ISA bridge's configuration space, bytes (PIRQ routing at 0x60–0x63). */
  readonly isa_bridge_space8: Uint8Array;
  /** Registers a device; returns its configuration space. */
  register_device(device: V86PciDevice): Int32Array;
  /** Latches the configuration dword CONFIG_ADDRESS selects into `pci_response32`. */
  pci_query(): void;
  /** A configuration write of 1, 2 or 4 bytes (`address` = CONFIG_ADDRESS + byte). */
  pci_write8(address: number, value: number): void;
  /** See {@link V86Pci.pci_write8}. */
  pci_write16(address: number, value: number): void;
  /** See {@link V86Pci.pci_write8}. */
  pci_write32(address: number, value: number): void;
}

/** v86's CPU object (`emulator.v86.cpu`). */
export interface V86Cpu {
  /** Port and MMIO dispatch. */
  readonly io: V86Io;
  /** Devices; the adapter uses the PCI bridge. */
  readonly devices: { readonly pci: V86Pci };
  /** Guest RAM (a view into {@link wasm_memory}). */
  readonly mem8: Uint8Array;
  /** The WebAssembly memory holding guest RAM. */
  readonly wasm_memory: WebAssembly.Memory;
  /** Invalidates compiled code for guest-physical `[start, end)`. */
  jit_dirty_cache(start: number, end: number): void;
  /** Raises an ISA / IO-APIC interrupt line. */
  device_raise_irq(line: number): void;
  /** Lowers an ISA / IO-APIC interrupt line. */
  device_lower_irq(line: number): void;
  /** A 16-bit MMIO write (v86 splits it into two 8-bit writes). */
  mmap_write16(addr: number, value: number): void;
  /**
   * One slice of the CPU loop (a wasm export): runs guest code in `do_many_cycles` steps of
   * `LOOP_COUNTER` instructions until 1 ms has passed or the CPU halts; returns the delay
   * in ms before the next slice (0 unless halted). Absent in test doubles.
   */
  main_loop?: () => number;
  /** Byte 0 is nonzero while the CPU is halted (HLT). Absent in test doubles. */
  readonly in_hlt?: Uint8Array;
}

/** The emulator object (`new V86(...)`), as far as the adapter needs it. */
export interface V86Emulator {
  /** v86's internals. */
  readonly v86: { readonly cpu: V86Cpu };
}
