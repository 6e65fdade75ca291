/**
 * The error table of `@pvkit/platform`. Errors are values, never exceptions thrown into
 * an emulator: a function that can fail returns a {@link PlatformError} instead of its
 * result.
 *
 * @module
 */

/** Every error code `@pvkit/platform` returns, with what the guest (or caller) did. */
export const PlatformErrorCode = {
  /** The address is negative, not an integer, or at or above 2^53 (guest addresses are 64-bit). */
  BAD_ADDRESS: "BAD_ADDRESS",
  /** The range falls (partly) in a hole between regions or past the end of guest memory. */
  OUT_OF_RANGE: "OUT_OF_RANGE",
  /** The length is negative, not an integer, or makes `address + length` overflow 2^53. */
  BAD_LENGTH: "BAD_LENGTH",
} as const;

/** One of the {@link PlatformErrorCode} values. */
export type PlatformErrorCode = (typeof PlatformErrorCode)[keyof typeof PlatformErrorCode];

/**
 * A failed guest-memory access, returned as a value. `address` and `length` are the
 * range the caller asked for, so the message says exactly what the guest pointed at.
 */
export class PlatformError {
  /** Discriminant, so callers can tell an error from a result with `instanceof` or this tag. */
  readonly kind = "platform-error" as const;

  /**
   * @param code - what went wrong, from {@link PlatformErrorCode}
   * @param address - the guest-physical address asked for
   * @param length - the number of bytes asked for
   */
  constructor(
    readonly code: PlatformErrorCode,
    readonly address: number,
    readonly length: number,
  ) {}

  /** A human-readable description of the faulting access. */
  get message(): string {
    const where = `[0x${this.address.toString(16)}, +${this.length})`;
    switch (this.code) {
      case PlatformErrorCode.BAD_ADDRESS:
        return `guest address ${this.address} is not a valid 64-bit guest-physical address below 2^53`;
      case PlatformErrorCode.BAD_LENGTH:
        return `access length ${this.length} at 0x${this.address.toString(16)} is invalid or overflows`;
      default:
        return `guest memory access ${where} is outside guest RAM (hole or past the end)`;
    }
  }
}

/**
 * Type guard for results that may be a {@link PlatformError}.
 *
 * @param value - a result returned by a `GuestMemory` method
 * @returns whether it is an error value
 */
export function isPlatformError(value: unknown): value is PlatformError {
  return value instanceof PlatformError;
}
