/**
 * `Rtl8139Driver`: the guest side of the RTL8139, doing what Linux's 8139too does, step
 * by step and register access by register access (each one an exit through the `Bus`):
 *
 * - probe: PCI ids and revision (< 0x20, else "use 8139cp"), enable I/O, memory and bus
 *   mastering, the chip version from TCR, power management bits in CONFIG1/CONFIG4;
 * - the MAC from the 93C46 EEPROM, bit-banged through 9346CR (`read_eeprom`: 8-bit
 *   probe of word 0 to pick the address width, then words 7–9);
 * - `rtl8139_hw_start`: chip reset, unlock, IDR, RBSTART, CR = RE|TE, RCR, TCR, media
 *   check, CONFIG3, lock, MPC, the RX mode and MAR, MULINT, TSAD0–3, IMR;
 * - transmit (`rtl8139_start_xmit`): copy into the bounce buffer of slot cur_tx % 4, pad
 *   to 60, `RTL_W32_F(TSD[entry], tx_flag | len)` — a write and a read back; the queue
 *   stops with four frames outstanding;
 * - the interrupt handler (`rtl8139_interrupt`): read ISR, read CSCR on a link event, ack
 *   the non-RX bits, mask RX interrupts and schedule the NAPI poll, TX completions by
 *   reading TSDs;
 * - the poll (`rtl8139_poll` → `rtl8139_rx`): while CR.BUFE is clear read the header in
 *   the ring, check it, hand the frame over, advance cur_rx and write CAPR = cur_rx − 16,
 *   ack RX bits; on a bad header reset the receiver (`rtl8139_rx_err`); then unmask.
 *
 * The device is not trusted: a header with an impossible length or without ROK resets
 * the receiver, as 8139too does; reads never leave the ring allocation.
 *
 * @module
 */

import {
  type AccessSize,
  type AddressSpace,
  alreadyBoundMessage,
  type BusAccess,
  bindDriver,
  boundDriver,
  type DriverBinding,
  Emitter,
  expectArgument,
  expectOptions,
  type GuestMemory,
  hasMethods,
  isGuestMemoryLike,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  type PciConfigAccess,
  PciConfigOffset,
  unbindDriver,
} from "@pvkit/platform";
import { multicastHashBit } from "../crc.js";
import {
  RTL_8139TOO_INTR_MASK,
  RTL_8139TOO_NORX_INTR_MASK,
  RTL_8139TOO_TX_BUF_SIZE,
  RTL_9346CR,
  RTL_9346CR_EECS,
  RTL_9346CR_EEDI,
  RTL_9346CR_EEDO,
  RTL_9346CR_EEM_CONFIG,
  RTL_9346CR_EEM_PROGRAM,
  RTL_9346CR_EESK,
  RTL_BMSR,
  RTL_BMSR_LINK,
  RTL_CAPR,
  RTL_CONFIG1,
  RTL_CONFIG3,
  RTL_CONFIG3_MAGIC,
  RTL_CONFIG4,
  RTL_CR,
  RTL_CR_BUFE,
  RTL_CR_RE,
  RTL_CR_RST,
  RTL_CR_TE,
  RTL_CSCR,
  RTL_CSCR_LINK_CHANGE,
  RTL_EEPROM_MAC_WORD,
  RTL_EEPROM_SIGNATURE,
  RTL_ETH_ZLEN,
  RTL_HLTCLK,
  RTL_HLTCLK_HALT,
  RTL_IDR0,
  RTL_IMR,
  RTL_ISR,
  RTL_ISR_PUN_LINKCHG,
  RTL_ISR_RER,
  RTL_ISR_RXOVW,
  RTL_ISR_SERR,
  RTL_ISR_TER,
  RTL_ISR_TIMEOUT,
  RTL_ISR_TOK,
  RTL_MAR0,
  RTL_MPC,
  RTL_MULINT,
  RTL_NUM_TX_DESC,
  RTL_PCI_DEVICE_ID,
  RTL_PCI_REVID_8139CPLUS,
  RTL_PCI_VENDOR_ID,
  RTL_RBSTART,
  RTL_RCR,
  RTL_RCR_AAP,
  RTL_RCR_AB,
  RTL_RCR_AM,
  RTL_RCR_APM,
  RTL_RCR_RBLEN_SHIFT,
  RTL_RCR_WRAP,
  RTL_RX_ACK_BITS,
  RTL_RX_DRIVER_PAD,
  RTL_RX_EARLY_SIZE,
  RTL_RX_RING_UNIT,
  RTL_RXS_ROK,
  RTL_TCR,
  RTL_TCR_8139TOO,
  RTL_TCR_HWREV_MASK,
  RTL_TSAD0,
  RTL_TSD_OWC,
  RTL_TSD_TABT,
  RTL_TSD_TOK,
  RTL_TSD_TUN,
  RTL_TSD0,
} from "../spec.js";

