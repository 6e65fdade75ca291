/**
 * Emulated timers and clocks, the full-emulation counterparts of PV timers and pvclock
 * (reference §4.3). Each is an {@link IoHandler} mapped on a `Bus`, so every register
 * access of the guest is one exit counted by the bus:
 *
 * - {@link LapicTimer}: xAPIC timer registers through MMIO (LVT Timer 0x320, TMICT 0x380,
 *   TMCCT 0x390, TDCR 0x3E0, EOI 0x0B0). Linux `lapic_next_event` = 1 write to TMICT.
 * - {@link Pit8254}: i8254 ports 0x40–0x43, 1.193182 MHz. `pit_next_event` = 2 OUTs to 0x40
 *   (LSB, MSB); reading counter 0 = latch command + 2 reads = 3 exits.
 * - {@link Hpet}: HPET MMIO (GCAP_ID 0x000, GEN_CONF 0x010, GINTR_STA 0x020, MAIN_COUNTER
 *   0x0F0, Tn_CONF 0x100+0x20n, Tn_CMP 0x108+0x20n), 14.31818 MHz. `hpet_clkevt_set_next_event`
 *   = read counter, write comparator, read counter (3 exits); a clock read = 1 exit.
 *
 * Expiry raises an {@link IrqLine}; the devices fire when {@link EmulatedTimer.poll}ed at
 * the clock's current time (no real-time sleeping).
 *
 * @module
 */

import type { AccessSize, BusAccess, IoHandler, IrqLine } from "@pvkit/platform";
import type { Clock } from "../clock.js";

/** A device with a deadline that the platform polls. */
export interface EmulatedTimer {
  /** Fires what is due at the clock's time. @returns interrupts raised */
  poll(): number;
  /** Next expiry in ns, or -1. */
  nextDeadline(): number;
}

/** Ticks of a `hz` clock in `ns` nanoseconds, exactly (`floor(ns·hz/10^9)`). */
export function ticksIn(ns: number, hz: number): number {
  if (ns <= 0) return 0;
  const s = Math.floor(ns / 1e9);
  return s * hz + Math.floor(((ns - s * 1e9) * hz) / 1e9);
}

/** Nanoseconds until `ticks` ticks of a `hz` clock have elapsed (ceiling). */
export function nsForTicks(ticks: number, hz: number): number {
  const s = Math.floor(ticks / hz);
  return s * 1e9 + Math.ceil(((ticks - s * hz) * 1e9) / hz);
}

// -------------------------------------------------------------------------------------------
// Local APIC timer

/** xAPIC register offsets (Intel SDM vol. 3, "Local APIC Register Address Map"). */
export const APIC_EOI = 0x0b0;
/** LVT Timer register. */
export const APIC_LVTT = 0x320;
/** Initial Count register. */
export const APIC_TMICT = 0x380;
/** Current Count register. */
export const APIC_TMCCT = 0x390;
/** Divide Configuration register. */
export const APIC_TDCR = 0x3e0;
/** LVT mask bit. */
export const APIC_LVT_MASKED = 1 << 16;
/** LVT timer mode: periodic (bits 17–18 = 01). */
export const APIC_LVT_TIMER_PERIODIC = 1 << 17;
/** Default xAPIC base. */
export const APIC_DEFAULT_BASE = 0xfee0_0000;

/** TDCR bits (0,1,3) → divider. */
function apicDivider(tdcr: number): number {
  const v = (tdcr & 3) | ((tdcr >> 1) & 4);
  return v === 7 ? 1 : 2 << v;
}

/** The local APIC timer of one vCPU. */
export class LapicTimer implements IoHandler, EmulatedTimer {
  /** LVT Timer. */
  lvt = APIC_LVT_MASKED;
  /** Divide configuration. */
  tdcr = 0;
  /** Initial count. */
  initial = 0;
  /** Interrupts raised. */
  fired = 0;
  /** EOIs written. */
  eois = 0;
  private startNs = 0;
  private deadline = -1;

