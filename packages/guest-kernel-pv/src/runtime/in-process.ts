/**
 * The in-process runtime: the guest kernel and the host run on one thread and an exit is
 * a function call (`InProcessCpu.exit` → `HostMachine.exit`). Exit counts are exact; time
 * is optimistic (an exit costs a call, not a VM transition). The idle vCPU yields to the
 * event loop, so the devices' asynchronous back-ends complete, and moves a controllable
 * clock to the next timer deadline (a `ManualClock` or `WarpClock` jumps; a real clock is
 * waited for).
 *
 * @module
 */

import { ManualClock } from "@pvkit/hypercall";
import { yieldToEventLoop } from "@pvkit/platform";
import { GuestKernelError, GuestKernelErrorCode } from "../errors.js";
import type { Cpu, CpuControls } from "../exit.js";
import { WarpClock } from "../host/clock.js";
import type { HostMachine } from "../host/machine.js";

/** How long an idle guest with no timer armed may wait for a device before it is declared stuck. */
export const IDLE_WATCHDOG_MS = 2_000;

/** A `Cpu` whose exits are calls into a `HostMachine` on the same thread. */
export class InProcessCpu implements Cpu {
  /** The execution controls (the host's). */
  readonly controls: CpuControls;

  /** @param host - the host */
  constructor(private readonly host: HostMachine) {
    this.controls = host.controls;
  }

  /** One exit: a call. */
  exit(op: number, a0: number, a1: number, a2: number, a3: number, a4: number, a5: number): number {
    return this.host.exit(op, a0, a1, a2, a3, a4, a5);
  }

  /** Fires due timers (hardware runs them asynchronously), then answers the pending lines. */
  pendingInterrupts(): number {
    this.host.pollTimers();
    return this.host.pendingInterrupts();
  }

  takeInterrupts(): number {
    return this.host.takeInterrupts();
  }

  rdtsc(): number {
    return this.host.rdtsc();
  }

  /**
   * Idles: lets the event loop run (device back-ends complete), then moves the clock to the
   * next timer deadline and fires it. A guest with no timer armed waits for device activity
   * at most {@link IDLE_WATCHDOG_MS} of real time.
   *
   * @throws GuestKernelError `GUEST_DEADLOCK` when nothing ever wakes the guest
   */
  async waitForInterrupt(): Promise<void> {
    const host = this.host;
    const clock = host.clock;
    const started = performance.now();
    for (let spins = 0; ; spins++) {
      if (host.idle() !== 0) return;
      await yieldToEventLoop();
      if (host.idle() !== 0) return;
      const next = host.nextDeadline();
      if (next >= 0) {
        if (clock instanceof ManualClock) clock.set(next);
        else if (clock instanceof WarpClock) clock.warpTo(next);
        continue;
      }
      if (performance.now() - started > IDLE_WATCHDOG_MS) {
        throw new GuestKernelError(
          GuestKernelErrorCode.GUEST_DEADLOCK,
          `the guest idled for ${IDLE_WATCHDOG_MS} ms with no timer armed and no device activity (${spins} event-loop turns): it would sleep forever`,
        );
      }
    }
  }
}