/** What the driver needs from the guest's allocator (e.g. `GuestAllocator` of virtio-core). */
export interface GuestBufferAllocator {
  /** @returns a guest-physical address aligned to `align`, or -1 when out of memory */
  alloc(size: number, align?: number): number;
}

/** Where the registers are, when the driver is not given a PCI configuration access. */
export interface Rtl8139RegisterWindow {
  /** `"mmio"` (BAR1, 8139too's default) or `"pio"` (BAR0). */
  readonly space: AddressSpace;
  /** Base address. */
  readonly base: number;
}

/** Options of {@link Rtl8139Driver.open}. */
export interface Rtl8139DriverOptions {
  /** The CPU's bus (a `Bus`, or any `BusAccess`): every register access goes through it. */
  readonly bus: BusAccess;
  /** Guest memory (the ring and the bounce buffers). */
  readonly memory: GuestMemory;
  /** Allocates the ring and the bounce buffers. */
  readonly allocator: GuestBufferAllocator;
  /** PCI configuration access to probe the function (ids, revision, BARs, Command). */
  readonly config?: PciConfigAccess;
  /** Or the register window directly (no PCI probing). */
  readonly registers?: Rtl8139RegisterWindow;
  /** Use the I/O BAR instead of the MMIO BAR (8139too with CONFIG_8139TOO_PIO). */
  readonly useIo?: boolean;
  /** Receive ring size: 8, 16, 32 (default, 8139too's) or 64 KiB. */
  readonly ringSize?: 8192 | 16384 | 32768 | 65536;
  /** RCR.WRAP (8139too sets it for rings below 64 KiB; default true). */
  readonly wrap?: boolean;
  /** NAPI budget per poll (default 64). */
  readonly budget?: number;
  /** Runs the NAPI poll later (default `queueMicrotask`). */
  readonly schedule?: (task: () => void) => void;
  /** Receives each frame (a view valid during the call; copy to keep). */
  readonly onFrame?: (frame: Uint8Array) => void;
}

/** Why {@link Rtl8139Driver.open} failed. */
export class Rtl8139DriverError extends Error {
  /**
   * @param code - what went wrong
   * @param message - what the driver saw
   */
  constructor(
    readonly code:
      | "notRtl8139"
      | "cplusChip"
      | "noBar"
      | "notResponding"
      | "noMemory"
      | "resetTimeout"
      | "alreadyBound",
    message: string,
  ) {
    super(message);
    this.name = "Rtl8139DriverError";
  }
}

/** Events of {@link Rtl8139Driver}. */
export type Rtl8139DriverEvents = {
  /** The link went up or down (BMSR after a link-change interrupt). */
  link: (up: boolean) => void;
  /** A transmit slot became free after {@link Rtl8139Driver.send} answered false. */
  writable: () => void;
  /** The receiver was reset after a bad ring header (`rtl8139_rx_err`). */
  rxReset: (status: number) => void;
};

/** Counters of {@link Rtl8139Driver}. */
export interface Rtl8139DriverStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Interrupt handler runs. */
  interrupts: number;
  /** Interrupt handler runs that found nothing of ours. */
  spurious: number;
  /** NAPI poll rounds. */
  polls: number;
  /** `send` refused: four frames outstanding. */
  txFull: number;
  /** `send` refused: frame empty or ≥ 1536 bytes. */
  txTooBig: number;
  /** Descriptors completed with TUN, OWC or TABT. */
  txErrors: number;
  /** Receiver resets after a bad header. */
  rxErrors: number;
  /** ISR.RXOVW seen. */
  rxOverflows: number;
  /** Frames the chip missed (MPC, accumulated). */
  rxMissed: number;
  /** Early-RX headers (0xfff0) seen. */
  rxEarly: number;
  /** Link-change interrupts. */
  linkChanges: number;
  /** PCSTimeout interrupts. */
  timerInterrupts: number;
  /** PCIErr (SERR) interrupts. */
  systemErrors: number;
  /** EEPROM words read. */
  eepromReads: number;
}