  /**
   * @param clock - time source
   * @param irq - the timer interrupt
   * @param busHz - APIC timer input clock (default 100 MHz)
   */
  constructor(
    private readonly clock: Clock,
    private readonly irq: IrqLine,
    readonly busHz = 100_000_000,
  ) {}

  private get hz(): number {
    return this.busHz / apicDivider(this.tdcr);
  }

  /** @inheritdoc */
  read(offset: number, _size: AccessSize): number {
    switch (offset) {
      case APIC_LVTT:
        return this.lvt;
      case APIC_TMICT:
        return this.initial;
      case APIC_TMCCT: {
        if (this.initial === 0 || this.deadline < 0) return 0;
        const elapsed = ticksIn(this.clock.nowNs() - this.startNs, this.hz);
        const periodic = (this.lvt & APIC_LVT_TIMER_PERIODIC) !== 0;
        if (periodic) return this.initial - (elapsed % this.initial);
        return Math.max(0, this.initial - elapsed);
      }
      case APIC_TDCR:
        return this.tdcr;
      default:
        return 0;
    }
  }

  /** @inheritdoc */
  write(offset: number, _size: AccessSize, value: number): void {
    switch (offset) {
      case APIC_EOI:
        this.eois++;
        this.irq.lower();
        return;
      case APIC_LVTT:
        this.lvt = value & (0xff | APIC_LVT_MASKED | (3 << 17));
        return;
      case APIC_TDCR:
        this.tdcr = value & 0xb;
        return;
      case APIC_TMICT:
        this.initial = value >>> 0;
        this.startNs = this.clock.nowNs();
        this.deadline = this.initial === 0 ? -1 : this.startNs + nsForTicks(this.initial, this.hz);
        return;
      default:
        return;
    }
  }

  /** @inheritdoc */
  nextDeadline(): number {
    return this.deadline;
  }

  /** @inheritdoc */
  poll(): number {
    const now = this.clock.nowNs();
    if (this.deadline < 0 || now < this.deadline) return 0;
    if ((this.lvt & APIC_LVT_TIMER_PERIODIC) !== 0 && this.initial > 0) {
      this.startNs = this.deadline;
      this.deadline = this.startNs + nsForTicks(this.initial, this.hz);
      if (this.deadline <= now) this.deadline = now + nsForTicks(this.initial, this.hz);
    } else {
      this.deadline = -1;
    }
    if ((this.lvt & APIC_LVT_MASKED) !== 0) return 0;
    this.fired++;
    this.irq.lower();
    this.irq.raise();
    return 1;
  }
}

// -------------------------------------------------------------------------------------------
// i8254 PIT

/** PIT input clock, Hz. */
export const PIT_HZ = 1_193_182;
/** PIT counter 0 data port. */
export const PIT_CH0 = 0x40;
/** PIT mode/command port. */
export const PIT_MODE = 0x43;

/** Counter 0 of an i8254 (counters 1 and 2 accept and ignore programming). */
export class Pit8254 implements IoHandler, EmulatedTimer {
  /** Operating mode of counter 0 (0 = interrupt on terminal count, 2 = rate generator). */
  mode = 0;
  /** Access mode (1 LSB, 2 MSB, 3 LSB then MSB). */
  access = 3;
  /** Reload value (0 means 65536). */
  reload = 0;
  /** Interrupts raised. */
  fired = 0;
  private writeHigh = false;
  private readHigh = false;
  private latched = -1;
  private lsb = 0;
  private startNs = 0;
  private deadline = -1;

  /**
   * @param clock - time source
   * @param irq - IRQ 0
   */
  constructor(
    private readonly clock: Clock,
    private readonly irq: IrqLine,
  ) {}

  private get period(): number {
    return this.reload === 0 ? 0x10000 : this.reload;
  }

  /** Current value of counter 0. */
  count(): number {
    if (this.deadline < 0 && this.mode === 0) return 0;
    const elapsed = ticksIn(this.clock.nowNs() - this.startNs, PIT_HZ);
    if (this.mode === 2 || this.mode === 3) return this.period - (elapsed % this.period);
    return Math.max(0, this.period - elapsed) & 0xffff;
  }

