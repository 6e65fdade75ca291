/**
 * `WarpClock`: host time that runs in real time while the guest works and jumps over its
 * idle periods — QEMU's `-icount` "warp" idea: a guest that sleeps 1 ms costs no wall time,
 * yet every timer still fires in order and the clock never goes backwards. The benches use
 * it so timer workloads measure the work of sleeping, not the sleeping; tests use the
 * fully deterministic `ManualClock` of `@pvkit/hypercall`.
 *
 * @module
 */

import type { Clock } from "@pvkit/hypercall";

/** Real time plus the idle time skipped so far. */
export class WarpClock implements Clock {
  private readonly base = performance.now();
  private skipped = 0;

  /** @returns nanoseconds since construction, idle periods skipped counted in full */
  nowNs(): number {
    return Math.floor((performance.now() - this.base) * 1e6) + this.skipped;
  }

  /**
   * Jumps forward to `ns` if that is ahead (an idle guest whose next timer is at `ns`).
   *
   * @param ns - the time to reach
   */
  warpTo(ns: number): void {
    const now = this.nowNs();
    if (ns > now) this.skipped += Math.ceil(ns - now);
  }

  /** Nanoseconds skipped so far. */
  get skippedNs(): number {
    return this.skipped;
  }
}
