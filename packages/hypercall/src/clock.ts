/**
 * Time for the hypervisor and the guest: an injectable {@link Clock}, a TSC derived from it,
 * and pvclock — the `vcpu_time_info` record Xen (and KVM) keep in shared memory with an
 * odd/even version protocol (xen.h; xen/arch/x86/time.c `__update_vcpu_system_time`;
 * reference §4.1–4.2). Reading the clock needs no exit: that is the point of pvclock.
 *
 * All arithmetic is exact integer arithmetic on doubles (no BigInt on the read path).
 *
 * @module
 */

import { HOST_LITTLE_ENDIAN } from "@pvkit/platform";
import { VcpuTimeInfoLayout, XEN_PVCLOCK_TSC_STABLE_BIT } from "./abi.js";

/** A source of time in nanoseconds (monotonic, integer). */
export interface Clock {
  /** Nanoseconds since the clock's epoch (Xen's "system time", ns since boot). */
  nowNs(): number;
}

/** A clock that moves only when told to: for deterministic tests and simulations. */
export class ManualClock implements Clock {
  private ns: number;

  /** @param startNs - initial time (default 0) */
  constructor(startNs = 0) {
    this.ns = startNs;
  }

  /** @returns the current time */
  nowNs(): number {
    return this.ns;
  }

  /**
   * Moves the clock forward.
   *
   * @param deltaNs - nanoseconds (negative values are ignored: the clock is monotonic)
   */
  advance(deltaNs: number): void {
    if (deltaNs > 0) this.ns += Math.floor(deltaNs);
  }

  /**
   * Sets the clock, never backwards.
   *
   * @param ns - the new time; ignored when it is earlier than now
   */
  set(ns: number): void {
    if (ns > this.ns) this.ns = Math.floor(ns);
  }
}

/** The host's monotonic clock (`performance.now()`), in ns since construction. */
export class RealClock implements Clock {
  private readonly base = performance.now();

  /** @returns nanoseconds since this clock was created */
  nowNs(): number {
    return Math.floor((performance.now() - this.base) * 1e6);
  }
}

/**
 * Converts a time to TSC ticks exactly.
 *
 * @param ns - nanoseconds (a non-negative safe integer)
 * @param tscKhz - TSC frequency in kHz (an integer)
 * @returns `floor(ns * tscKhz / 10^6)`
 */
export function nsToTsc(ns: number, tscKhz: number): number {
  const ms = Math.floor(ns / 1_000_000);
  const rem = ns - ms * 1_000_000;
  return ms * tscKhz + Math.floor((rem * tscKhz) / 1_000_000);
}

/** The scale that turns TSC deltas into nanoseconds: `((delta << shift) * mul) >> 32`. */
export interface PvClockScale {
  /** `tsc_to_system_mul`, in [2^31, 2^32). */
  readonly mul: number;
  /** `tsc_shift` (signed; negative means a right shift). */
  readonly shift: number;
}

/**
 * Computes `tsc_to_system_mul` and `tsc_shift` for a TSC frequency, the way Xen's
 * `set_time_scale` does (normalise the rate into (10^9, 2·10^9] by shifting, then take the
 * 32-bit fraction 10^9 / rate).
 *
 * @param tscHz - ticks per second (≥ 1)
 * @returns the scale
 */
export function pvclockScale(tscHz: number): PvClockScale {
  let rate = Math.max(1, Math.floor(tscHz));
  let shift = 0;
  while (rate > 2_000_000_000) {
    rate = Math.floor(rate / 2);
    shift--;
  }
  while (rate <= 1_000_000_000) {
    rate *= 2;
    shift++;
  }
  const mul = Math.min(0xffff_ffff, Math.floor((1_000_000_000 * 2 ** 32) / rate));
  return { mul, shift };
}

/**
 * `((delta << shift) * mul) >> 32` computed exactly for `delta < 2^53` (pvclock.h
 * `pvclock_scale_delta`).
 *
 * @param delta - TSC ticks since `tsc_timestamp` (non-negative)
 * @param mul - `tsc_to_system_mul`
 * @param shift - `tsc_shift`
 * @returns nanoseconds
 */
export function pvclockScaleDelta(delta: number, mul: number, shift: number): number {
  if (delta <= 0) return 0;
  let d = shift >= 0 ? delta * 2 ** shift : Math.floor(delta / 2 ** -shift);
  if (d > Number.MAX_SAFE_INTEGER) d = Number.MAX_SAFE_INTEGER;
  const dhi = Math.floor(d / 2 ** 32);
  const dlo = d - dhi * 2 ** 32;
  const mulHi = mul >>> 16;
  const mulLo = mul & 0xffff;
  const a = dlo * mulHi;
  const b = dlo * mulLo;
  const aHi = Math.floor(a / 65536);
  const aLo = a - aHi * 65536;
  return dhi * mul + aHi + Math.floor((aLo * 65536 + b) / 2 ** 32);
}

/**
 * Word (u32) view of guest memory used for pvclock: the record is read and written only with
 * `Atomics` on aligned 32-bit words, so a reader in one thread and a writer in another never
 * see a value the version check cannot catch.
 */
function wordIndex(byteOffset: number): number {
  if (byteOffset % 4 !== 0) throw new Error("vcpu_time_info must be 4-byte aligned");
  return byteOffset / 4;
}