  /** @inheritdoc */
  read(offset: number, _size: AccessSize): number {
    if (offset !== 0) return 0;
    const value = this.latched >= 0 ? this.latched : this.count();
    let out: number;
    if (this.access === 1) out = value & 0xff;
    else if (this.access === 2) out = (value >> 8) & 0xff;
    else {
      out = this.readHigh ? (value >> 8) & 0xff : value & 0xff;
      this.readHigh = !this.readHigh;
      if (!this.readHigh) this.latched = -1;
      return out;
    }
    this.latched = -1;
    return out;
  }

  /** @inheritdoc */
  write(offset: number, _size: AccessSize, value: number): void {
    if (offset === 3) {
      const counter = (value >> 6) & 3;
      if (counter !== 0) return;
      const access = (value >> 4) & 3;
      if (access === 0) {
        this.latched = this.count();
        this.readHigh = false;
        return;
      }
      this.access = access;
      this.mode = (value >> 1) & 7;
      if (this.mode > 5) this.mode -= 4;
      this.writeHigh = false;
      this.readHigh = false;
      this.deadline = -1;
      return;
    }
    if (offset !== 0) return;
    const b = value & 0xff;
    if (this.access === 3 && !this.writeHigh) {
      this.lsb = b;
      this.writeHigh = true;
      return;
    }
    this.writeHigh = false;
    if (this.access === 1) this.reload = b;
    else if (this.access === 2) this.reload = b << 8;
    else this.reload = this.lsb | (b << 8);
    this.startNs = this.clock.nowNs();
    this.deadline = this.startNs + nsForTicks(this.period, PIT_HZ);
  }

  /** @inheritdoc */
  nextDeadline(): number {
    return this.deadline;
  }

  /** @inheritdoc */
  poll(): number {
    const now = this.clock.nowNs();
    if (this.deadline < 0 || now < this.deadline) return 0;
    if (this.mode === 2 || this.mode === 3) {
      this.startNs = this.deadline;
      this.deadline = this.startNs + nsForTicks(this.period, PIT_HZ);
      if (this.deadline <= now) this.deadline = now + nsForTicks(this.period, PIT_HZ);
    } else {
      this.deadline = -1;
    }
    this.fired++;
    this.irq.lower();
    this.irq.raise();
    return 1;
  }
}

// -------------------------------------------------------------------------------------------
// HPET

/** HPET main counter frequency, Hz (period 69 841 279 fs). */
export const HPET_HZ = 14_318_180;
/** HPET counter period in femtoseconds (GCAP_ID bits 63:32). */
export const HPET_PERIOD_FS = 69_841_279;
/** Default HPET base. */
export const HPET_DEFAULT_BASE = 0xfed0_0000;
/** General capabilities and ID. */
export const HPET_ID = 0x000;
/** General configuration (bit 0 ENABLE_CNF). */
export const HPET_CFG = 0x010;
/** General interrupt status. */
export const HPET_STATUS = 0x020;
/** Main counter. */
export const HPET_COUNTER = 0x0f0;
/** Timer n configuration: `0x100 + 0x20·n`. */
export const HPET_Tn_CFG = 0x100;
/** Timer n comparator: `0x108 + 0x20·n`. */
export const HPET_Tn_CMP = 0x108;
/** Tn_CFG: interrupt enable. */
export const HPET_TN_ENABLE = 1 << 2;
/** Tn_CFG: periodic. */
export const HPET_TN_PERIODIC = 1 << 3;
/** HPET window size. */
export const HPET_MMIO_SIZE = 0x400;

