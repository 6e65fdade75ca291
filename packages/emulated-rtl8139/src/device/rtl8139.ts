/**
 * `Rtl8139`: a fully emulated Realtek RTL8139 (normal mode, not C+) as a PCI function
 * 10ec:8139 revision 0x10 — the revision Linux's 8139too binds to — with BAR0 (256 bytes
 * of I/O ports) and BAR1 (256 bytes of MMIO) over the same register file, INTx through an
 * {@link IrqLine} (level = ISR & IMR ≠ 0), frames to and from any {@link NetBackend}.
 *
 * - Every register of the normal-mode file has its reset value and write mask (see
 *   `spec.ts`); 16/32-bit accesses to byte registers and byte accesses to wide registers
 *   are split or merged the way QEMU does.
 * - The MAC and the PCI ids live in a 93C46 EEPROM read bit by bit through 9346CR.
 * - Receive: filtering (own MAC with APM, broadcast with AB, multicast with AM and the MAR
 *   hash, everything with AAP), frames padded to 60 bytes, written at RBSTART + CBR as
 *   a 4-byte header (status, length including CRC), the frame, its CRC-32, then CBR
 *   aligned to 4; WRAP writes past the end into the pad, otherwise the write wraps to the
 *   ring start; CAPR is "off by 16". No room: ISR.RXOVW, MPC + 1, the frame is dropped
 *   (or, with `rxPending`, held in a bounded queue and delivered on the next CAPR write,
 *   as QEMU's net queue does; their ROK is set again after the guest's next ISR
 *   acknowledgement, as the chip's FIFO-to-ring DMA ends after the one 8139too makes
 *   right after its CAPR write).
 * - Transmit: four descriptors strictly round-robin; a TSD write with OWN clear DMAs
 *   `size` bytes from TSAD, sets OWN|TOK and ISR.TOK. A size of 0 or above 1792 bytes,
 *   or a TSAD range outside guest memory, completes with OWN|TUN and ISR.TER. TCR
 *   loopback delivers to the device's own receive path.
 * - TCTR counts at 33 MHz; TimerInt raises ISR.TimeOut when TCTR passes it. The MII
 *   registers report the back-end's link; a change raises ISR.PUN/LinkChg and sets
 *   CSCR's link-change bit.
 *
 * Hostile guest: nothing a guest writes makes the device throw, loop without bound, or
 * touch memory outside `GuestMemory` (every DMA range is checked whole before a byte
 * moves). Work done inside one exit is bounded (`txBudget`); re-entrant transmit requests
 * (a guest interrupt handler running synchronously, loopback storms) are folded into the
 * running loop instead of recursing.
 *
 * Choices that differ from QEMU (stated for the comparison): an RCR write resets the ring
 * pointers only when RBLEN changes or the receiver is off (QEMU resets them on every
 * write, which loses the ring under a running driver); clearing CR.RE resets them too;
 * a transmit request walks every ready descriptor from the current one (QEMU sends at
 * most one per TSD write); DMA faults are reported (TUN / SERR) instead of reading or
 * writing outside memory.
 *
 * @module
 */

import {
  type AccessSize,
  allOnes,
  Emitter,
  expectArgument,
  expectOptions,
  type GuestMemory,
  type IoHandler,
  IrqLine,
  isGuestMemoryLike,
  isIrqLineLike,
  isNetBackendLike,
  type NetBackend,
  type NetEndpoint,
  type NetFrameMeta,
  type PciBar,
  PciConfigOffset,
  PciConfigSpace,
  type PciFunction,
  parseMac,
} from "@pvkit/platform";
import { ethernetFcs, multicastHashBit } from "../crc.js";
import {
  RTL_9346CR,
  RTL_9346CR_EECS,
  RTL_9346CR_EEDI,
  RTL_9346CR_EEDO,
  RTL_9346CR_EEM_AUTOLOAD,
  RTL_9346CR_EEM_CONFIG,
  RTL_9346CR_EEM_MASK,
  RTL_9346CR_EEM_PROGRAM,
  RTL_9346CR_EESK,
  RTL_9346CR_WRITABLE,
  RTL_ANAR,
  RTL_ANAR_RESET,
  RTL_ANER,
  RTL_ANER_RESET,
  RTL_ANLPAR,
  RTL_BMCR,
  RTL_BMCR_PHY_RESET,
  RTL_BMCR_RESET,
  RTL_BMSR,
  RTL_BMSR_AN_COMPLETE,
  RTL_BMSR_BASE,
  RTL_BMSR_LINK,
  RTL_CAPR,
  RTL_CAPR_BIAS,
  RTL_CBR,
  RTL_CONFIG0,
  RTL_CONFIG0_RESET,
  RTL_CONFIG0_WRITABLE,
  RTL_CONFIG1,
  RTL_CONFIG1_RESET,
  RTL_CONFIG1_WRITABLE,
  RTL_CONFIG3,
  RTL_CONFIG3_RESET,
  RTL_CONFIG3_WRITABLE,
  RTL_CONFIG4,
  RTL_CONFIG4_WRITABLE,
  RTL_CONFIG5,
  RTL_CONFIG5_WRITABLE,
  RTL_CPCR,
  RTL_CR,
  RTL_CR_BUFE,
  RTL_CR_RE,
  RTL_CR_RST,
  RTL_CR_TE,
  RTL_CSCR,
  RTL_CSCR_CONSTANT,
  RTL_CSCR_LINK_CHANGE,
  RTL_EEPROM_DEVICE_WORD,
  RTL_EEPROM_MAC_WORD,
  RTL_EEPROM_SIGNATURE,
  RTL_EEPROM_VENDOR_WORD,
  RTL_ERBCR,
  RTL_ETH_ZLEN,
  RTL_HLTCLK,
  RTL_HLTCLK_HALT,
  RTL_HLTCLK_RUN,
  RTL_IMR,
  RTL_ISR,
  RTL_ISR_PUN_LINKCHG,
  RTL_ISR_ROK,
  RTL_ISR_RXOVW,
  RTL_ISR_SERR,
  RTL_ISR_TER,
  RTL_ISR_TIMEOUT,
  RTL_ISR_TOK,
  RTL_ISR_UNWRITABLE,
  RTL_MAR0,
  RTL_MPC,
  RTL_MPC_MASK,
  RTL_MSR,
  RTL_MSR_BASE,
  RTL_MSR_LINKB,
  RTL_MULINT,
  RTL_NUM_TX_DESC,
  RTL_PCI_CLASS_ETHERNET,
  RTL_PCI_DEVICE_ID,
  RTL_PCI_REVID_8139,
  RTL_PCI_VENDOR_ID,
  RTL_RBSTART,
  RTL_RCR,
  RTL_RCR_AAP,
  RTL_RCR_AB,
  RTL_RCR_AM,
  RTL_RCR_APM,
  RTL_RCR_RBLEN_MASK,
  RTL_RCR_RBLEN_SHIFT,
  RTL_RCR_UNWRITABLE,
  RTL_RCR_WRAP,
  RTL_REGS_SIZE,
  RTL_RERID,
  RTL_RX_CRC_SIZE,
  RTL_RX_HEADER_SIZE,
  RTL_RX_MAX_FRAME,
  RTL_RX_RING_UNIT,
  RTL_RXS_BAR,
  RTL_RXS_MAR,
  RTL_RXS_PAM,
  RTL_RXS_ROK,
  RTL_TCR,
  RTL_TCR_HWREV_8139C,
  RTL_TCR_LBK_LOOPBACK,
  RTL_TCR_LBK_MASK,
  RTL_TCR_WRITABLE,
  RTL_TCTR,
  RTL_TCTR_HZ,
  RTL_TIMERINT,
  RTL_TPPOLL,
  RTL_TSAD_SUMMARY,
  RTL_TSAD0,
  RTL_TSD_OWN,
  RTL_TSD_SIZE_MASK,
  RTL_TSD_TABT,
  RTL_TSD_TOK,
  RTL_TSD_TUN,
  RTL_TSD_WRITABLE,
  RTL_TSD0,
  RTL_TX_MAX_SIZE,
} from "../spec.js";
import { Eeprom93C46 } from "./eeprom.js";