/** 8139too's RX FIFO threshold (7 = no threshold) and DMA burst (7 = unlimited). */
const RX_FIFO_THRESH = 7;
const RX_DMA_BURST = 7;
/** 8139too `tx_flag`: early TX threshold 256 bytes. */
const TX_FLAG_INITIAL = (256 << 11) & 0x003f_0000;
/** 8139too: `Cfg1_PM_Enable`. */
const CFG1_PM_ENABLE = 0x01;
/** 8139too: `LWPTN` in CONFIG4. */
const CFG4_LWPTN = 0x04;
/** 8139too: `MultiIntrClear`. */
const MULTI_INTR_CLEAR = 0xf000;
/** 8139too: `MAX_ETH_FRAME_SIZE + 4`, the largest `rx_size` accepted. */
const MAX_RX_SIZE = 1536 + 4;
/** 8139too: the EEPROM READ command (start bit + opcode 10). */
const EE_READ_CMD = 6;

/** The guest's RTL8139 driver. */
export class Rtl8139Driver extends Emitter<Rtl8139DriverEvents> {
  /** Counters. */
  readonly stats: Rtl8139DriverStats = {
    txFrames: 0,
    txBytes: 0,
    rxFrames: 0,
    rxBytes: 0,
    interrupts: 0,
    spurious: 0,
    polls: 0,
    txFull: 0,
    txTooBig: 0,
    txErrors: 0,
    rxErrors: 0,
    rxOverflows: 0,
    rxMissed: 0,
    rxEarly: 0,
    linkChanges: 0,
    timerInterrupts: 0,
    systemErrors: 0,
    eepromReads: 0,
  };
  /** The frame handler. */
  onFrame: (frame: Uint8Array) => void;
  /** The chip version bits read from TCR (`HW_REVID_MASK`). */
  readonly chipVersion: number;
  /** The EEPROM address width 8139too picked (6 for a 93C46). */
  readonly eepromAddressBits: number;
  /** Guest-physical address of the receive ring. */
  readonly ringBase: number;
  /** Ring size in bytes. */
  readonly ringSize: number;
  /** Guest-physical addresses of the four bounce buffers. */
  readonly txBuffers: readonly number[];

  private readonly bus: BusAccess;
  private readonly space: AddressSpace;
  private readonly base: number;
  private readonly memory: GuestMemory;
  private readonly config: PciConfigAccess | undefined;
  private readonly wrap: boolean;
  private readonly budget: number;
  private readonly schedule: (task: () => void) => void;
  private readonly macAddr: Uint8Array;
  private readonly scratch = new Uint8Array(MAX_RX_SIZE);
  private readonly header = new Uint8Array(4);
  private readonly headerView = new DataView(this.header.buffer);
  private rxConfig = 0;
  private rxModeBits = RTL_RCR_AB | RTL_RCR_APM;
  private readonly mcFilter = new Uint32Array(2);
  private curRx = 0;
  private curTx = 0;
  private dirtyTx = 0;
  private txFlag = TX_FLAG_INITIAL;
  private stopped = false;
  private napiScheduled = false;
  private budgetHit = false;
  private link = false;
  /** This driver's hold on the chip (see {@link Rtl8139Driver.open}), until {@link close}. */
  private binding: DriverBinding | null = null;
  private readonly pollTask = (): void => {
    this.poll();
  };

  private constructor(
    options: Rtl8139DriverOptions,
    space: AddressSpace,
    base: number,
    ring: number,
    ringSize: number,
    tx: number[],
  ) {
    super();
    this.bus = options.bus;
    this.memory = options.memory;
    this.config = options.config;
    this.space = space;
    this.base = base;
    this.ringBase = ring;
    this.ringSize = ringSize;
    this.txBuffers = tx;
    this.wrap = (options.wrap ?? true) && ringSize < 65536;
    this.budget = Math.max(1, options.budget ?? 64);
    this.schedule = options.schedule ?? queueMicrotask;
    this.onFrame = options.onFrame ?? (() => {});
    // rtl8139_init_board: is anything there, and which chip?
    const tcr = this.r32(RTL_TCR);
    this.chipVersion = tcr === 0xffff_ffff ? -1 : (tcr & RTL_TCR_HWREV_MASK) >>> 0;
    if (this.chipVersion !== -1) this.powerUp();
    this.chipReset();
    // read_eeprom with 8-bit addressing: 0x8129 means a 93C56/66.
    this.eepromAddressBits = this.readEeprom(0, 8) === RTL_EEPROM_SIGNATURE ? 8 : 6;
    const mac = new Uint8Array(6);
    for (let i = 0; i < 3; i++) {
      const w = this.readEeprom(RTL_EEPROM_MAC_WORD + i, this.eepromAddressBits);
      mac[2 * i] = w & 0xff;
      mac[2 * i + 1] = w >>> 8;
    }
    this.macAddr = mac;
    this.hwStart();
  }