const W_VERSION = VcpuTimeInfoLayout.version / 4;
const W_TSC_LO = VcpuTimeInfoLayout.tsc_timestamp / 4;
const W_SYS_LO = VcpuTimeInfoLayout.system_time / 4;
const W_MUL = VcpuTimeInfoLayout.tsc_to_system_mul / 4;
const W_SHIFT_FLAGS = VcpuTimeInfoLayout.tsc_shift / 4;

function assertLittleEndianHost(): void {
  // Atomics operate in host byte order; the guest ABI is little-endian.
  if (!HOST_LITTLE_ENDIAN) throw new Error("pvclock word access needs a little-endian host");
}

/**
 * The hypervisor side of pvclock: publishes `vcpu_time_info` with Xen's protocol —
 * `version = (version + 1) | 1` (odd), fields, `version += 1` (even).
 */
export class PvClockWriter {
  private readonly w: Int32Array;
  private readonly base: number;

  /**
   * @param words - an `Int32Array` over the buffer that holds guest memory
   * @param byteOffset - byte offset of the `vcpu_time_info` inside that array's buffer view
   */
  constructor(words: Int32Array, byteOffset: number) {
    assertLittleEndianHost();
    this.w = words;
    this.base = wordIndex(byteOffset);
  }

  /**
   * Publishes a new record.
   *
   * @param tscTimestamp - TSC at `systemTime`
   * @param systemTime - ns since boot
   * @param scale - TSC→ns scale
   * @param flags - `XEN_PVCLOCK_*` flags
   */
  publish(tscTimestamp: number, systemTime: number, scale: PvClockScale, flags: number): void {
    const w = this.w;
    const b = this.base;
    const v = Atomics.load(w, b + W_VERSION);
    Atomics.store(w, b + W_VERSION, (v + 1) | 1);
    storeU64(w, b + W_TSC_LO, tscTimestamp);
    storeU64(w, b + W_SYS_LO, systemTime);
    Atomics.store(w, b + W_MUL, scale.mul | 0);
    Atomics.store(w, b + W_SHIFT_FLAGS, (scale.shift & 0xff) | ((flags & 0xff) << 8));
    Atomics.store(w, b + W_VERSION, (((v + 1) | 1) + 1) | 0);
  }

  /** The current version word (odd while an update is in progress). */
  get version(): number {
    return Atomics.load(this.w, this.base + W_VERSION) >>> 0;
  }
}

function storeU64(w: Int32Array, i: number, value: number): void {
  const hi = Math.floor(value / 2 ** 32);
  Atomics.store(w, i, (value - hi * 2 ** 32) | 0);
  Atomics.store(w, i + 1, hi | 0);
}

/** Result of a pvclock read that can fail. */
export const PVCLOCK_GAVE_UP = -1;

/**
 * The guest side of pvclock: reads `vcpu_time_info` Linux-seqlock style (read an even
 * version, read the fields, re-read the version, retry if it changed) and computes
 * `system_time + scale(tsc - tsc_timestamp)`. Zero exits per read.
 */
export class PvClockReader {
  private readonly w: Int32Array;
  private readonly base: number;
  /** Reads that had to retry because the writer was mid-update. */
  retries = 0;
  /** Flags seen by the last successful read. */
  lastFlags = 0;

  /**
   * @param words - an `Int32Array` over guest memory
   * @param byteOffset - byte offset of the `vcpu_time_info`
   * @param tsc - the guest's RDTSC (no exit in PV)
   * @param maxRetries - bound on retries before {@link read} gives up (never loops forever)
   */
  constructor(
    words: Int32Array,
    byteOffset: number,
    private readonly tsc: () => number,
    private readonly maxRetries = 1_000_000,
  ) {
    assertLittleEndianHost();
    this.w = words;
    this.base = wordIndex(byteOffset);
  }

  /**
   * Reads the clock.
   *
   * @returns ns since boot, or {@link PVCLOCK_GAVE_UP} when the version never settled
   */
  read(): number {
    const w = this.w;
    const b = this.base;
    for (let attempt = 0; attempt <= this.maxRetries; attempt++) {
      const v1 = Atomics.load(w, b + W_VERSION);
      if ((v1 & 1) !== 0) {
        this.retries++;
        continue;
      }
      const tsLo = Atomics.load(w, b + W_TSC_LO) >>> 0;
      const tsHi = Atomics.load(w, b + W_TSC_LO + 1) >>> 0;
      const sysLo = Atomics.load(w, b + W_SYS_LO) >>> 0;
      const sysHi = Atomics.load(w, b + W_SYS_LO + 1) >>> 0;
      const mul = Atomics.load(w, b + W_MUL) >>> 0;
      const sf = Atomics.load(w, b + W_SHIFT_FLAGS);
      const tscNow = this.tsc();
      if (Atomics.load(w, b + W_VERSION) !== v1) {
        this.retries++;
        continue;
      }
      const shift = (sf << 24) >> 24;
      this.lastFlags = (sf >>> 8) & 0xff;
      const tscTimestamp = tsHi * 2 ** 32 + tsLo;
      const systemTime = sysHi * 2 ** 32 + sysLo;
      return systemTime + pvclockScaleDelta(tscNow - tscTimestamp, mul, shift);
    }
    return PVCLOCK_GAVE_UP;
  }

  /** Whether the last read saw `XEN_PVCLOCK_TSC_STABLE_BIT`. */
  get tscStable(): boolean {
    return (this.lastFlags & XEN_PVCLOCK_TSC_STABLE_BIT) !== 0;
  }
}