/** Why a frame was dropped (or a transmit failed). */
export type Rtl8139DropReason =
  /** RX: the receiver is off (CR.RE clear), the clock is halted, or bus mastering is off. */
  | "rxDisabled"
  /** RX: the link is down. */
  | "rxLinkDown"
  /** RX: refused by the address filter (RCR accept bits, MAR hash). */
  | "rxFiltered"
  /** RX: shorter than an Ethernet header. */
  | "rxRunt"
  /** RX: longer than 1518 bytes (8139too resets its receiver on rx_size > 1540). */
  | "rxOversize"
  /** RX: no room in the ring (ISR.RXOVW, MPC + 1). */
  | "rxOverflow"
  /** RX: the ring (RBSTART + CBR …) is not inside guest memory (ISR.SERR). */
  | "rxDmaError"
  /** RX: frames waiting in the `rxPending` queue were discarded by a reset. */
  | "rxReset"
  /** TX: size 0 or above 1792 bytes (TSD.TUN, ISR.TER). */
  | "txBadSize"
  /** TX: TSAD + size is not inside guest memory (TSD.TUN, ISR.TER). */
  | "txDmaError"
  /** TX: the back-end refused the frame (it still completes with TOK, as on a wire). */
  | "txBackend";

/** Counters of {@link Rtl8139}. */
export interface Rtl8139Stats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Frames sent to the device's own receive path (TCR loopback). */
  loopbackFrames: number;
  /** Times a transmit request arrived while one was running (folded into it). */
  txReentries: number;
  /** Times an exit's transmit budget ran out (the rest runs on the next access). */
  txBudgetExhausted: number;
  /** Frames held in the `rxPending` queue because the ring was full. */
  rxQueued: number;
  /** Guest writes that changed nothing (read-only or locked registers, C+ registers). */
  ignoredWrites: number;
  /**
   * Register accesses of an unsupported size (not 1, 2 or 4 bytes): refused, reads as
   * all-ones, writes dropped (see {@link Rtl8139.lastBadAccess}).
   */
  badAccesses: number;
  /** Interrupt-status bits raised by TimerInt. */
  timerInterrupts: number;
  /** Chip resets (CR.RST, 9346CR auto-load, {@link Rtl8139.reset}). */
  resets: number;
  /** Drops per reason. */
  readonly drops: Record<Rtl8139DropReason, number>;
}

/** Events of {@link Rtl8139}. */
export type Rtl8139Events = {
  /** The link went up or down. */
  link: (up: boolean) => void;
  /** A frame was sent or stored in the guest's ring (only emitted with listeners). */
  frame: (direction: "tx" | "rx", frame: Uint8Array) => void;
  /** A frame was dropped or a transmit failed. */
  drop: (reason: Rtl8139DropReason) => void;
  /** The chip was reset. */
  reset: () => void;
};

/** Options of {@link Rtl8139}. */
export interface Rtl8139Options {
  /** Where frames go. */
  readonly backend: NetBackend;
  /** Guest memory the chip DMAs to and from. */
  readonly memory: GuestMemory;
  /** The MAC address stored in the EEPROM (6 bytes or `aa:bb:…`; default 52:54:00:12:34:57). */
  readonly mac?: Uint8Array | string;
  /** The INTx line (default: a new line). */
  readonly irq?: IrqLine;
  /** Name for bus mappings and diagnostics (default `"rtl8139"`). */
  readonly name?: string;
  /** Power-on address of BAR0 (I/O); default 0 (firmware assigns it). */
  readonly ioAddress?: number;
  /** Power-on address of BAR1 (MMIO); default 0. Emulators that cannot move memory BARs (v86) set it. */
  readonly mmioAddress?: number;
  /**
   * Frames held when the ring is full and delivered on the next CAPR write (default 0:
   * the hardware behaviour, the frame is dropped with RXOVW). QEMU's net queue does this.
   */
  readonly rxPending?: number;
  /** Descriptors transmitted at most per exit (default 64). */
  readonly txBudget?: number;
  /** Millisecond clock for TCTR (default `performance.now`). */
  readonly now?: () => number;
  /** Only DMA while PCI Command.MASTER is set (default true). */
  readonly requireBusMaster?: boolean;
}

