/**
 * The error table of `@pvkit/guest-kernel-pv`. Host-side misuse (an unknown configuration,
 * a workload that needs a device the configuration lacks) and guest failures (a kernel
 * panic, a runaway guest stopped by its budget, a guest idle forever) are
 * {@link GuestKernelError}s with a code from {@link GuestKernelErrorCode} and a message
 * that says what happened. A guest process that faults is not an error of the host: the
 * kernel kills it with a signal status ({@link SIGSEGV_STATUS}) and carries on.
 *
 * @module
 */

/** Error codes. */
export const GuestKernelErrorCode = {
  /** A configuration name that is not a preset. */
  UNKNOWN_CONFIG: "UNKNOWN_CONFIG",
  /** A configuration object with a field out of range, or an impossible combination. */
  BAD_CONFIG: "BAD_CONFIG",
  /** A workload name the kernel does not know. */
  UNKNOWN_WORKLOAD: "UNKNOWN_WORKLOAD",
  /** Workload parameters out of range. */
  BAD_PARAMS: "BAD_PARAMS",
  /** The workload needs a device (NIC, disk) the configuration does not have. */
  MISSING_DEVICE: "MISSING_DEVICE",
  /** The guest kernel hit a state it cannot handle and stopped (Linux `panic()`/`BUG()`). */
  GUEST_PANIC: "GUEST_PANIC",
  /** The guest used up its budget of exits or steps (a runaway guest, stopped). */
  BUDGET_EXCEEDED: "BUDGET_EXCEEDED",
  /** The guest idled with no timer armed and no device activity: it would sleep forever. */
  GUEST_DEADLOCK: "GUEST_DEADLOCK",
  /** `run` was called while another workload was running, or after the guest stopped. */
  BUSY: "BUSY",
  /**
   * Threaded runtime: the guest ran without an exit or a heartbeat for the watchdog's
   * `stallMs` (a spinning guest); its worker was terminated.
   */
  GUEST_STALLED: "GUEST_STALLED",
  /** Threaded runtime: the guest's worker ended without saying why (it crashed or was terminated). */
  GUEST_DIED: "GUEST_DIED",
} as const;

/** One of the {@link GuestKernelErrorCode} values. */
export type GuestKernelErrorCode = (typeof GuestKernelErrorCode)[keyof typeof GuestKernelErrorCode];

/** An error of the guest kernel package. */
export class GuestKernelError extends Error {
  /**
   * @param code - what kind of error
   * @param message - what happened
   */
  constructor(
    readonly code: GuestKernelErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "GuestKernelError";
  }
}

/** Where a guest stopped: the kernel function, the process, and the last exit it made. */
export interface GuestLocation {
  /** Kernel function (e.g. `"mm/pv-mmu: flush"`). */
  readonly function: string;
  /** Process running (0 = the kernel itself, no process). */
  readonly pid: number;
  /** Name of the last exit op made (`"hypercall"`, `"pte_write"`, …), or `"none"`. */
  readonly lastExit: string;
  /** Exits made since boot. */
  readonly exits: number;
}

/**
 * A guest kernel panic (Linux `panic()`, or `BUG()` on a failed multicall in Xen PV
 * `xen_mc_flush`): the kernel stopped at {@link where}. The host keeps running.
 */
export class GuestPanic extends GuestKernelError {
  /**
   * @param reason - why the kernel stopped
   * @param where - where it stopped
   */
  constructor(
    readonly reason: string,
    readonly where: GuestLocation,
  ) {
    super(
      GuestKernelErrorCode.GUEST_PANIC,
      `guest kernel panic in ${where.function} (pid ${where.pid}, last exit ${where.lastExit}, ${where.exits} exits): ${reason}`,
    );
    this.name = "GuestPanic";
  }
}

/** A runaway guest stopped because it used up its budget of exits or steps. */
export class GuestBudgetExceeded extends GuestKernelError {
  /**
   * @param kind - which budget
   * @param limit - its size
   * @param where - where the guest was
   */
  constructor(
    readonly kind: "exits" | "steps",
    readonly limit: number,
    readonly where: GuestLocation,
  ) {
    super(
      GuestKernelErrorCode.BUDGET_EXCEEDED,
      `guest stopped after ${limit} ${kind} (its budget): pid ${where.pid} in ${where.function}, last exit ${where.lastExit}`,
    );
    this.name = "GuestBudgetExceeded";
  }
}

/** Exit status of a process killed by a page fault it could not resolve (128 + SIGSEGV 11). */
export const SIGSEGV_STATUS = 139;
/** Exit status of a process whose program threw (128 + SIGABRT 6). */
export const SIGABRT_STATUS = 134;
