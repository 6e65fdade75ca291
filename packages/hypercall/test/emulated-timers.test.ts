import {
  APIC_DEFAULT_BASE,
  APIC_LVT_TIMER_PERIODIC,
  APIC_LVTT,
  APIC_TMCCT,
  APIC_TMICT,
  EmulatedTimerGuest,
  HPET_COUNTER,
  HPET_DEFAULT_BASE,
  HPET_HZ,
  HPET_ID,
  HPET_MMIO_SIZE,
  Hpet,
  LapicTimer,
  ManualClock,
  nsForTicks,
  PIT_CH0,
  PIT_HZ,
  Pit8254,
  ticksIn,
} from "@pvkit/hypercall";
import { Bus, IrqLine } from "@pvkit/platform";
import { describe, expect, test } from "vitest";

function platform() {
  const clock = new ManualClock(0);
  const bus = new Bus();
  const lapicIrq = new IrqLine("lapic");
  const pitIrq = new IrqLine("pit");
  const hpetIrq = new IrqLine("hpet");
  const lapic = new LapicTimer(clock, lapicIrq);
  const pit = new Pit8254(clock, pitIrq);
  const hpet = new Hpet(clock, hpetIrq);
  bus.map("mmio", APIC_DEFAULT_BASE, 0x1000, lapic, "lapic");
  bus.map("pio", 0x40, 4, pit, "pit");
  bus.map("mmio", HPET_DEFAULT_BASE, HPET_MMIO_SIZE, hpet, "hpet");
  const guest = new EmulatedTimerGuest(bus);
  return { clock, bus, lapic, pit, hpet, lapicIrq, pitIrq, hpetIrq, guest };
}

describe("tick arithmetic", () => {
  test("ticksIn and nsForTicks are exact inverses up to rounding", () => {
    for (const hz of [PIT_HZ, HPET_HZ, 100_000_000]) {
      for (const ticks of [1, 7, 65536, 10 ** 9]) {
        const ns = nsForTicks(ticks, hz);
        expect(ticksIn(ns, hz)).toBe(ticks);
        expect(ticksIn(ns - 1, hz)).toBe(ticks - 1);
      }
    }
  });
});

describe("LAPIC timer", () => {
  test("one-shot: reprogramming is one exit; fires once at the deadline; EOI is one exit", () => {
    const p = platform();
    p.guest.lapicSetup(0xef);
    p.bus.resetStats();
    p.guest.lapicProgram(1000); // 1000 ticks at 100 MHz / 1 = 10 µs
    expect(p.bus.exits).toBe(1);
    p.clock.set(9_999);
    expect(p.lapic.poll()).toBe(0);
    expect(p.bus.read("mmio", APIC_DEFAULT_BASE + APIC_TMCCT, 4)).toBe(1);
    p.clock.set(10_000);
    expect(p.lapic.poll()).toBe(1);
    expect(p.lapicIrq.level).toBe(true);
    p.guest.lapicEoi();
    expect(p.lapicIrq.level).toBe(false);
    p.clock.set(50_000);
    expect(p.lapic.poll()).toBe(0);
    expect(p.lapic.fired).toBe(1);
  });

  test("periodic mode reloads; masked LVT fires nothing; TMICT 0 stops", () => {
    const p = platform();
    p.bus.write("mmio", APIC_DEFAULT_BASE + 0x3e0, 4, 0xb);
    p.bus.write("mmio", APIC_DEFAULT_BASE + APIC_LVTT, 4, 0x30 | APIC_LVT_TIMER_PERIODIC);
    p.bus.write("mmio", APIC_DEFAULT_BASE + APIC_TMICT, 4, 100);
    let fired = 0;
    for (let t = 1000; t <= 10_000; t += 1000) {
      p.clock.set(t);
      fired += p.lapic.poll();
    }
    expect(fired).toBe(10);
    p.bus.write("mmio", APIC_DEFAULT_BASE + APIC_TMICT, 4, 0);
    p.clock.set(20_000);
    expect(p.lapic.poll()).toBe(0);
    p.bus.write("mmio", APIC_DEFAULT_BASE + APIC_LVTT, 4, 0x30 | (1 << 16));
    p.bus.write("mmio", APIC_DEFAULT_BASE + APIC_TMICT, 4, 10);
    p.clock.set(30_000);
    expect(p.lapic.poll()).toBe(0);
  });
});

describe("i8254 PIT", () => {
  test("reprogram = 2 exits, read = 3 exits; the counter counts down at 1.193182 MHz", () => {
    const p = platform();
    p.guest.pitSetup();
    p.bus.resetStats();
    p.guest.pitProgram(11932); // ~10 ms
    expect(p.bus.exits).toBe(2);
    p.clock.set(1_000_000);
    p.bus.resetStats();
    const v = p.guest.pitRead();
    expect(p.bus.exits).toBe(3);
    expect(v).toBe(11932 - ticksIn(1_000_000, PIT_HZ));
    p.clock.set(nsForTicks(11932, PIT_HZ));
    expect(p.pit.poll()).toBe(1);
    expect(p.pitIrq.raises).toBe(1);
    p.clock.set(10 ** 9);
    expect(p.pit.poll()).toBe(0); // mode 0 is one-shot
  });

  test("hostile programming: other counters, garbage modes and odd reads are harmless", () => {
    const p = platform();
    p.bus.write("pio", 0x43, 1, 0xff);
    p.bus.write("pio", 0x43, 1, 0x7e);
    p.bus.write("pio", 0x41, 1, 0x12);
    p.bus.write("pio", 0x43, 1, 0x3e); // mode 7 → 3
    expect(p.pit.mode).toBe(3);
    p.bus.write("pio", PIT_CH0, 1, 0);
    p.bus.write("pio", PIT_CH0, 1, 0); // 0 = 65536
    expect(p.bus.read("pio", PIT_CH0, 1)).toBeLessThan(256);
    expect(p.bus.stats().handlerFaults).toBe(0);
  });
});

describe("HPET", () => {
  test("capabilities, enable, reprogram = 3 exits, clock read = 1 exit, fires on crossing", () => {
    const p = platform();
    expect(p.bus.read("mmio", HPET_DEFAULT_BASE + HPET_ID + 4, 4)).toBe(69_841_279);
    p.guest.hpetSetup();
    p.clock.set(1_000_000);
    p.bus.resetStats();
    expect(p.guest.hpetRead()).toBe(ticksIn(1_000_000, HPET_HZ));
    expect(p.bus.exits).toBe(1);
    p.bus.resetStats();
    expect(p.guest.hpetProgram(14_318)).toBe(true); // ~1 ms
    expect(p.bus.exits).toBe(3);
    p.clock.set(1_999_000);
    expect(p.hpet.poll()).toBe(0);
    p.clock.set(2_000_100);
    expect(p.hpet.poll()).toBe(1);
    expect(p.hpetIrq.level).toBe(true);
    p.bus.write("mmio", HPET_DEFAULT_BASE + 0x20, 4, 1);
    expect(p.hpetIrq.level).toBe(false);
  });

  test("a comparator already in the past reports the miss (Linux's -ETIME path)", () => {
    const p = platform();
    p.guest.hpetSetup();
    p.clock.set(5_000_000);
    expect(p.guest.hpetProgram(0)).toBe(false);
    expect(p.bus.read("mmio", HPET_DEFAULT_BASE + HPET_COUNTER + 4, 4)).toBe(0);
  });
});