  /**
   * Probes and starts the chip (8139too `rtl8139_init_one` + `rtl8139_open`).
   *
   * @returns the driver, or why it could not bind (`alreadyBound` when another
   *   `Rtl8139Driver` drives the same register window and was not closed)
   * @throws TypeError when `options` lacks `bus`, `memory` or `allocator`, or one has the
   *   wrong type (the message names the option, the type expected and the value given)
   */
  static open(options: Rtl8139DriverOptions): Rtl8139Driver | Rtl8139DriverError {
    const where = "Rtl8139Driver.open";
    expectOptions(where, options, "{ bus, memory, allocator, config? | registers?, … }");
    expectArgument(where, "options.bus", options.bus, "a Bus (read and write methods)", (v) =>
      hasMethods(v, "read", "write"),
    );
    expectArgument(where, "options.memory", options.memory, "a GuestMemory", isGuestMemoryLike);
    expectArgument(
      where,
      "options.allocator",
      options.allocator,
      "a guest allocator (an alloc method, e.g. virtio-core's GuestAllocator)",
      (v) => hasMethods(v, "alloc"),
    );
    let space: AddressSpace;
    let base: number;
    const cfg = options.config;
    if (cfg !== undefined) {
      const vendor = cfg.read(PciConfigOffset.VENDOR_ID, 2);
      const device = cfg.read(PciConfigOffset.DEVICE_ID, 2);
      if (vendor !== RTL_PCI_VENDOR_ID || device !== RTL_PCI_DEVICE_ID)
        return new Rtl8139DriverError(
          "notRtl8139",
          `PCI ${vendor.toString(16)}:${device.toString(16)} is not 10ec:8139`,
        );
      const rev = cfg.read(PciConfigOffset.REVISION_ID, 1);
      if (rev >= RTL_PCI_REVID_8139CPLUS)
        return new Rtl8139DriverError(
          "cplusChip",
          `revision 0x${rev.toString(16)}: enhanced 8139C+ chip, use 8139cp`,
        );
      // pci_enable_device + pci_set_master.
      const cmd = cfg.read(PciConfigOffset.COMMAND, 2);
      cfg.write(
        PciConfigOffset.COMMAND,
        2,
        cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
      );
      const io = options.useIo === true;
      const bar = cfg.read(PciConfigOffset.BASE_ADDRESS_0 + (io ? 0 : 4), 4);
      const isIo = (bar & PCI_BASE_ADDRESS_SPACE_IO) !== 0;
      base = (isIo ? bar & ~0x3 : bar & ~0xf) >>> 0;
      if (base === 0 || isIo !== io)
        return new Rtl8139DriverError("noBar", `BAR${io ? 0 : 1} is not assigned`);
      space = io ? "pio" : "mmio";
    } else if (options.registers !== undefined) {
      space = options.registers.space;
      base = options.registers.base;
    } else return new Rtl8139DriverError("noBar", "neither a PCI access nor a register window");
    // One driver per chip (Linux binds one driver per device): refuse before touching it.
    const key = `${space} 0x${base.toString(16)}`;
    const held = boundDriver(options.bus, key);
    if (held !== undefined)
      return new Rtl8139DriverError("alreadyBound", alreadyBoundMessage(held));
    const ringSize = options.ringSize ?? 32768;
    const ring = options.allocator.alloc(ringSize + RTL_RX_DRIVER_PAD, 16);
    const txBase = options.allocator.alloc(RTL_8139TOO_TX_BUF_SIZE * RTL_NUM_TX_DESC, 16);
    if (ring < 0 || txBase < 0)
      return new Rtl8139DriverError("noMemory", "no guest memory for the ring or the TX buffers");
    const tx: number[] = [];
    for (let i = 0; i < RTL_NUM_TX_DESC; i++) tx.push(txBase + i * RTL_8139TOO_TX_BUF_SIZE);
    const drv = new Rtl8139Driver(options, space, base, ring, ringSize, tx);
    if (drv.chipVersion === -1)
      return new Rtl8139DriverError("notResponding", "TCR reads all-ones: chip not responding");
    const binding: DriverBinding = {
      device: `RTL8139 at ${key}`,
      driver: "Rtl8139Driver",
      release: "close() that driver",
    };
    bindDriver(options.bus, key, binding);
    drv.binding = binding;
    return drv;
  }

  /** The MAC address read from the EEPROM. */
  get mac(): Uint8Array {
    return this.macAddr.slice();
  }

  /** The link state (BMSR bit 2, as last read). */
  get linkUp(): boolean {
    return this.link;
  }

  /** Frames handed to the chip and not yet completed. */
  get txOutstanding(): number {
    return this.curTx - this.dirtyTx;
  }

