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

/** How a {@link SharedClock} runs: like `ManualClock`, {@link WarpClock} or `RealClock`. */
export type SharedClockMode = "manual" | "warp" | "real";

/** Bytes of a {@link SharedClock}'s buffer. */
export const SHARED_CLOCK_BYTES = 32;

const MODES: readonly SharedClockMode[] = ["manual", "warp", "real"];
/** Int32 word 0: sequence (odd while the host writes); word 1: mode. */
const W_SEQ = 0;
const W_MODE = 1;
/** Float64 slot 1: manual time, or ns skipped (warp); slot 2: epoch (ms, `timeOrigin`-based); slot 3: floor ns. */
const F_VALUE = 1;
const F_EPOCH = 2;
const F_FLOOR = 3;

const absoluteMs = (): number => performance.timeOrigin + performance.now();

/**
 * A clock both threads of the threaded runtime read: its state lives in a
 * `SharedArrayBuffer`, the host moves it, the guest's `RDTSC` reads it — the TSC both
 * sides agree on. `"manual"` is a `ManualClock` (time moves only when the host sets it,
 * while the guest idles: deterministic); `"warp"` is a {@link WarpClock} (real time plus
 * the idle periods skipped); `"real"` is real time. Real time is `performance.timeOrigin +
 * performance.now()` in each thread (both Node workers and Web Workers have them); the
 * host publishes every warp as a floor the guest never reads below, so a guest woken for a
 * deadline the host warped to always sees that deadline reached, whatever the threads'
 * origins differ by.
 *
 * Only the host writes (one writer); each write is published through a sequence word
 * (a seqlock over `Atomics`), so a reader never sees a torn value.
 */
export class SharedClock implements Clock {
  /** The shared state (send it to the guest's worker and {@link SharedClock.attach} it there). */
  readonly buffer: SharedArrayBuffer;
  /** How it runs. */
  readonly mode: SharedClockMode;
  private readonly words: Int32Array;
  private readonly f64: Float64Array;
  private last = 0;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer, 0, 2);
    this.f64 = new Float64Array(buffer, 0, SHARED_CLOCK_BYTES / 8);
    this.mode = MODES[Atomics.load(this.words, W_MODE)] ?? "manual";
  }

  /**
   * A new clock (host side).
   *
   * @param mode - how it runs
   * @param startNs - the manual clock's first reading (default 1 s, as the in-process default)
   * @returns the clock
   */
  static create(mode: SharedClockMode, startNs = 1_000_000_000): SharedClock {
    const buffer = new SharedArrayBuffer(SHARED_CLOCK_BYTES);
    const f = new Float64Array(buffer);
    f[F_VALUE] = mode === "manual" ? Math.floor(startNs) : 0;
    f[F_EPOCH] = absoluteMs();
    f[F_FLOOR] = 0;
    Atomics.store(new Int32Array(buffer, 0, 2), W_MODE, MODES.indexOf(mode));
    return new SharedClock(buffer);
  }

  /**
   * Views a clock another thread created (guest side: read it, never move it).
   *
   * @param buffer - {@link SharedClock.buffer} of the creator
   * @returns the clock
   * @throws TypeError when `buffer` is not a shared clock's buffer
   */
  static attach(buffer: SharedArrayBuffer): SharedClock {
    if (
      typeof SharedArrayBuffer === "undefined" ||
      !(buffer instanceof SharedArrayBuffer) ||
      buffer.byteLength !== SHARED_CLOCK_BYTES
    ) {
      throw new TypeError("SharedClock.attach needs the SharedArrayBuffer of SharedClock.create()");
    }
    return new SharedClock(buffer);
  }

  private read(slot: number): number {
    const w = this.words;
    const f = this.f64;
    for (;;) {
      const seq = Atomics.load(w, W_SEQ);
      if ((seq & 1) !== 0) continue;
      const v = f[slot]!;
      if (Atomics.load(w, W_SEQ) === seq) return v;
    }
  }

  private write(slot: number, value: number, floor: number): void {
    const w = this.words;
    Atomics.add(w, W_SEQ, 1);
    this.f64[slot] = value;
    this.f64[F_FLOOR] = floor;
    Atomics.add(w, W_SEQ, 1);
  }

  /** @returns the current time, ns (never earlier than a previous reading in this thread) */
  nowNs(): number {
    let t: number;
    if (this.mode === "manual") t = this.read(F_VALUE);
    else {
      const real = Math.floor((absoluteMs() - this.f64[F_EPOCH]!) * 1e6);
      const skipped = this.mode === "warp" ? this.read(F_VALUE) : 0;
      t = Math.max(real + skipped, this.read(F_FLOOR));
    }
    if (t < this.last) return this.last;
    this.last = t;
    return t;
  }

  /**
   * Manual: sets the time, never backwards (`ManualClock.set`). Host side only.
   *
   * @param ns - the new time
   */
  set(ns: number): void {
    if (this.mode !== "manual") return;
    const now = this.read(F_VALUE);
    if (ns > now) this.write(F_VALUE, Math.floor(ns), Math.floor(ns));
  }

  /**
   * Warp: jumps forward to `ns` if that is ahead (`WarpClock.warpTo`); manual: {@link set}.
   * Host side only.
   *
   * @param ns - the time to reach
   */
  warpTo(ns: number): void {
    if (this.mode === "manual") {
      this.set(ns);
      return;
    }
    if (this.mode !== "warp") return;
    const now = this.nowNs();
    if (ns > now) {
      const target = Math.ceil(ns);
      this.write(F_VALUE, this.read(F_VALUE) + (target - now), target);
    }
  }

  /** Nanoseconds skipped so far (warp), 0 otherwise. */
  get skippedNs(): number {
    return this.mode === "warp" ? this.read(F_VALUE) : 0;
  }
}
