/**
 * `pv_ops.time` (Linux's `pv_ops.time` plus the clocksource and clock-event device it
 * picks): the kernel reads the time and programs its one-shot timer through one
 * interface, four implementations (reference `xen-pv.md` §4):
 *
 * | mode | clock read (`ktime_get`) | one-shot programming (`set_next_event`) |
 * |---|---|---|
 * | `pv` | pvclock in the shared-info page: 0 exits | `set_timer_op`: 1 hypercall |
 * | `lapic` | TSC (native under VT-x TSC offsetting): 0 exits | TMICT write: 1 MMIO exit |
 * | `hpet` | main counter: 1 MMIO exit | read counter, write comparator, read counter: 3 exits (after a clock read: Linux's `clockevents_program_event` computes the delta from `ktime_get`) |
 * | `pit` | latch + LSB + MSB of counter 0: 3 PIO exits | LSB, MSB to port 0x40: 2 exits (after a clock read) |
 *
 * The PIT has no free-running counter in one-shot mode; as Linux's i8253 clocksource
 * combines the counter with jiffies, this one combines it with the time of the last
 * programming, and re-arms a full 65535-tick period when it finds the counter run out.
 *
 * @module
 */

import {
  EmulatedTimerGuest,
  HPET_HZ,
  PIT_HZ,
  PvClockReader,
  VcpuInfoLayout,
} from "@pvkit/hypercall";
import type { GuestMemory } from "@pvkit/platform";
import type { BootInfo } from "../../boot.js";
import type { TimeMode } from "../../config.js";
import type { Cpu } from "../../exit.js";
import type { CpuBus } from "../arch/cpu-bus.js";
import type { XenHypercalls } from "../arch/xen.js";
import { panic } from "../panic.js";

/** The kernel's time operations. */
export interface TimeOps {
  /** Which mode. */
  readonly mode: TimeMode;
  /** Reads the clock (`ktime_get`), ns. */
  now(): number;
  /**
   * Programs the one-shot timer for the absolute time `deadline` (ns).
   *
   * @returns false when the deadline had already passed (Linux's `-ETIME`): the caller
   *   handles expiry at once
   */
  program(deadline: number): boolean;
  /** The LAPIC's EOI when its timer interrupt is done (LAPIC mode), else undefined. */
  readonly localEoi?: () => void;
}

/** Vector of the LAPIC timer (Linux's `LOCAL_TIMER_VECTOR`). */
const LOCAL_TIMER_VECTOR = 0xec;
/** LAPIC timer input clock (`LapicTimer`'s default bus clock, divide-by-1). */
const LAPIC_HZ = 100_000_000;

/** Ticks of a `hz` clock in `ns` nanoseconds, rounded up (at least 1). */
function ticksFor(ns: number, hz: number): number {
  if (ns <= 0) return 1;
  const s = Math.floor(ns / 1e9);
  return Math.max(1, s * hz + Math.ceil(((ns - s * 1e9) * hz) / 1e9));
}

/** Nanoseconds of `ticks` ticks of a `hz` clock, rounded down. */
function nsOf(ticks: number, hz: number): number {
  const s = Math.floor(ticks / hz);
  return s * 1e9 + Math.floor(((ticks - s * hz) * 1e9) / hz);
}

/** PV: pvclock and `set_timer_op`. */
class PvTime implements TimeOps {
  readonly mode = "pv" as const;
  private readonly reader: PvClockReader;

  constructor(
    cpu: Cpu,
    private readonly xen: XenHypercalls,
    sharedInfo: GuestMemory,
    vcpuInfoOffset: number,
  ) {
    const b = sharedInfo.regions[0]!.bytes;
    const words = new Int32Array(b.buffer, b.byteOffset, 1024);
    this.reader = new PvClockReader(words, vcpuInfoOffset + VcpuInfoLayout.time, () => cpu.rdtsc());
  }