  // ── Register access: every one is an exit ────────────────────────────────────

  private r(off: number, size: AccessSize): number {
    return this.bus.read(this.space, this.base + off, size);
  }
  private w(off: number, size: AccessSize, v: number): void {
    this.bus.write(this.space, this.base + off, size, v);
  }
  private r8(off: number): number {
    return this.r(off, 1);
  }
  private r16(off: number): number {
    return this.r(off, 2);
  }
  private r32(off: number): number {
    return this.r(off, 4);
  }
  private w8(off: number, v: number): void {
    this.w(off, 1, v);
  }
  private w16(off: number, v: number): void {
    this.w(off, 2, v);
  }
  private w32(off: number, v: number): void {
    this.w(off, 4, v);
  }
  /** `RTL_W8_F`: write, then read back to flush posted writes. */
  private w8f(off: number, v: number): void {
    this.w8(off, v);
    this.r8(off);
  }
  private w16f(off: number, v: number): void {
    this.w16(off, v);
    this.r16(off);
  }
  private w32f(off: number, v: number): void {
    this.w32(off, v);
    this.r32(off);
  }

  // ── Bring-up ─────────────────────────────────────────────────────────────────

  /** 8139too `rtl8139_init_board`: power management bits (PMEn on, LWPTN off). */
  private powerUp(): void {
    const cfg1 = this.r8(RTL_CONFIG1);
    if ((cfg1 | CFG1_PM_ENABLE) !== cfg1) {
      this.w8(RTL_9346CR, RTL_9346CR_EEM_CONFIG);
      this.w8(RTL_CONFIG1, cfg1 | CFG1_PM_ENABLE);
      this.w8(RTL_9346CR, 0);
    }
    const cfg4 = this.r8(RTL_CONFIG4);
    if (cfg4 & CFG4_LWPTN) {
      this.w8(RTL_9346CR, RTL_9346CR_EEM_CONFIG);
      this.w8(RTL_CONFIG4, cfg4 & ~CFG4_LWPTN);
      this.w8(RTL_9346CR, 0);
    }
  }

  /** 8139too `rtl8139_chip_reset`: RST, then poll until it reads back clear (bounded). */
  private chipReset(): boolean {
    this.w8(RTL_CR, RTL_CR_RST);
    for (let i = 1000; i > 0; i--) if (!(this.r8(RTL_CR) & RTL_CR_RST)) return true;
    return false;
  }

  /**
   * 8139too `read_eeprom`: bit-bangs one 16-bit word out of the 93C46 through 9346CR
   * (about 131 register accesses).
   */
  readEeprom(location: number, addrLen: number): number {
    this.stats.eepromReads++;
    const enb = RTL_9346CR_EEM_PROGRAM | RTL_9346CR_EECS;
    const cmd = location | (EE_READ_CMD << addrLen);
    const delay = (): void => {
      this.r8(RTL_9346CR);
    };
    this.w8(RTL_9346CR, enb & ~RTL_9346CR_EECS);
    this.w8(RTL_9346CR, enb);
    delay();
    for (let i = 4 + addrLen; i >= 0; i--) {
      const bit = cmd & (1 << i) ? RTL_9346CR_EEDI : 0;
      this.w8(RTL_9346CR, enb | bit);
      delay();
      this.w8(RTL_9346CR, enb | bit | RTL_9346CR_EESK);
      delay();
    }
    this.w8(RTL_9346CR, enb);
    delay();
    let v = 0;
    for (let i = 16; i > 0; i--) {
      this.w8(RTL_9346CR, enb | RTL_9346CR_EESK);
      delay();
      v = (v << 1) | (this.r8(RTL_9346CR) & RTL_9346CR_EEDO ? 1 : 0);
      this.w8(RTL_9346CR, enb);
      delay();
    }
    this.w8(RTL_9346CR, 0);
    delay();
    return v & 0xffff;
  }

