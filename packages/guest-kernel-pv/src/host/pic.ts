/**
 * A minimal i8259A programmable interrupt controller (Intel 8259A datasheet; the PC/AT
 * master at I/O ports 0x20–0x21), the emulated interrupt controller of the full-emulation
 * configurations: eight inputs, IRR / ISR / IMR, fully nested priority (input 0 highest),
 * per-input edge or level triggering (the PIIX ELCR), non-specific and specific EOI
 * (OCW2), OCW3 register select. The guest acknowledges each interrupt it handled with an
 * EOI — one `OUT 0x20` — which is the exit an event channel does not need.
 *
 * Injection is the host's: {@link Pic8259.takeDeliverable} moves deliverable requests to
 * in-service (the INTA cycle a VMM performs when it injects on VM entry).
 *
 * @module
 */

import type { AccessSize, IoHandler } from "@pvkit/platform";

/** The master PIC's command port. */
export const PIC_MASTER_CMD = 0x20;
/** OCW2: non-specific EOI. */
export const PIC_EOI = 0x20;
/** OCW2: specific EOI for input `n` is `PIC_SPECIFIC_EOI | n`. */
export const PIC_SPECIFIC_EOI = 0x60;

/** An 8259A with its inputs driven by the host. */
export class Pic8259 implements IoHandler {
  /** Interrupt request register. */
  irr = 0;
  /** In-service register. */
  isr = 0;
  /** Interrupt mask register (OCW1). */
  imr = 0;
  /** Inputs that are level-triggered (ELCR); the others are edge-triggered. */
  readonly elcr: number;
  /** EOIs received. */
  eois = 0;
  private levels = 0;
  private readIsr = false;
  /** Called when the deliverable set may have changed. */
  onChange: () => void = () => {};

  /** @param levelTriggered - bit mask of level-triggered inputs */
  constructor(levelTriggered = 0) {
    this.elcr = levelTriggered & 0xff;
  }

  /**
   * Drives input `n` to `level`.
   *
   * @param n - 0…7
   * @param level - the line's level
   */
  setInput(n: number, level: boolean): void {
    const bit = 1 << n;
    const was = (this.levels & bit) !== 0;
    if (level) this.levels |= bit;
    else this.levels &= ~bit;
    if ((this.elcr & bit) !== 0) {
      if (level) this.irr |= bit;
      else this.irr &= ~bit;
    } else if (level && !was) this.irr |= bit;
    this.onChange();
  }

  /** Requests that may be injected now (unmasked, not blocked by a higher-priority in-service input). */
  deliverable(): number {
    const ready = this.irr & ~this.imr & ~this.isr & 0xff;
    if (ready === 0 || this.isr === 0) return ready;
    const highest = this.isr & -this.isr; // lowest set bit = highest priority in service
    return ready & (highest - 1);
  }

  /** Moves the deliverable requests to in-service and returns them (the INTA cycle). */
  takeDeliverable(): number {
    const d = this.deliverable();
    this.isr |= d;
    this.irr &= ~d;
    return d;
  }

  /** @inheritdoc */
  read(offset: number, _size: AccessSize): number {
    if (offset === 1) return this.imr;
    return this.readIsr ? this.isr : this.irr;
  }

  /** @inheritdoc */
  write(offset: number, _size: AccessSize, value: number): void {
    const v = value & 0xff;
    if (offset === 1) {
      this.imr = v; // OCW1
      this.onChange();
      return;
    }
    if ((v & 0x10) !== 0) {
      // ICW1: initialisation resets the masks and the registers.
      this.irr = 0;
      this.isr = 0;
      this.imr = 0;
      this.readIsr = false;
      this.onChange();
      return;
    }
    if ((v & 0x18) === 0x08) {
      // OCW3: bits 1–0 = 10 read IRR, 11 read ISR.
      if ((v & 0x02) !== 0) this.readIsr = (v & 0x01) !== 0;
      return;
    }
    // OCW2.
    const cmd = v & 0xe0;
    if (cmd === PIC_EOI) {
      const top = this.isr & -this.isr;
      this.isr &= ~top;
    } else if (cmd === PIC_SPECIFIC_EOI) {
      this.isr &= ~(1 << (v & 7));
    } else return;
    this.eois++;
    // A level-triggered input still asserted requests again.
    this.irr |= this.levels & this.elcr;
    this.onChange();
  }
}
