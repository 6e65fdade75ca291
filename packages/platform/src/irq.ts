/**
 * Level-triggered interrupt lines, the way a device signals an emulator's interrupt
 * controller (PCI INTx, a virtio-mmio IRQ).
 *
 * @module
 */

import { expectArgument } from "./args.js";

/** Called with the new level whenever the line changes. */
export type IrqListener = (level: boolean) => void;

/**
 * A level-triggered interrupt line. The device raises and lowers it; the emulator
 * listens (or polls {@link level}). Rising edges are counted as interrupts delivered.
 *
 * @example
 * ```ts
 * const irq = new IrqLine("virtio-rng");
 * irq.onChange((high) => pic.setIrq(5, high));
 * ```
 */
export class IrqLine {
  private high = false;
  private readonly listeners = new Set<IrqListener>();
  /** Rising edges since construction or {@link resetStats}: the interrupts the guest saw. */
  raises = 0;

  /**
   * @param name - for diagnostics
   * @throws TypeError when `name` is not a string (e.g. `new IrqLine(5)`: a line is not
   *   numbered here; the emulator maps it to its interrupt controller's pin)
   */
  constructor(readonly name = "irq") {
    expectArgument("new IrqLine", "name", name, "a string", (v) => typeof v === "string");
  }

  /** The current level. */
  get level(): boolean {
    return this.high;
  }

  /** Drives the line high (no-op when already high). */
  raise(): void {
    this.set(true);
  }

  /** Drives the line low (no-op when already low). */
  lower(): void {
    this.set(false);
  }

  /** Sets the level; listeners run only on a change. */
  set(level: boolean): void {
    if (level === this.high) return;
    this.high = level;
    if (level) this.raises++;
    for (const l of this.listeners) l(level);
  }

  /**
   * Subscribes to level changes.
   *
   * @returns a function that unsubscribes
   */
  onChange(listener: IrqListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Zeroes the interrupt counter. */
  resetStats(): void {
    this.raises = 0;
  }
}