  /** 8139too `rtl8139_hw_start` (plus the TX buffer addresses of `rtl8139_init_ring`). */
  private hwStart(): void {
    this.chipReset();
    this.w8f(RTL_9346CR, RTL_9346CR_EEM_CONFIG);
    const m = this.macAddr;
    this.w32f(RTL_IDR0, (m[0]! | (m[1]! << 8) | (m[2]! << 16) | (m[3]! << 24)) >>> 0);
    this.w32f(RTL_IDR0 + 4, m[4]! | (m[5]! << 8));
    this.curRx = 0;
    this.w32f(RTL_RBSTART, this.ringBase);
    // "Must enable Tx/Rx before setting transfer thresholds!"
    this.w8(RTL_CR, RTL_CR_RE | RTL_CR_TE);
    this.rxConfig = this.baseRxConfig() | RTL_RCR_AB | RTL_RCR_APM;
    this.w32(RTL_RCR, this.rxConfig);
    this.w32(RTL_TCR, RTL_TCR_8139TOO);
    this.checkMedia();
    const c3 = this.r8(RTL_CONFIG3);
    this.w8(RTL_CONFIG3, c3 & ~RTL_CONFIG3_MAGIC);
    this.w8(RTL_9346CR, 0);
    this.w32(RTL_MPC, 0);
    this.applyRxMode();
    this.w16(RTL_MULINT, this.r16(RTL_MULINT) & MULTI_INTR_CLEAR);
    const cr = this.r8(RTL_CR);
    if (!(cr & RTL_CR_RE) || !(cr & RTL_CR_TE)) this.w8(RTL_CR, RTL_CR_RE | RTL_CR_TE);
    for (let i = 0; i < RTL_NUM_TX_DESC; i++) this.w32f(RTL_TSAD0 + 4 * i, this.txBuffers[i]!);
    this.curTx = 0;
    this.dirtyTx = 0;
    this.w16(RTL_IMR, RTL_8139TOO_INTR_MASK);
  }

  private baseRxConfig(): number {
    const rblen = Math.log2(this.ringSize / RTL_RX_RING_UNIT);
    return (
      (rblen << RTL_RCR_RBLEN_SHIFT) |
      (this.wrap ? RTL_RCR_WRAP : 0) |
      (RX_FIFO_THRESH << 13) |
      (RX_DMA_BURST << 8)
    );
  }

  /** `rtl_check_media` → `mii_link_ok`: BMSR read twice (the first clears latched bits). */
  private checkMedia(): void {
    this.r16(RTL_BMSR);
    const up = (this.r16(RTL_BMSR) & RTL_BMSR_LINK) !== 0;
    if (up !== this.link) {
      this.link = up;
      this.emit("link", up);
    }
  }

  /**
   * Restarts the chip as `rtl8139_hw_start` does after a timeout (`rtl8139_tx_timeout`):
   * frames in flight are forgotten.
   */
  restart(): void {
    this.napiScheduled = false;
    this.budgetHit = false;
    this.stopped = false;
    this.hwStart();
    this.emit("writable");
  }

  /**
   * `rtl8139_close`: receiver and transmitter off, interrupts masked, MPC collected, clock
   * halted. Releases the chip: another {@link Rtl8139Driver.open} may bind it afterwards.
   */
  close(): void {
    this.w8(RTL_CR, 0);
    this.w16(RTL_IMR, 0);
    this.stats.rxMissed += this.r32(RTL_MPC);
    this.w32(RTL_MPC, 0);
    this.w8(RTL_9346CR, RTL_9346CR_EEM_CONFIG);
    this.w8(RTL_HLTCLK, RTL_HLTCLK_HALT);
    if (this.binding !== null) {
      unbindDriver(this.bus, `${this.space} 0x${this.base.toString(16)}`, this.binding);
      this.binding = null;
    }
  }

  // ── RX mode ──────────────────────────────────────────────────────────────────

  /**
   * 8139too `__set_rx_mode`: promiscuous (AAP), all multicast (MAR all ones), or the
   * multicast hash of `multicast` (`ether_crc(addr) >> 26`).
   */
  setRxMode(mode: {
    promiscuous?: boolean;
    allMulticast?: boolean;
    multicast?: readonly Uint8Array[];
  }): void {
    const f = this.mcFilter;
    if (mode.promiscuous) {
      this.rxModeBits = RTL_RCR_AB | RTL_RCR_AM | RTL_RCR_APM | RTL_RCR_AAP;
      f[0] = 0xffff_ffff;
      f[1] = 0xffff_ffff;
    } else if (mode.allMulticast) {
      this.rxModeBits = RTL_RCR_AB | RTL_RCR_AM | RTL_RCR_APM;
      f[0] = 0xffff_ffff;
      f[1] = 0xffff_ffff;
    } else {
      this.rxModeBits = RTL_RCR_AB | RTL_RCR_APM;
      f[0] = 0;
      f[1] = 0;
      for (const addr of mode.multicast ?? []) {
        const bit = multicastHashBit(addr);
        f[bit >>> 5]! |= 1 << (bit & 31);
        this.rxModeBits |= RTL_RCR_AM;
      }
    }
    this.applyRxMode();
  }

  private applyRxMode(): void {
    const rcr = (this.baseRxConfig() | this.rxModeBits) >>> 0;
    if (rcr !== this.rxConfig) {
      this.w32f(RTL_RCR, rcr);
      this.rxConfig = rcr;
    }
    this.w32f(RTL_MAR0, this.mcFilter[0]!);
    this.w32f(RTL_MAR0 + 4, this.mcFilter[1]!);
  }