/** An HPET with three timers; timer 0 drives the IRQ. */
export class Hpet implements IoHandler, EmulatedTimer {
  /** General configuration. */
  config = 0;
  /** Interrupt status. */
  status = 0;
  /** Timer configurations. */
  readonly timerCfg = new Uint32Array(3);
  /** Comparators (main-counter values). */
  readonly comparator = new Float64Array(3);
  /** Interrupts raised. */
  fired = 0;
  private counterBase = 0;
  private enabledAtNs = 0;
  private lastSeen = 0;

  /**
   * @param clock - time source
   * @param irq - timer 0's interrupt
   */
  constructor(
    private readonly clock: Clock,
    private readonly irq: IrqLine,
  ) {}

  /** Main counter value now. */
  counter(): number {
    if ((this.config & 1) === 0) return this.counterBase;
    return this.counterBase + ticksIn(this.clock.nowNs() - this.enabledAtNs, HPET_HZ);
  }

  /** @inheritdoc */
  read(offset: number, _size: AccessSize): number {
    if (offset === HPET_ID) return 0x8086_a201; // vendor 8086, 64-bit counter, 3 timers, rev 1
    if (offset === HPET_ID + 4) return HPET_PERIOD_FS;
    if (offset === HPET_CFG) return this.config;
    if (offset === HPET_STATUS) return this.status;
    if (offset === HPET_COUNTER) return this.counter() % 2 ** 32;
    if (offset === HPET_COUNTER + 4) return Math.floor(this.counter() / 2 ** 32);
    const t = (offset - 0x100) >> 5;
    if (t < 0 || t > 2) return 0;
    const reg = (offset - 0x100) & 0x1f;
    if (reg === 0) return this.timerCfg[t]!;
    if (reg === 8) return this.comparator[t]! % 2 ** 32;
    if (reg === 12) return Math.floor(this.comparator[t]! / 2 ** 32);
    return 0;
  }

  /** @inheritdoc */
  write(offset: number, _size: AccessSize, value: number): void {
    if (offset === HPET_CFG) {
      const was = this.config & 1;
      if (was && (value & 1) === 0) this.counterBase = this.counter();
      if (!was && (value & 1) !== 0) this.enabledAtNs = this.clock.nowNs();
      this.config = value & 3;
      this.lastSeen = this.counter();
      return;
    }
    if (offset === HPET_STATUS) {
      this.status &= ~value;
      if ((this.status & 1) === 0) this.irq.lower();
      return;
    }
    if (offset === HPET_COUNTER || offset === HPET_COUNTER + 4) {
      if ((this.config & 1) !== 0) return; // writes only while halted
      const c = this.counterBase;
      const lo = offset === HPET_COUNTER ? value >>> 0 : c % 2 ** 32;
      const hi = offset === HPET_COUNTER ? Math.floor(c / 2 ** 32) : value >>> 0;
      this.counterBase = hi * 2 ** 32 + lo;
      this.lastSeen = this.counterBase;
      return;
    }
    const t = (offset - 0x100) >> 5;
    if (t < 0 || t > 2) return;
    const reg = (offset - 0x100) & 0x1f;
    if (reg === 0) this.timerCfg[t] = value & (HPET_TN_ENABLE | HPET_TN_PERIODIC | 2);
    else if (reg === 8) {
      const c = this.comparator[t]!;
      this.comparator[t] = Math.floor(c / 2 ** 32) * 2 ** 32 + (value >>> 0);
    } else if (reg === 12)
      this.comparator[t] = (value >>> 0) * 2 ** 32 + (this.comparator[t]! % 2 ** 32);
  }

  /** @inheritdoc */
  nextDeadline(): number {
    if ((this.config & 1) === 0 || (this.timerCfg[0]! & HPET_TN_ENABLE) === 0) return -1;
    const cmp = this.comparator[0]!;
    const now = this.counter();
    if (cmp <= this.lastSeen) return -1;
    return this.clock.nowNs() + (cmp > now ? nsForTicks(cmp - now, HPET_HZ) : 0);
  }

