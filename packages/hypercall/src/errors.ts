/**
 * The error table of `@pvkit/hypercall`: Xen's errno values (xen/include/public/errno.h;
 * reference §1.3). A hypercall returns `-errno` in RAX; here every hypercall returns a
 * number, `>= 0` on success and `-errno` on failure. Nothing is ever thrown into the caller.
 *
 * @module
 */

/** Xen's errno values (positive; a hypercall returns the negation). */
export const XenErrno = {
  /** Operation not permitted. */
  EPERM: 1,
  /** No such file or directory (e.g. no such vCPU for `vcpu_op`). */
  ENOENT: 2,
  /** No such process (e.g. unknown foreign domain). */
  ESRCH: 3,
  /** Interrupted. */
  EINTR: 4,
  /** I/O error. */
  EIO: 5,
  /** Argument list too long. */
  E2BIG: 7,
  /** Bad file number. */
  EBADF: 9,
  /** Try again. */
  EAGAIN: 11,
  /** Out of memory. */
  ENOMEM: 12,
  /** Permission denied. */
  EACCES: 13,
  /** Bad address (a guest handle that cannot be read or written). */
  EFAULT: 14,
  /** Resource busy (e.g. a frame that could not be referenced for a mapping). */
  EBUSY: 16,
  /** Exists. */
  EEXIST: 17,
  /** No such device. */
  ENODEV: 19,
  /** Invalid argument (the validation failure of the PV MMU). */
  EINVAL: 22,
  /** No space left (e.g. no free event-channel port). */
  ENOSPC: 28,
  /** Result out of range. */
  ERANGE: 34,
  /** Deadlock would occur. */
  EDEADLK: 35,
  /** Function not implemented (unknown hypercall or sub-command). */
  ENOSYS: 38,
  /** No data. */
  ENODATA: 61,
  /** Timer expired. */
  ETIME: 62,
  /** Operation not supported. */
  EOPNOTSUPP: 95,
  /**
   * Internal only, never returned to the guest: the hypercall was preempted and its
   * argument registers rewritten as a continuation (reference §1.4). The port re-enters it.
   */
  ERESTART: 85,
} as const;

/** One of the {@link XenErrno} names. */
export type XenErrnoName = keyof typeof XenErrno;

const NAMES: Map<number, XenErrnoName> = new Map(
  (Object.keys(XenErrno) as XenErrnoName[]).map((k) => [XenErrno[k], k]),
);

/**
 * Names a hypercall result.
 *
 * @param rc - a hypercall return value
 * @returns `"OK"` for `rc >= 0`, the errno name (`"EINVAL"`) for `-errno`, else `"E?<n>"`
 */
export function errnoName(rc: number): string {
  if (rc >= 0) return "OK";
  return NAMES.get(-rc) ?? `E?${-rc}`;
}

/**
 * Whether a hypercall result is an error.
 *
 * @param rc - a hypercall return value
 * @returns true for negative results
 */
export function isHypercallError(rc: number): boolean {
  return rc < 0;
}