// Where each register byte belongs: base offset and width of its register.
const REG_BASE = new Uint8Array(RTL_REGS_SIZE);
const REG_WIDTH = new Uint8Array(RTL_REGS_SIZE);
{
  for (let i = 0; i < RTL_REGS_SIZE; i++) {
    REG_BASE[i] = i;
    REG_WIDTH[i] = 1;
  }
  const wide: Array<[number, number]> = [
    [RTL_TSD0, 4],
    [RTL_TSD0 + 4, 4],
    [RTL_TSD0 + 8, 4],
    [RTL_TSD0 + 12, 4],
    [RTL_TSAD0, 4],
    [RTL_TSAD0 + 4, 4],
    [RTL_TSAD0 + 8, 4],
    [RTL_TSAD0 + 12, 4],
    [RTL_RBSTART, 4],
    [RTL_ERBCR, 2],
    [RTL_CAPR, 2],
    [RTL_CBR, 2],
    [RTL_IMR, 2],
    [RTL_ISR, 2],
    [RTL_TCR, 4],
    [RTL_RCR, 4],
    [RTL_TCTR, 4],
    [RTL_MPC, 4],
    [RTL_TIMERINT, 4],
    [RTL_MULINT, 2],
    [RTL_TSAD_SUMMARY, 2],
    [RTL_BMCR, 2],
    [RTL_BMSR, 2],
    [RTL_ANAR, 2],
    [RTL_ANLPAR, 2],
    [RTL_ANER, 2],
    [RTL_CSCR, 2],
  ];
  for (const [base, w] of wide) {
    for (let i = 0; i < w; i++) {
      REG_BASE[base + i] = base;
      REG_WIDTH[base + i] = w;
    }
  }
}

const DROP_REASONS: readonly Rtl8139DropReason[] = [
  "rxDisabled",
  "rxLinkDown",
  "rxFiltered",
  "rxRunt",
  "rxOversize",
  "rxOverflow",
  "rxDmaError",
  "rxReset",
  "txBadSize",
  "txDmaError",
  "txBackend",
];

/** Bytes of the largest ring entry: header, 1518-byte frame, CRC. */
const MAX_ENTRY = RTL_RX_HEADER_SIZE + RTL_RX_MAX_FRAME + RTL_RX_CRC_SIZE;
/** TCTR ticks per millisecond. */
const TICKS_PER_MS = RTL_TCTR_HZ / 1000;

const enum RxResult {
  STORED = 0,
  FULL = 1,
  DROPPED = 2,
}

/** The emulated RTL8139. */
export class Rtl8139 extends Emitter<Rtl8139Events> implements PciFunction {
  /** Name used for mappings. */
  readonly name: string;
  /** The INTx line: high while ISR & IMR ≠ 0 and Command.INTX_DISABLE is clear. */
  readonly irq: IrqLine;
  /**
   * Why the last register access of an unsupported size was refused (size, offset and
   * the sizes allowed), or `null`. Counted in `stats.badAccesses`.
   */
  lastBadAccess: string | null = null;
  /** The PCI configuration space. */
  readonly config: PciConfigSpace;
  /** The 93C46 EEPROM (words 7–9 hold the MAC). */
  readonly eeprom = new Eeprom93C46();
  /** The back-end. */
  readonly backend: NetBackend;
  /** Counters. */
  readonly stats: Rtl8139Stats;
  /** The register file as an {@link IoHandler}, for emulators that map it themselves. */
  readonly registers: IoHandler = {
    read: (offset, size) => this.read(offset, size),
    write: (offset, size, value) => this.write(offset, size, value),
  };

  private readonly memory: GuestMemory;
  private readonly now: () => number;
  private readonly rxPendingMax: number;
  private readonly txBudget: number;
  private readonly requireBusMaster: boolean;
  private readonly endpoint: NetEndpoint;

  // Register state.
  private readonly idr = new Uint8Array(6);
  private readonly mar = new Uint8Array(8);
  private readonly tsd = new Uint32Array(RTL_NUM_TX_DESC);
  private readonly tsad = new Uint32Array(RTL_NUM_TX_DESC);
  private currTx = 0;
  private rbstart = 0;
  private cr = 0;
  private capr = 0; // internal read pointer: CAPR as written + 16, mod ring size
  private cbr = 0;
  private ringSize = RTL_RX_RING_UNIT;
  private imr = 0;
  private isr = 0;
  private tcr = RTL_TCR_HWREV_8139C;
  private rcr = 0;
  private tctrBase = 0;
  private lastTctr = 0;
  private timerInt = 0;
  private mpc = 0;
  private cfg9346 = 0;
  private config0 = RTL_CONFIG0_RESET;
  private config1 = RTL_CONFIG1_RESET;
  private config3 = RTL_CONFIG3_RESET;
  private config4 = 0;
  private config5 = 0;
  private clockRunning = true;
  private mulint = 0;
  private anar = RTL_ANAR_RESET;
  private link: boolean;
  private linkChanged = false;

  // Transmit machinery.
  private txActive = false;
  private txAgain = false;
  private txDeferred = false;
  private txWaiting = false;
  private readonly txCopy = new Uint8Array(RTL_TX_MAX_SIZE);
  // Receive machinery.
  private readonly entry = new Uint8Array(MAX_ENTRY);
  private readonly entryView = new DataView(this.entry.buffer);
  private readonly pending: Uint8Array[] = [];
  private pendingHead = 0;
  /**
   * Frames moved from the `rxPending` queue into the ring during a CAPR write: their ROK
   * is set (again) after each ISR write until the guest has emptied the ring. On the chip,
   * frames waiting in the RX
   * FIFO reach the ring by DMA after the CAPR write, so their ROK comes after 8139too's
   * `rtl8139_isr_ack` that follows the CAPR write in `rtl8139_rx`; raised inside the write,
   * that acknowledgement would clear it, and a NAPI poll that ended on its budget would
   * find no RX bit in IntrStatus, leave the frames in the ring and wait for an interrupt
   * that never comes (found between two v86 guests: a 2 MiB TCP transfer stalled for good
   * with 60 frames queued).
   */
  private rokAfterAck = false;