  /** Fires timer 0 when the main counter crossed its comparator since the last poll. */
  poll(): number {
    if ((this.config & 1) === 0) return 0;
    const now = this.counter();
    const prev = this.lastSeen;
    this.lastSeen = now;
    if ((this.timerCfg[0]! & HPET_TN_ENABLE) === 0) return 0;
    const cmp = this.comparator[0]!;
    if (!(prev < cmp && cmp <= now)) return 0;
    this.fired++;
    this.status |= 1;
    this.irq.lower();
    this.irq.raise();
    return 1;
  }
}

// -------------------------------------------------------------------------------------------
// Guest-side drivers (what Linux does per operation; every access goes through the Bus)

/** The guest's use of the emulated devices, one bus access per register access. */
export class EmulatedTimerGuest {
  /**
   * @param bus - the bus the devices are mapped on (a `Bus`, or any `BusAccess`)
   * @param lapicBase - xAPIC base
   * @param hpetBase - HPET base
   */
  constructor(
    readonly bus: BusAccess,
    readonly lapicBase = APIC_DEFAULT_BASE,
    readonly hpetBase = HPET_DEFAULT_BASE,
  ) {}

  /** One-time LAPIC setup: unmask, one-shot mode, divide by 1 (2 exits). */
  lapicSetup(vector: number): void {
    this.bus.write("mmio", this.lapicBase + APIC_TDCR, 4, 0xb);
    this.bus.write("mmio", this.lapicBase + APIC_LVTT, 4, vector & 0xff);
  }

  /** `lapic_next_event`: one write to TMICT (1 exit). */
  lapicProgram(ticks: number): void {
    this.bus.write("mmio", this.lapicBase + APIC_TMICT, 4, ticks >>> 0);
  }

  /** End of interrupt (1 exit). */
  lapicEoi(): void {
    this.bus.write("mmio", this.lapicBase + APIC_EOI, 4, 0);
  }

  /** `pit_set_oneshot`: counter 0, LSB/MSB, mode 0 (1 exit). */
  pitSetup(): void {
    this.bus.write("pio", PIT_MODE, 1, 0x30);
  }

  /** `pit_next_event`: LSB and MSB to port 0x40 (2 exits). */
  pitProgram(ticks: number): void {
    this.bus.write("pio", PIT_CH0, 1, ticks & 0xff);
    this.bus.write("pio", PIT_CH0, 1, (ticks >> 8) & 0xff);
  }

  /** Reads counter 0: latch command + LSB + MSB (3 exits). */
  pitRead(): number {
    this.bus.write("pio", PIT_MODE, 1, 0x00);
    const lo = this.bus.read("pio", PIT_CH0, 1);
    const hi = this.bus.read("pio", PIT_CH0, 1);
    return lo | (hi << 8);
  }

  /** Enables the HPET and timer 0 in one-shot mode (3 exits). */
  hpetSetup(): void {
    this.bus.write("mmio", this.hpetBase + HPET_CFG, 4, 1);
    const cfg = this.bus.read("mmio", this.hpetBase + HPET_Tn_CFG, 4);
    this.bus.write(
      "mmio",
      this.hpetBase + HPET_Tn_CFG,
      4,
      (cfg & ~HPET_TN_PERIODIC) | HPET_TN_ENABLE,
    );
  }

  /**
   * `hpet_clkevt_set_next_event`: read counter, write comparator, read counter (3 exits).
   *
   * @returns false when the deadline had already passed (Linux's -ETIME)
   */
  hpetProgram(deltaTicks: number): boolean {
    const cnt = this.bus.read("mmio", this.hpetBase + HPET_COUNTER, 4);
    const target = (cnt + deltaTicks) >>> 0;
    this.bus.write("mmio", this.hpetBase + HPET_Tn_CMP, 4, target);
    const now = this.bus.read("mmio", this.hpetBase + HPET_COUNTER, 4);
    return ((target - now) | 0) > 0;
  }

  /** Reads the HPET main counter (low 32 bits; 1 exit), as Linux's clocksource does. */
  hpetRead(): number {
    return this.bus.read("mmio", this.hpetBase + HPET_COUNTER, 4);
  }
}