  // ── Transmit ─────────────────────────────────────────────────────────────────

  /**
   * 8139too `rtl8139_start_xmit`: one frame into the next of the four slots.
   *
   * @returns false when four frames are outstanding (retry on `writable`) or the frame
   *   is empty or does not fit the 1536-byte bounce buffer
   */
  send(frame: Uint8Array): boolean {
    const len = frame.length;
    if (len === 0 || len >= RTL_8139TOO_TX_BUF_SIZE) {
      this.stats.txTooBig++;
      return false;
    }
    if (this.curTx - this.dirtyTx >= RTL_NUM_TX_DESC) {
      this.stats.txFull++;
      this.stopped = true;
      return false;
    }
    const entry = this.curTx % RTL_NUM_TX_DESC;
    const buf = this.txBuffers[entry]!;
    if (len < RTL_ETH_ZLEN) this.memory.fill(buf, RTL_ETH_ZLEN, 0);
    this.memory.write(buf, frame);
    // "Note: the chip doesn't have auto-pad!"
    this.w32f(RTL_TSD0 + 4 * entry, this.txFlag | Math.max(len, RTL_ETH_ZLEN));
    this.curTx++;
    this.stats.txFrames++;
    this.stats.txBytes += len;
    if (this.curTx - RTL_NUM_TX_DESC === this.dirtyTx) this.stopped = true;
    return true;
  }

  /** 8139too `rtl8139_tx_interrupt`: reads TSD of each outstanding slot until one is pending. */
  private txInterrupt(): void {
    let dirty = this.dirtyTx;
    while (this.curTx - dirty > 0) {
      const entry = dirty % RTL_NUM_TX_DESC;
      const status = this.r32(RTL_TSD0 + 4 * entry);
      if (!(status & (RTL_TSD_TOK | RTL_TSD_TUN | RTL_TSD_TABT))) break;
      if (status & (RTL_TSD_OWC | RTL_TSD_TABT)) this.stats.txErrors++;
      else if (status & RTL_TSD_TUN) {
        // "Add 64 to the Tx FIFO threshold."
        this.stats.txErrors++;
        if (this.txFlag < 0x0030_0000) this.txFlag += 0x0002_0000;
      }
      dirty++;
    }
    if (dirty !== this.dirtyTx) {
      this.dirtyTx = dirty;
      if (this.stopped) {
        this.stopped = false;
        this.emit("writable");
      }
    }
  }

  // ── Interrupts and receive ───────────────────────────────────────────────────

  /**
   * 8139too `rtl8139_interrupt`.
   *
   * @returns whether the interrupt was ours
   */
  onInterrupt(): boolean {
    this.stats.interrupts++;
    const status = this.r16(RTL_ISR);
    if ((status & RTL_8139TOO_INTR_MASK) === 0 || status === 0xffff) {
      this.stats.spurious++;
      return false;
    }
    let linkChanged = false;
    if (status & RTL_ISR_PUN_LINKCHG)
      linkChanged = (this.r16(RTL_CSCR) & RTL_CSCR_LINK_CHANGE) !== 0;
    const ack = status & ~(RTL_RX_ACK_BITS | RTL_ISR_TER);
    if (ack) this.w16(RTL_ISR, ack);
    if (status & RTL_RX_ACK_BITS && !this.napiScheduled) {
      this.napiScheduled = true;
      this.w16f(RTL_IMR, RTL_8139TOO_NORX_INTR_MASK);
      this.schedule(this.pollTask);
    }
    if (status & (RTL_ISR_SERR | RTL_ISR_TIMEOUT | RTL_ISR_PUN_LINKCHG | RTL_ISR_RER))
      this.weirdInterrupt(status, linkChanged);
    if (status & (RTL_ISR_TOK | RTL_ISR_TER)) {
      this.txInterrupt();
      if (status & RTL_ISR_TER) this.w16(RTL_ISR, RTL_ISR_TER);
    }
    return true;
  }

  /** 8139too `rtl8139_weird_interrupt`. */
  private weirdInterrupt(status: number, linkChanged: boolean): void {
    this.stats.rxMissed += this.r32(RTL_MPC);
    this.w32(RTL_MPC, 0);
    if (status & RTL_ISR_PUN_LINKCHG && linkChanged) {
      this.stats.linkChanges++;
      this.checkMedia();
    }
    if (status & RTL_ISR_TIMEOUT) this.stats.timerInterrupts++;
    if (status & RTL_ISR_SERR) {
      this.stats.systemErrors++;
      const cfg = this.config;
      if (cfg !== undefined)
        cfg.write(PciConfigOffset.STATUS, 2, cfg.read(PciConfigOffset.STATUS, 2));
    }
  }