  /**
   * @throws TypeError when `options` is not an object, `backend` is not a `NetBackend`,
   *   `memory` not a `GuestMemory` or `irq` (when given) not an `IrqLine` (the message
   *   names the option, the type expected and the value given); Error on a bad MAC option
   *   (host configuration)
   */
  constructor(options: Rtl8139Options) {
    const where = "new Rtl8139";
    expectOptions(where, options, "{ backend, memory, mac?, irq?, … }");
    expectArgument(
      where,
      "options.backend",
      options.backend,
      "a NetBackend (e.g. new LoopbackBackend() or switch.createPort(name); attach, detach and send methods)",
      isNetBackendLike,
    );
    expectArgument(
      where,
      "options.memory",
      options.memory,
      "a GuestMemory (e.g. GuestMemory.create(16 << 20))",
      isGuestMemoryLike,
    );
    if (options.irq !== undefined)
      expectArgument(
        where,
        "options.irq",
        options.irq,
        "an IrqLine (new IrqLine(name))",
        isIrqLineLike,
      );
    super();
    this.name = options.name ?? "rtl8139";
    this.irq = options.irq ?? new IrqLine(this.name);
    this.memory = options.memory;
    this.backend = options.backend;
    this.now = options.now ?? (() => performance.now());
    this.rxPendingMax = Math.max(0, Math.floor(options.rxPending ?? 0));
    this.txBudget = Math.max(1, Math.floor(options.txBudget ?? 64));
    this.requireBusMaster = options.requireBusMaster ?? true;
    const drops = {} as Record<Rtl8139DropReason, number>;
    for (const r of DROP_REASONS) drops[r] = 0;
    this.stats = {
      txFrames: 0,
      txBytes: 0,
      rxFrames: 0,
      rxBytes: 0,
      loopbackFrames: 0,
      txReentries: 0,
      txBudgetExhausted: 0,
      rxQueued: 0,
      ignoredWrites: 0,
      badAccesses: 0,
      timerInterrupts: 0,
      resets: 0,
      drops,
    };

    const macOpt = options.mac ?? "52:54:00:12:34:57";
    const mac = typeof macOpt === "string" ? parseMac(macOpt) : macOpt;
    if (mac === null || mac.length !== 6) throw new Error(`bad MAC address ${String(macOpt)}`);
    // EEPROM contents [QEMU `pci_rtl8139_realize`]: signature, PCI ids, MAC in words 7–9.
    const w = this.eeprom.words;
    w[0] = RTL_EEPROM_SIGNATURE;
    w[RTL_EEPROM_VENDOR_WORD] = RTL_PCI_VENDOR_ID;
    w[RTL_EEPROM_DEVICE_WORD] = RTL_PCI_DEVICE_ID;
    for (let i = 0; i < 3; i++) w[RTL_EEPROM_MAC_WORD + i] = mac[2 * i]! | (mac[2 * i + 1]! << 8);

    const cfg = new PciConfigSpace({
      vendorId: RTL_PCI_VENDOR_ID,
      deviceId: RTL_PCI_DEVICE_ID,
      revision: RTL_PCI_REVID_8139,
      classCode: RTL_PCI_CLASS_ETHERNET,
      subsystemVendorId: RTL_PCI_VENDOR_ID,
      subsystemId: RTL_PCI_DEVICE_ID,
      interruptPin: 1,
    });
    cfg.defineBar(0, { kind: "io", size: RTL_REGS_SIZE, address: options.ioAddress ?? 0 });
    cfg.defineBar(1, { kind: "mem32", size: RTL_REGS_SIZE, address: options.mmioAddress ?? 0 });
    cfg.hookWrite(PciConfigOffset.COMMAND, 2, () => this.updateIrq());
    this.config = cfg;

    this.link = this.backend.linkUp;
    this.endpoint = {
      receive: (frame, meta) => this.receive(frame, meta),
      linkChange: (up) => this.setLinkUp(up),
      writable: () => {
        if (this.txWaiting) {
          this.txWaiting = false;
          this.kickTx();
        }
      },
    };
    this.backend.attach(this.endpoint);
    this.chipReset();
    this.stats.resets = 0;
  }

  // ── PciFunction ──────────────────────────────────────────────────────────────

  /** The six BAR slots (BAR0 I/O, BAR1 memory). */
  get bars(): readonly (PciBar | undefined)[] {
    return this.config.bars;
  }

  /** Interrupt Pin: INTA#. */
  get interruptPin(): number {
    return 1;
  }

  /** A configuration read (PCI 3.0 §6.1). */
  configRead(offset: number, size: AccessSize): number {
    return this.config.read(offset, size);
  }

  /** A configuration write. */
  configWrite(offset: number, size: AccessSize, value: number): void {
    this.config.write(offset, size, value);
  }

  /** A read inside BAR0 or BAR1 (the same registers). */
  barRead(bar: number, offset: number, size: AccessSize): number {
    if (bar !== 0 && bar !== 1) return allOnes(size);
    return this.read(offset, size);
  }

  /** A write inside BAR0 or BAR1. */
  barWrite(bar: number, offset: number, size: AccessSize, value: number): void {
    if (bar !== 0 && bar !== 1) return;
    this.write(offset, size, value);
  }

  // ── Host-side API ────────────────────────────────────────────────────────────

  /** The MAC address the EEPROM holds. */
  get mac(): Uint8Array {
    const out = new Uint8Array(6);
    for (let i = 0; i < 3; i++) {
      const word = this.eeprom.words[RTL_EEPROM_MAC_WORD + i]!;
      out[2 * i] = word & 0xff;
      out[2 * i + 1] = word >>> 8;
    }
    return out;
  }

  /** Whether the link is up. */
  get linkUp(): boolean {
    return this.link;
  }

  /** Frames waiting in the `rxPending` queue. */
  get pendingFrames(): number {
    return this.pending.length - this.pendingHead;
  }

  /** The receive ring as the chip sees it: base, size, read pointer (CAPR + 16) and CBR. */
  get rxRing(): { base: number; size: number; read: number; write: number; wrap: boolean } {
    return {
      base: this.rbstart,
      size: this.ringSize,
      read: this.capr,
      write: this.cbr,
      wrap: (this.rcr & RTL_RCR_WRAP) !== 0 && this.ringSize < 65536,
    };
  }

  /** Sets the link (like the cable); raises ISR.PUN/LinkChg on a change. */
  setLinkUp(up: boolean): void {
    if (up === this.link) return;
    this.link = up;
    this.linkChanged = true;
    this.raise(RTL_ISR_PUN_LINKCHG);
    this.emit("link", up);
  }

  /** Checks TimerInt (the emulator calls this periodically; register accesses do too). */
  tick(): void {
    if (this.timerInt !== 0) this.checkTimer();
    if (this.txDeferred) this.kickTx();
  }

  /** Power-on reset: the chip reset plus the multicast filter and EEPROM pins. */
  reset(): void {
    this.mar.fill(0);
    this.eeprom.release();
    this.cfg9346 = 0;
    this.chipReset();
  }

  // ── Register file ────────────────────────────────────────────────────────────

