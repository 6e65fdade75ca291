import { IrqLine } from "@pvkit/platform";
import { describe, expect, it } from "vitest";

describe("IrqLine", () => {
  it("starts low and counts rising edges only", () => {
    const irq = new IrqLine("test");
    expect(irq.name).toBe("test");
    expect(irq.level).toBe(false);
    expect(irq.raises).toBe(0);
    irq.raise();
    irq.raise(); // already high: not a new interrupt
    expect(irq.level).toBe(true);
    expect(irq.raises).toBe(1);
    irq.lower();
    irq.lower();
    expect(irq.level).toBe(false);
    irq.raise();
    expect(irq.raises).toBe(2);
    irq.set(false);
    irq.set(true);
    expect(irq.raises).toBe(3);
    irq.resetStats();
    expect(irq.raises).toBe(0);
    expect(irq.level).toBe(true);
  });

  it("notifies listeners on changes only, in order, until they unsubscribe", () => {
    const irq = new IrqLine();
    const a: boolean[] = [];
    const b: boolean[] = [];
    const offA = irq.onChange((l) => a.push(l));
    irq.onChange((l) => b.push(l));
    irq.raise();
    irq.raise();
    irq.lower();
    offA();
    irq.raise();
    irq.set(true);
    expect(a).toEqual([true, false]);
    expect(b).toEqual([true, false, true]);
  });

  it("has the new level visible to listeners while they run", () => {
    const irq = new IrqLine();
    const seen: boolean[] = [];
    irq.onChange(() => seen.push(irq.level));
    irq.raise();
    irq.lower();
    expect(seen).toEqual([true, false]);
  });
});
