/**
 * How guest-kernel code reports a state it cannot handle: it throws a {@link KernelBug}
 * naming the kernel function; the scheduler turns it into a `GuestPanic` carrying where the
 * kernel stopped (function, process, last exit). Linux's `BUG()` / `panic()`.
 *
 * @module
 */

/** A kernel invariant broken, or a privileged operation the host refused. */
export class KernelBug extends Error {
  /**
   * @param where - the kernel function, e.g. `"mm/fault"`
   * @param reason - what went wrong
   */
  constructor(
    readonly where: string,
    readonly reason: string,
  ) {
    super(`${where}: ${reason}`);
    this.name = "KernelBug";
  }
}

/**
 * Stops the kernel (`panic()`).
 *
 * @param where - the kernel function
 * @param reason - why
 * @throws KernelBug always
 */
export function panic(where: string, reason: string): never {
  throw new KernelBug(where, reason);
}