  /**
   * A guest register read at `offset` (0–255) of `size` bytes. A size other than 1, 2 or
   * 4 is refused (x86 issues no other width; a `Bus` already refuses them): counted in
   * `stats.badAccesses`, explained in {@link lastBadAccess}, and read as all-ones — what
   * a PCI read nothing claims returns on x86.
   */
  read(offset: number, size: AccessSize): number {
    if (size !== 1 && size !== 2 && size !== 4) {
      this.badAccess("read", offset, size);
      return allOnes(size);
    }
    if (this.txDeferred || this.timerInt !== 0) this.tick();
    const off = offset & 0xff;
    if (REG_BASE[off] === off && REG_WIDTH[off] === size) return this.regRead(off, size) >>> 0;
    let v = 0;
    for (let i = 0; i < size; i++) {
      const b = (off + i) & 0xff;
      const base = REG_BASE[b]!;
      const reg = this.regRead(base, REG_WIDTH[b]!);
      v |= ((reg >>> (8 * (b - base))) & 0xff) << (8 * i);
    }
    return v >>> 0;
  }

  /**
   * A guest register write at `offset` (0–255) of `size` bytes. A size other than 1, 2
   * or 4 is refused like a bad {@link read} and dropped.
   */
  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 1 && size !== 2 && size !== 4) {
      this.badAccess("write", offset, size);
      return;
    }
    if (this.txDeferred || this.timerInt !== 0) this.tick();
    const off = offset & 0xff;
    if (REG_BASE[off] === off && REG_WIDTH[off] === size) {
      this.regWrite(off, value >>> 0, size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff);
      return;
    }
    // Split into the registers it touches; each gets the bytes aimed at it and a mask.
    let i = 0;
    while (i < size) {
      const b = (off + i) & 0xff;
      const base = REG_BASE[b]!;
      const width = REG_WIDTH[b]!;
      let v = 0;
      let mask = 0;
      while (i < size) {
        const bb = (off + i) & 0xff;
        if (REG_BASE[bb] !== base) break;
        const sh = 8 * (bb - base);
        v |= ((value >>> (8 * i)) & 0xff) << sh;
        mask |= 0xff << sh;
        i++;
      }
      this.regWrite(base, v >>> 0, width === 4 ? mask >>> 0 : mask);
    }
  }

  /** Counts and explains a register access of an unsupported size (cold path). */
  private badAccess(kind: "read" | "write", offset: number, size: number): void {
    this.stats.badAccesses++;
    const at = Number.isInteger(offset) ? `0x${(offset & 0xff).toString(16)}` : String(offset);
    const outcome = kind === "read" ? "read as all-ones" : "write dropped";
    this.lastBadAccess = `${this.name}: register ${kind} of ${size} bytes at offset ${at} refused: the register file takes 1-, 2- or 4-byte accesses; ${outcome}`;
  }

  private regRead(base: number, width: number): number {
    switch (base) {
      case RTL_RBSTART:
        return this.rbstart;
      case RTL_CR:
        return (this.cr & (RTL_CR_RE | RTL_CR_TE)) | (this.bufferEmpty() ? RTL_CR_BUFE : 0);
      case RTL_CAPR:
        return (this.capr - RTL_CAPR_BIAS) & 0xffff;
      case RTL_CBR:
        return this.cbr;
      case RTL_IMR:
        return this.imr;
      case RTL_ISR:
        return this.isr;
      case RTL_TCR:
        return this.tcr;
      case RTL_RCR:
        return this.rcr;
      case RTL_TCTR:
        return this.tctr();
      case RTL_MPC:
        return this.mpc;
      case RTL_9346CR: {
        let v = this.cfg9346 & ~RTL_9346CR_EEDO;
        if ((v & RTL_9346CR_EEM_MASK) === RTL_9346CR_EEM_PROGRAM && this.eeprom.dataOut)
          v |= RTL_9346CR_EEDO;
        return v;
      }
      case RTL_CONFIG0:
        return this.config0;
      case RTL_CONFIG1:
        return this.config1;
      case RTL_TIMERINT:
        return this.timerInt;
      case RTL_MSR:
        return RTL_MSR_BASE | (this.link ? 0 : RTL_MSR_LINKB);
      case RTL_CONFIG3:
        return this.config3;
      case RTL_CONFIG4:
        return this.config4;
      case RTL_MULINT:
        return this.mulint;
      case RTL_RERID:
        return RTL_PCI_REVID_8139;
      case RTL_TSAD_SUMMARY:
        return this.txSummary();
      case RTL_BMCR:
        return RTL_BMCR_RESET;
      case RTL_BMSR:
        return this.bmsr();
      case RTL_ANAR:
        return this.anar;
      case RTL_ANLPAR:
        return this.link ? RTL_ANAR_RESET : 0;
      case RTL_ANER:
        return RTL_ANER_RESET;
      case RTL_CSCR: {
        const v = RTL_CSCR_CONSTANT | (this.linkChanged ? RTL_CSCR_LINK_CHANGE : 0);
        this.linkChanged = false;
        return v;
      }
      case RTL_CONFIG5:
        return this.config5;
      default:
        break;
    }
    if (base < 6) return this.idr[base]!;
    if (base >= RTL_MAR0 && base < RTL_MAR0 + 8) return this.mar[base - RTL_MAR0]!;
    if (base >= RTL_TSD0 && base < RTL_TSD0 + 16 && width === 4)
      return this.tsd[(base - RTL_TSD0) >> 2]!;
    if (base >= RTL_TSAD0 && base < RTL_TSAD0 + 16 && width === 4)
      return this.tsad[(base - RTL_TSAD0) >> 2]!;
    // Reserved, early-RX, PHY parameter, C+ and HLTCLK (write-only) registers read 0.
    return 0;
  }

  private regWrite(base: number, value: number, mask: number): void {
    const merge = (old: number): number => ((old & ~mask) | (value & mask)) >>> 0;
    switch (base) {
      case RTL_RBSTART:
        this.rbstart = merge(this.rbstart);
        return;
      case RTL_CR:
        this.writeCr(value & 0xff);
        return;
      case RTL_CAPR: {
        const v = merge((this.capr - RTL_CAPR_BIAS) & 0xffff) & 0xffff;
        this.capr = (v + RTL_CAPR_BIAS) % this.ringSize;
        const before = this.pendingFrames;
        this.flushRx();
        if (this.pendingFrames < before) this.rokAfterAck = true;
        return;
      }
      case RTL_IMR:
        this.imr = merge(this.imr) & 0xffff & ~RTL_ISR_UNWRITABLE;
        this.updateIrq();
        return;
      case RTL_ISR:
        this.isr &= ~(value & mask & ~RTL_ISR_UNWRITABLE);
        if (this.rokAfterAck) {
          if (this.bufferEmpty()) this.rokAfterAck = false;
          else this.isr |= RTL_ISR_ROK;
        }
        this.updateIrq();
        return;
      case RTL_TCR:
        // QEMU ignores TCR writes while the transmitter is off ("Must enable Tx/Rx before
        // setting transfer thresholds!" [8139too]).
        if (!(this.cr & RTL_CR_TE)) {
          this.stats.ignoredWrites++;
          return;
        }
        this.tcr = ((this.tcr & ~RTL_TCR_WRITABLE) | (merge(this.tcr) & RTL_TCR_WRITABLE)) >>> 0;
        return;
      case RTL_RCR: {
        const v = ((this.rcr & RTL_RCR_UNWRITABLE) | (merge(this.rcr) & ~RTL_RCR_UNWRITABLE)) >>> 0;
        const size = RTL_RX_RING_UNIT << ((v & RTL_RCR_RBLEN_MASK) >>> RTL_RCR_RBLEN_SHIFT);
        this.rcr = v;
        if (size !== this.ringSize || !(this.cr & RTL_CR_RE)) this.resetRing(size);
        return;
      }
      case RTL_TCTR:
        this.tctrBase = this.now();
        this.lastTctr = 0;
        return;
      case RTL_MPC:
        this.mpc = 0;
        return;
      case RTL_9346CR:
        this.write9346(value & 0xff);
        return;
      case RTL_CONFIG0:
        this.config0 = this.configWriteMasked(this.config0, value, RTL_CONFIG0_WRITABLE);
        return;
      case RTL_CONFIG1:
        this.config1 = this.configWriteMasked(this.config1, value, RTL_CONFIG1_WRITABLE);
        return;
      case RTL_CONFIG3:
        this.config3 = this.configWriteMasked(this.config3, value, RTL_CONFIG3_WRITABLE);
        return;
      case RTL_CONFIG4:
        this.config4 = this.configWriteMasked(this.config4, value, RTL_CONFIG4_WRITABLE);
        return;
      case RTL_CONFIG5:
        this.config5 = this.configWriteMasked(this.config5, value, RTL_CONFIG5_WRITABLE);
        return;
      case RTL_TIMERINT:
        this.timerInt = merge(this.timerInt);
        this.lastTctr = this.tctr();
        return;
      case RTL_HLTCLK:
        if (value === RTL_HLTCLK_RUN) this.clockRunning = true;
        else if (value === RTL_HLTCLK_HALT) this.clockRunning = false;
        else this.stats.ignoredWrites++;
        return;
      case RTL_MULINT:
        this.mulint = merge(this.mulint) & 0xffff;
        return;
      case RTL_BMCR:
        // Speed, duplex and auto-negotiation are read-only [QEMU]; a PHY reset restores
        // the advertisement. Writable only with config writes enabled [8139too hw_start].
        if ((this.cfg9346 & RTL_9346CR_EEM_MASK) !== RTL_9346CR_EEM_CONFIG) {
          this.stats.ignoredWrites++;
          return;
        }
        if (value & mask & RTL_BMCR_PHY_RESET) this.anar = RTL_ANAR_RESET;
        return;
      case RTL_ANAR:
        this.anar = (merge(this.anar) & 0x05e0) | 0x0001;
        return;
      case RTL_TPPOLL:
      case RTL_CPCR:
      case RTL_CPCR + 1:
        // C+ registers: a normal-mode chip has no descriptor rings (CVE-2015-5165 and
        // CVE-2016-8910 live in the C+ path QEMU adds here).
        this.stats.ignoredWrites++;
        return;
      default:
        break;
    }
    if (base < 6) {
      this.idr[base] = value & 0xff;
      return;
    }
    if (base >= RTL_MAR0 && base < RTL_MAR0 + 8) {
      this.mar[base - RTL_MAR0] = value & 0xff;
      return;
    }
    if (base >= RTL_TSD0 && base < RTL_TSD0 + 16) {
      const d = (base - RTL_TSD0) >> 2;
      // A TSD write clears the status bits (TOK, TUN, NCC, OWC, TABT, CRS) [QEMU].
      this.tsd[d] = merge(this.tsd[d]!) & RTL_TSD_WRITABLE;
      if (!(this.tsd[d]! & RTL_TSD_OWN)) this.kickTx();
      return;
    }
    if (base >= RTL_TSAD0 && base < RTL_TSAD0 + 16) {
      const d = (base - RTL_TSAD0) >> 2;
      this.tsad[d] = merge(this.tsad[d]!);
      return;
    }
    this.stats.ignoredWrites++; // read-only or reserved
  }

  private configWriteMasked(old: number, value: number, writable: number): number {
    if ((this.cfg9346 & RTL_9346CR_EEM_MASK) !== RTL_9346CR_EEM_CONFIG) {
      this.stats.ignoredWrites++;
      return old;
    }
    return ((old & ~writable) | (value & writable)) & 0xff;
  }

  private writeCr(v: number): void {
    if (v & RTL_CR_RST) this.chipReset();
    const was = this.cr;
    this.cr = v & (RTL_CR_RE | RTL_CR_TE);
    // Turning the receiver off resets the ring pointers (8139too's rx_err path relies on it).
    if (was & RTL_CR_RE && !(this.cr & RTL_CR_RE)) this.resetRing(this.ringSize);
    if (this.cr & RTL_CR_TE && !(was & RTL_CR_TE)) this.kickTx();
    if (this.cr & RTL_CR_RE && !(was & RTL_CR_RE)) this.flushRx();
  }

  private write9346(v: number): void {
    const eem = v & RTL_9346CR_EEM_MASK;
    if (eem === RTL_9346CR_EEM_AUTOLOAD) {
      // Auto-load: reload from the EEPROM and reset; the mode returns to normal [QEMU].
      this.eeprom.release();
      this.cfg9346 = 0;
      this.chipReset();
      return;
    }
    this.cfg9346 = v & RTL_9346CR_WRITABLE;
    if (eem === RTL_9346CR_EEM_PROGRAM) {
      this.eeprom.drive(
        (v & RTL_9346CR_EECS) !== 0,
        (v & RTL_9346CR_EESK) !== 0,
        (v & RTL_9346CR_EEDI) !== 0,
      );
    } else this.eeprom.release();
  }

  private bmsr(): number {
    return RTL_BMSR_BASE | RTL_BMSR_AN_COMPLETE | (this.link ? RTL_BMSR_LINK : 0);
  }

  private txSummary(): number {
    let v = 0;
    for (let d = 0; d < RTL_NUM_TX_DESC; d++) {
      const t = this.tsd[d]!;
      if (t & RTL_TSD_TOK) v |= 1 << (12 + d);
      if (t & RTL_TSD_TUN) v |= 1 << (8 + d);
      if (t & RTL_TSD_TABT) v |= 1 << (4 + d);
      if (t & RTL_TSD_OWN) v |= 1 << d;
    }
    return v;
  }

  private tctr(): number {
    return Math.floor((this.now() - this.tctrBase) * TICKS_PER_MS) >>> 0;
  }

  private checkTimer(): void {
    const t = this.tctr();
    const prev = this.lastTctr;
    const target = this.timerInt;
    this.lastTctr = t;
    const crossed = t >= prev ? prev < target && target <= t : target > prev || target <= t;
    if (crossed) {
      this.stats.timerInterrupts++;
      this.raise(RTL_ISR_TIMEOUT);
    }
  }

  /** The chip reset (CR.RST) [QEMU `rtl8139_reset`]. */
  private chipReset(): void {
    this.stats.resets++;
    for (let i = 0; i < 3; i++) {
      const word = this.eeprom.words[RTL_EEPROM_MAC_WORD + i]!;
      this.idr[2 * i] = word & 0xff;
      this.idr[2 * i + 1] = word >>> 8;
    }
    this.isr = 0;
    this.imr = 0;
    this.tsd.fill(RTL_TSD_OWN);
    this.currTx = 0;
    this.txDeferred = false;
    this.txWaiting = false;
    this.rbstart = 0;
    this.rcr = 0;
    this.resetRing(RTL_RX_RING_UNIT);
    this.tcr = RTL_TCR_HWREV_8139C;
    this.cr = 0;
    this.mpc = 0;
    this.config0 = RTL_CONFIG0_RESET;
    this.config1 = RTL_CONFIG1_RESET;
    this.config3 = RTL_CONFIG3_RESET;
    this.config5 = 0;
    this.anar = RTL_ANAR_RESET;
    this.tctrBase = this.now();
    this.lastTctr = 0;
    this.timerInt = 0;
    this.clockRunning = true;
    this.mulint = 0;
    this.rokAfterAck = false;
    const dropped = this.pendingFrames;
    if (dropped > 0) {
      this.stats.drops.rxReset += dropped;
      this.pending.length = 0;
      this.pendingHead = 0;
    }
    this.updateIrq();
    if (this.listenerCount("reset") > 0) this.emit("reset");
  }

  private resetRing(size: number): void {
    this.ringSize = size;
    this.capr = 0;
    this.cbr = 0;
  }

  private bufferEmpty(): boolean {
    return this.cbr === this.capr;
  }

  private raise(bits: number): void {
    this.isr |= bits;
    this.updateIrq();
  }

  private updateIrq(): void {
    const level = (this.isr & this.imr) !== 0 && !this.config.intxDisabled;
    this.config.setInterruptStatus(level);
    this.irq.set(level);
  }

  private drop(reason: Rtl8139DropReason): void {
    this.stats.drops[reason]++;
    if (this.listenerCount("drop") > 0) this.emit("drop", reason);
  }

  private dmaAllowed(): boolean {
    return !this.requireBusMaster || this.config.busMaster;
  }

  // ── Transmit ─────────────────────────────────────────────────────────────────

  /**
   * Sends every ready descriptor from the current one, round-robin, at most `txBudget`
   * per exit. A request arriving while this runs (the guest's interrupt handler running
   * synchronously, loopback) is folded into the running loop: no recursion.
   */
  private kickTx(): void {
    if (this.txActive) {
      this.txAgain = true;
      this.stats.txReentries++;
      return;
    }
    this.txActive = true;
    this.txDeferred = false;
    let budget = this.txBudget;
    try {
      do {
        this.txAgain = false;
        while (budget > 0 && this.cr & RTL_CR_TE && !this.txWaiting) {
          const d = this.currTx;
          if (this.tsd[d]! & RTL_TSD_OWN) break;
          if (!this.dmaAllowed()) break;
          budget--;
          if (!this.transmitOne(d)) break;
        }
      } while (this.txAgain && budget > 0);
      if (budget === 0 && this.cr & RTL_CR_TE && !(this.tsd[this.currTx]! & RTL_TSD_OWN)) {
        this.txDeferred = true;
        this.stats.txBudgetExhausted++;
      }
    } finally {
      this.txActive = false;
    }
  }

  /** Transmits descriptor `d`. @returns false when the back-end is busy (retry later) */
  private transmitOne(d: number): boolean {
    const t = this.tsd[d]!;
    const size = t & RTL_TSD_SIZE_MASK;
    if (size === 0 || size > RTL_TX_MAX_SIZE) {
      this.txFail(d, "txBadSize");
      return true;
    }
    const src = this.memory.slice(this.tsad[d]!, size);
    if (!(src instanceof Uint8Array)) {
      this.txFail(d, "txDmaError");
      return true;
    }
    if ((this.tcr & RTL_TCR_LBK_MASK) === RTL_TCR_LBK_LOOPBACK) {
      // Loopback: copy first (the receive DMA may overlap the transmit buffer).
      const copy = this.txCopy.subarray(0, size);
      copy.set(src);
      this.stats.loopbackFrames++;
      this.txDone(d, copy);
      this.rxFrame(copy, false);
      return true;
    }
    const r = this.backend.send(src, null);
    if (r === "busy") {
      this.txWaiting = true;
      return false;
    }
    if (r === "dropped") this.drop("txBackend");
    this.txDone(d, src);
    return true;
  }

  private txDone(d: number, frame: Uint8Array): void {
    this.tsd[d] = (this.tsd[d]! & RTL_TSD_WRITABLE) | RTL_TSD_OWN | RTL_TSD_TOK;
    this.currTx = (d + 1) & (RTL_NUM_TX_DESC - 1);
    this.stats.txFrames++;
    this.stats.txBytes += frame.length;
    if (this.listenerCount("frame") > 0) this.emit("frame", "tx", frame);
    this.raise(RTL_ISR_TOK);
  }

  private txFail(d: number, reason: Rtl8139DropReason): void {
    this.tsd[d] = (this.tsd[d]! & RTL_TSD_WRITABLE) | RTL_TSD_OWN | RTL_TSD_TUN;
    this.currTx = (d + 1) & (RTL_NUM_TX_DESC - 1);
    this.drop(reason);
    this.raise(RTL_ISR_TER);
  }

  // ── Receive ──────────────────────────────────────────────────────────────────

  private receive(frame: Uint8Array, _meta: NetFrameMeta | null): void {
    if (this.pendingFrames > 0) {
      // Keep order: queue behind the waiting frames, then try to move them.
      this.enqueuePending(frame);
      this.flushRx();
      return;
    }
    this.rxFrame(frame, true);
  }

  private enqueuePending(frame: Uint8Array): void {
    if (this.pendingFrames >= this.rxPendingMax) {
      this.overflow();
      return;
    }
    this.pending.push(frame.slice());
    this.stats.rxQueued++;
  }

  private overflow(): void {
    this.mpc = (this.mpc + 1) & RTL_MPC_MASK;
    this.drop("rxOverflow");
    this.raise(RTL_ISR_RXOVW);
  }

  /** Moves waiting frames into the ring while there is room (bounded by the queue). */
  private flushRx(): void {
    while (this.pendingHead < this.pending.length) {
      const f = this.pending[this.pendingHead]!;
      if (this.store(f) === RxResult.FULL) break;
      this.pending[this.pendingHead] = EMPTY;
      this.pendingHead++;
    }
    if (this.pendingHead > 0 && this.pendingHead === this.pending.length) {
      this.pending.length = 0;
      this.pendingHead = 0;
    } else if (this.pendingHead > 1024) {
      this.pending.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /** A frame for the receive path (from the wire, or looped back). */
  private rxFrame(frame: Uint8Array, fromWire: boolean): void {
    const r = this.store(frame);
    if (r !== RxResult.FULL) return;
    if (fromWire && this.rxPendingMax > 0) this.enqueuePending(frame);
    else this.overflow();
  }

  /** Filters and stores one frame [QEMU `rtl8139_do_receive`]. */
  private store(frame: Uint8Array): RxResult {
    if (!(this.cr & RTL_CR_RE) || !this.clockRunning || !this.dmaAllowed()) {
      this.drop("rxDisabled");
      return RxResult.DROPPED;
    }
    if (!this.link) {
      this.drop("rxLinkDown");
      return RxResult.DROPPED;
    }
    const len = frame.length;
    if (len < 14) {
      this.drop("rxRunt");
      return RxResult.DROPPED;
    }
    if (len > RTL_RX_MAX_FRAME) {
      this.drop("rxOversize");
      return RxResult.DROPPED;
    }
    const status = this.filter(frame);
    if (status === 0) {
      this.drop("rxFiltered");
      return RxResult.DROPPED;
    }
    const padded = Math.max(len, RTL_ETH_ZLEN);
    const total = RTL_RX_HEADER_SIZE + padded + RTL_RX_CRC_SIZE;
    const size = this.ringSize;
    const cbr = this.cbr;
    // Room check [QEMU]: equal pointers mean empty; never fill the ring to equality.
    const avail = (size + this.capr - cbr) % size;
    if (avail !== 0 && padded + 8 >= avail) return RxResult.FULL;
    // Build the entry: header, frame, zero padding, CRC.
    const e = this.entry;
    const v = this.entryView;
    v.setUint16(0, status, true);
    v.setUint16(2, padded + RTL_RX_CRC_SIZE, true);
    e.set(frame, RTL_RX_HEADER_SIZE);
    if (padded > len) e.fill(0, RTL_RX_HEADER_SIZE + len, RTL_RX_HEADER_SIZE + padded);
    v.setUint32(
      RTL_RX_HEADER_SIZE + padded,
      ethernetFcs(e, RTL_RX_HEADER_SIZE, RTL_RX_HEADER_SIZE + padded),
      true,
    );
    // DMA: the whole range is checked before a byte moves.
    const wrapMode = (this.rcr & RTL_RCR_WRAP) !== 0 && size < 65536;
    const at = this.rbstart + cbr;
    const first = wrapMode ? total : Math.min(total, size - cbr);
    const m = this.memory;
    if (
      m.check(at, first) !== undefined ||
      (first < total && m.check(this.rbstart, total - first) !== undefined)
    ) {
      this.drop("rxDmaError");
      this.raise(RTL_ISR_SERR);
      return RxResult.DROPPED;
    }
    m.write(at, first === total ? e.subarray(0, total) : e.subarray(0, first));
    if (first < total) m.write(this.rbstart, e.subarray(first, total));
    this.cbr = ((cbr + total + 3) & ~3) % size;
    this.stats.rxFrames++;
    this.stats.rxBytes += len;
    if (this.listenerCount("frame") > 0) this.emit("frame", "rx", frame);
    this.raise(RTL_ISR_ROK);
    return RxResult.STORED;
  }

  /** The address filter [QEMU]: the RX header status bits, or 0 to drop. */
  private filter(f: Uint8Array): number {
    const rcr = this.rcr;
    if (rcr & RTL_RCR_AAP) return RTL_RXS_ROK;
    const d0 = f[0]!;
    if (d0 & 1) {
      if (
        d0 === 0xff &&
        f[1] === 0xff &&
        f[2] === 0xff &&
        f[3] === 0xff &&
        f[4] === 0xff &&
        f[5] === 0xff
      ) {
        return rcr & RTL_RCR_AB ? RTL_RXS_ROK | RTL_RXS_BAR : 0;
      }
      if (!(rcr & RTL_RCR_AM)) return 0;
      const bit = multicastHashBit(f, 0);
      return this.mar[bit >>> 3]! & (1 << (bit & 7)) ? RTL_RXS_ROK | RTL_RXS_MAR : 0;
    }
    if (!(rcr & RTL_RCR_APM)) return 0;
    const m = this.idr;
    return d0 === m[0] &&
      f[1] === m[1] &&
      f[2] === m[2] &&
      f[3] === m[3] &&
      f[4] === m[4] &&
      f[5] === m[5]
      ? RTL_RXS_ROK | RTL_RXS_PAM
      : 0;
  }
}

const EMPTY = new Uint8Array(0);