  now(): number {
    const t = this.reader.read();
    if (t < 0) panic("time/pvclock", "vcpu_time_info never settled (version stayed odd)");
    return t;
  }

  program(deadline: number): boolean {
    if (this.xen.setTimerOp(Math.max(1, Math.ceil(deadline))) < 0) {
      panic("time/set_timer_op", `refused (${this.xen.lastFailure?.rc})`);
    }
    return true;
  }
}

/** The LAPIC timer with the TSC as clocksource. */
class LapicTime implements TimeOps {
  readonly mode = "lapic" as const;
  readonly localEoi: () => void;

  constructor(
    private readonly cpu: Cpu,
    private readonly dev: EmulatedTimerGuest,
    private readonly tscKhz: number,
  ) {
    dev.lapicSetup(LOCAL_TIMER_VECTOR);
    this.localEoi = () => dev.lapicEoi();
  }

  now(): number {
    const tsc = this.cpu.rdtsc();
    const ms = Math.floor(tsc / this.tscKhz);
    return ms * 1_000_000 + Math.floor(((tsc - ms * this.tscKhz) * 1_000_000) / this.tscKhz);
  }

  program(deadline: number): boolean {
    const delta = deadline - this.now();
    this.dev.lapicProgram(Math.min(0xffff_ffff, ticksFor(delta, LAPIC_HZ)));
    return true;
  }
}

/** The HPET: main counter as clocksource, comparator 0 as clock event. */
class HpetTime implements TimeOps {
  readonly mode = "hpet" as const;
  private high = 0;
  private last = 0;

  constructor(private readonly dev: EmulatedTimerGuest) {
    dev.hpetSetup();
  }

  now(): number {
    const c = this.dev.hpetRead();
    if (c < this.last) this.high += 2 ** 32;
    this.last = c;
    return nsOf(this.high + c, HPET_HZ);
  }

  program(deadline: number): boolean {
    const delta = deadline - this.now();
    return this.dev.hpetProgram(Math.min(0x7fff_ffff, ticksFor(delta, HPET_HZ)));
  }
}

/** The i8254 PIT in one-shot mode (mode 0). */
class PitTime implements TimeOps {
  readonly mode = "pit" as const;
  private base = 0;
  private armed = 0;
  private lastNs = 0;

  constructor(private readonly dev: EmulatedTimerGuest) {
    dev.pitSetup();
    this.arm(0xffff);
  }

  private arm(ticks: number): void {
    this.armed = ticks;
    this.dev.pitProgram(ticks);
  }

  now(): number {
    const c = this.dev.pitRead();
    let t: number;
    if (c === 0) {
      // Ran out: a whole period passed since the last programming; start another.
      this.base += nsOf(this.armed, PIT_HZ);
      t = this.base;
      this.arm(0xffff);
    } else t = this.base + nsOf(this.armed - c, PIT_HZ);
    if (t < this.lastNs) t = this.lastNs;
    this.lastNs = t;
    return t;
  }

  program(deadline: number): boolean {
    const now = this.now();
    this.base = now;
    this.arm(Math.min(0xffff, ticksFor(deadline - now, PIT_HZ)));
    return true;
  }
}

/**
 * Picks and initialises `pv_ops.time` for the boot configuration (the device setup costs
 * its exits here, at boot).
 */
export function createTimeOps(
  boot: BootInfo,
  cpu: Cpu,
  bus: CpuBus,
  xen: XenHypercalls,
  sharedInfo: GuestMemory,
): TimeOps {
  const t = boot.devices.timer;
  switch (boot.config.time) {
    case "pv":
      return new PvTime(cpu, xen, sharedInfo, boot.vcpuInfoOffset);
    case "lapic":
      return new LapicTime(cpu, new EmulatedTimerGuest(bus, t.base), boot.tscKhz);
    case "hpet":
      return new HpetTime(new EmulatedTimerGuest(bus, undefined, t.base));
    case "pit":
      return new PitTime(new EmulatedTimerGuest(bus));
  }
}
