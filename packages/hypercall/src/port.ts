/**
 * `HypercallPort`: the guest's way into the hypervisor. One {@link HypercallPort.invoke} is
 * one exit (SYSCALL / VMCALL through the hypercall page, reference §1.2), whatever the batch
 * size behind it; a preempted hypercall re-executed as a continuation (reference §1.4) is
 * another exit, as on real hardware.
 *
 * @module
 */

import { NR_HYPERCALLS } from "./abi.js";
import type { Vcpu } from "./domain.js";
import { XenErrno } from "./errors.js";
import type { Hypervisor } from "./hypervisor.js";

const ERESTART = -XenErrno.ERESTART;

/** Counts of a port, for the bench's exits-per-operation columns. */
export interface PortStats {
  /** Exits (hypercall instructions executed, continuations included). */
  readonly exits: number;
  /** Re-entries caused by preemption. */
  readonly continuations: number;
  /** Exits per hypercall number. */
  readonly perOp: Readonly<Uint32Array>;
}

/**
 * A vCPU's hypercall instruction. Arguments are register values: set them with
 * {@link setArg} / {@link setArgWords}, or pass numbers to {@link call}.
 */
export class HypercallPort {
  /** Exits so far. */
  exits = 0;
  /** Continuations so far. */
  continuations = 0;
  /** Exits per hypercall number. */
  readonly perOp = new Uint32Array(NR_HYPERCALLS);
  private readonly regs: Uint32Array;

  /**
   * @param hypervisor - the hypervisor
   * @param vcpu - the calling vCPU
   */
  constructor(
    readonly hypervisor: Hypervisor,
    readonly vcpu: Vcpu,
  ) {
    this.regs = vcpu.regs;
  }

  /**
   * Sets argument register `i` from a signed safe integer (negative = upper-half address).
   *
   * @param i - 0..4
   * @param value - the register value
   */
  setArg(i: number, value: number): void {
    const hi = Math.floor(value / 2 ** 32);
    this.regs[2 * i] = value - hi * 2 ** 32;
    this.regs[2 * i + 1] = hi >>> 0;
  }

  /**
   * Sets argument register `i` from its two 32-bit halves (a full 64-bit value, e.g. a PTE
   * with NX set).
   */
  setArgWords(i: number, lo: number, hi: number): void {
    this.regs[2 * i] = lo >>> 0;
    this.regs[2 * i + 1] = hi >>> 0;
  }

  /**
   * Executes the hypercall with the registers as set: one exit, plus one per continuation.
   *
   * @param op - hypercall number
   * @returns the result (`>= 0` or `-errno`)
   */
  invoke(op: number): number {
    const hv = this.hypervisor;
    const slot = op >= 0 && op < NR_HYPERCALLS ? op : 0;
    for (;;) {
      this.exits++;
      this.perOp[slot]!++;
      const rc = hv.hypercall(this.vcpu, op);
      if (rc !== ERESTART) return rc;
      this.continuations++;
    }
  }

  /**
   * Sets up to five arguments from numbers and invokes.
   *
   * @returns the result
   */
  call(op: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0): number {
    this.setArg(0, a0);
    this.setArg(1, a1);
    this.setArg(2, a2);
    this.setArg(3, a3);
    this.setArg(4, a4);
    return this.invoke(op);
  }

  /** A snapshot of the counters. */
  stats(): PortStats {
    return { exits: this.exits, continuations: this.continuations, perOp: this.perOp.slice() };
  }

  /** Zeroes the counters. */
  resetStats(): void {
    this.exits = 0;
    this.continuations = 0;
    this.perOp.fill(0);
  }
}