  /**
   * 8139too `rtl8139_poll`: one NAPI round. @returns frames taken
   *
   * One deviation: 8139too only enters its RX loop when ISR has an RX bit, but its loop
   * acknowledges ROK after every frame, so a round that ends on the budget leaves frames
   * in the ring with ROK clear and they wait for the next arrival. This driver remembers
   * that the budget ran out and drains on (one ISR read fewer, no stall).
   */
  poll(): number {
    this.stats.polls++;
    let work = 0;
    if (this.budgetHit || this.r16(RTL_ISR) & RTL_RX_ACK_BITS) work = this.rx(this.budget);
    this.budgetHit = work >= this.budget;
    if (!this.budgetHit) {
      this.napiScheduled = false;
      this.w16f(RTL_IMR, RTL_8139TOO_INTR_MASK);
    } else this.schedule(this.pollTask);
    return work;
  }

  /** 8139too `rtl8139_rx`. */
  private rx(budget: number): number {
    let received = 0;
    let rxSize = 0;
    const size = this.ringSize;
    while (received < budget && !(this.r8(RTL_CR) & RTL_CR_BUFE)) {
      const off = this.curRx % size;
      this.memory.read(this.ringBase + off, this.header);
      const status = this.headerView.getUint16(0, true);
      rxSize = this.headerView.getUint16(2, true);
      if (rxSize === RTL_RX_EARLY_SIZE) {
        this.stats.rxEarly++;
        break;
      }
      if (rxSize > MAX_RX_SIZE || rxSize < 8 || !(status & RTL_RXS_ROK)) {
        this.rxError(status);
        return received;
      }
      const pkt = rxSize - 4;
      this.deliver(off + 4, pkt);
      received++;
      this.curRx = (this.curRx + rxSize + 4 + 3) & ~3;
      this.w16(RTL_CAPR, (this.curRx - 16) & 0xffff);
      this.isrAck();
    }
    if (received === 0 || rxSize === RTL_RX_EARLY_SIZE) this.isrAck();
    return received;
  }

  private deliver(at: number, len: number): void {
    let frame: Uint8Array;
    const size = this.ringSize;
    if (this.wrap || at + len <= size) {
      // WRAP: the chip wrote past the end into the pad, so the frame is contiguous.
      const v = this.memory.slice(this.ringBase + at, len);
      if (!(v instanceof Uint8Array)) return;
      frame = v;
    } else {
      // 8139too `wrap_copy`: the frame continues at the ring start.
      const s = at % size;
      const first = Math.min(len, size - s);
      frame = this.scratch.subarray(0, len);
      this.memory.read(this.ringBase + s, frame.subarray(0, first));
      if (first < len) this.memory.read(this.ringBase, frame.subarray(first));
    }
    this.stats.rxFrames++;
    this.stats.rxBytes += len;
    this.onFrame(frame);
  }

  /** 8139too `rtl8139_isr_ack`. */
  private isrAck(): void {
    const status = this.r16(RTL_ISR) & RTL_RX_ACK_BITS;
    if (status !== 0) {
      if (status & RTL_ISR_RXOVW) this.stats.rxOverflows++;
      this.w16f(RTL_ISR, RTL_RX_ACK_BITS);
    }
  }

  /** 8139too `rtl8139_rx_err`: resets the receiver and the ring. */
  private rxError(status: number): void {
    this.stats.rxErrors++;
    this.w8f(RTL_CR, RTL_CR_TE);
    for (let i = 200; i > 0; i--) if (!(this.r8(RTL_CR) & RTL_CR_RE)) break;
    for (let i = 200; i > 0; i--) {
      this.w8f(RTL_CR, RTL_CR_RE | RTL_CR_TE);
      const cr = this.r8(RTL_CR);
      if (cr & RTL_CR_RE && cr & RTL_CR_TE) break;
    }
    this.w8f(RTL_9346CR, RTL_9346CR_EEM_CONFIG);
    this.w8(RTL_CR, RTL_CR_RE | RTL_CR_TE);
    this.rxConfig = (this.baseRxConfig() | this.rxModeBits) >>> 0;
    this.w32(RTL_RCR, this.rxConfig);
    this.curRx = 0;
    this.w8(RTL_9346CR, 0);
    this.w32f(RTL_RBSTART, this.ringBase);
    this.applyRxMode();
    this.emit("rxReset", status);
  }
}
