/**
 * Guards every fuzz target shares (issue 17 "Invariants for every target"):
 *
 * - {@link GuardedMemory}: guest RAM inside a larger host buffer with canary bytes before
 *   and after it (a write *outside* guest memory), and canaries over guest RAM outside the
 *   ranges a driver made device-writable (reusing `fillCanary`/`checkCanary` from
 *   `@pvkit/virtio-core/testing`);
 * - {@link noThrow} / {@link noThrowAsync}: no exception reaches the caller;
 * - {@link expectNoBusFaults}: the bus's contained-fault counter (`Bus.stats().handlerFaults`)
 *   stays 0 — a device that threw on a guest access was caught by the bus, which hides the
 *   bug from the guest but not from the fuzzer;
 * - {@link expectServesAfterReset}: reset the device through its transport, bind the real
 *   guest driver again and check the answer of one good request (§2.4: after a reset the
 *   device must be usable by a fresh driver).
 *
 * @module
 */

import { type Bus, GuestMemory } from "@pvkit/platform";
import { VirtioBlkDriver } from "@pvkit/virtio-blk";
import {
  DriverError,
  GuestAllocator,
  unbindVirtioDriver,
  type VirtioDriverTransport,
  VirtioRngDriver,
} from "@pvkit/virtio-core";
import { checkCanary, fillCanary, type MemoryRange } from "@pvkit/virtio-core/testing";
import { VirtioNetDriver } from "@pvkit/virtio-net";
import { FuzzFinding } from "./target.js";

/** The canary pattern (the default of `fillCanary`). */
export const CANARY_BYTE = 0xa5;

// ── exceptions, bus faults, models ───────────────────────────────────────────────

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * Runs `f`; any exception other than a {@link FuzzFinding} becomes the
 * `"escaped-exception"` finding (DESIGN.md: the host never throws into the emulator).
 *
 * @param what - what was being done, for the message
 */
export function noThrow<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof FuzzFinding) throw e;
    throw new FuzzFinding("escaped-exception", `${what} threw ${describe(e)}`);
  }
}

/** {@link noThrow} for an asynchronous step (a rejection counts as an escaped exception). */
export async function noThrowAsync<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof FuzzFinding) throw e;
    throw new FuzzFinding("escaped-exception", `${what} threw ${describe(e)}`);
  }
}

/**
 * Throws the `"contained-fault"` finding when the bus caught a device exception (a
 * handler threw on a guest access; the guest read all-ones, but the device has a bug).
 */
export function expectNoBusFaults(bus: Bus, what: string): void {
  const n = bus.stats().handlerFaults;
  if (n !== 0) {
    throw new FuzzFinding(
      "contained-fault",
      `${what}: the bus caught ${n} device exception(s) (a device threw on a guest access)`,
    );
  }
}

/** Throws the `"model"` finding with `message()` when `ok` is false. */
export function expectModel(ok: boolean, message: () => string): void {
  if (!ok) throw new FuzzFinding("model", message());
}

/** Hex dump of at most `max` bytes, for messages. */
export function hex(b: Uint8Array, max = 32): string {
  const parts: string[] = [];
  for (let i = 0; i < Math.min(b.length, max); i++) parts.push(b[i]!.toString(16).padStart(2, "0"));
  return parts.join("") + (b.length > max ? `…(${b.length} bytes)` : "");
}

/**
 * Throws the `"canary"` finding when a byte of `memory` outside `keep` is no longer
 * `byte` (see `fillCanary`).
 */
export function expectCanary(
  memory: GuestMemory,
  keep: readonly MemoryRange[],
  what: string,
  byte = CANARY_BYTE,
): void {
  const bad = checkCanary(memory, keep, byte, 8);
  if (bad.length > 0) {
    throw new FuzzFinding(
      "canary",
      `${what}: wrote outside the buffers it was given, at ${bad.map((a) => `0x${a.toString(16)}`).join(", ")}`,
    );
  }
}

// ── guest memory with canaries around it ─────────────────────────────────────────

/** Options of {@link GuardedMemory}. */
export interface GuardedMemoryOptions {
  /** Canary bytes before and after guest RAM in the host buffer (default 4096). */
  readonly guard?: number;
  /** Back the buffer with a `SharedArrayBuffer`. */
  readonly shared?: boolean;
  /**
   * Back the buffer with a `WebAssembly.Memory` that {@link GuardedMemory.grow} grows, as
   * v86's own allocator grows v86's RAM while devices have requests in flight (growing
   * detaches every view of the old buffer).
   */
  readonly growable?: boolean;
}

/** Pages (64 KiB) a growable {@link GuardedMemory} may grow by. */
const MAX_GROW_PAGES = 64;

/**
 * Guest RAM (one region at guest-physical 0) placed in the middle of a larger host buffer
 * whose head and tail hold canary bytes: a device that wrote through a view past the end
 * of guest memory (or before its start) changes them, which no check inside guest memory
 * would see. {@link arm} also fills guest RAM outside the ranges the device may write.
 */
export class GuardedMemory {
  /** The guest memory devices and drivers get. */
  readonly memory: GuestMemory;
  /** Bytes of guard on each side. */
  readonly guard: number;
  private keep: readonly MemoryRange[] = [];
  private hostView: Uint8Array;
  private readonly wasm: WebAssembly.Memory | null;

  /**
   * @param size - guest RAM in bytes
   * @param options - guard size and sharing
   */
  constructor(
    readonly size: number,
    options: GuardedMemoryOptions = {},
  ) {
    this.guard = options.guard ?? 4096;
    const total = size + 2 * this.guard;
    let backing: ArrayBuffer | SharedArrayBuffer | WebAssembly.Memory;
    if (options.growable) {
      if (options.shared) throw new Error("a growable GuardedMemory cannot be shared");
      const pages = Math.ceil(total / 65536);
      backing = new WebAssembly.Memory({ initial: pages, maximum: pages + MAX_GROW_PAGES });
    } else backing = options.shared ? new SharedArrayBuffer(total) : new ArrayBuffer(total);
    this.wasm = backing instanceof WebAssembly.Memory ? backing : null;
    this.hostView = new Uint8Array(this.wasm?.buffer ?? (backing as ArrayBuffer), 0, total);
    this.memory = new GuestMemory([{ base: 0, size, backing, backingOffset: this.guard }]);
    this.host.fill(CANARY_BYTE, 0, this.guard);
    this.host.fill(CANARY_BYTE, this.guard + size);
  }

  /** The whole host buffer: guard, guest RAM, guard (a fresh view after a {@link grow}). */
  get host(): Uint8Array {
    if (this.wasm !== null && this.hostView.length === 0)
      this.hostView = new Uint8Array(this.wasm.buffer, 0, this.size + 2 * this.guard);
    return this.hostView;
  }

  /**
   * Grows a growable memory by one page, detaching every view of its buffer (guest RAM
   * and the guards keep their place and contents). False when the memory is not growable
   * or may not grow further.
   */
  grow(): boolean {
    if (this.wasm === null) return false;
    try {
      this.wasm.grow(1);
      return true;
    } catch {
      return false; // RangeError: at the maximum
    }
  }

  /**
   * Fills guest RAM outside `keep` with canaries and remembers `keep` for {@link check}.
   * `keep` lists what the device may legitimately write: rings, device-writable buffers.
   */
  arm(keep: readonly MemoryRange[]): void {
    this.keep = keep;
    fillCanary(this.memory, keep, CANARY_BYTE);
  }

  /** Guard bytes that changed (host-buffer offsets relative to guest address 0). */
  outsideWrites(limit = 8): number[] {
    const bad: number[] = [];
    const h = this.host;
    for (let i = 0; i < this.guard && bad.length < limit; i++)
      if (h[i] !== CANARY_BYTE) bad.push(i - this.guard);
    for (let i = this.guard + this.size; i < h.length && bad.length < limit; i++)
      if (h[i] !== CANARY_BYTE) bad.push(i - this.guard);
    return bad;
  }

  /**
   * Throws the `"canary"` finding when anything outside guest memory, or inside guest
   * memory outside the armed `keep` ranges, changed. The guard bytes are restored after a
   * finding so the next case starts clean.
   *
   * @param also - more ranges to leave out of the canary check (e.g. device-readable
   *   buffers the driver filled after {@link arm}; check those separately)
   */
  check(what: string, also: readonly MemoryRange[] = []): void {
    this.checkOutside(what);
    expectCanary(this.memory, also.length === 0 ? this.keep : [...this.keep, ...also], what);
  }

  /**
   * Throws the `"canary"` finding when anything outside guest memory changed (the guard
   * bytes are restored first); guest RAM is not checked.
   */
  checkOutside(what: string): void {
    const outside = this.outsideWrites();
    if (outside.length > 0) {
      this.host.fill(CANARY_BYTE, 0, this.guard);
      this.host.fill(CANARY_BYTE, this.guard + this.size);
      throw new FuzzFinding(
        "canary",
        `${what}: wrote outside guest memory, at guest offsets ${outside.join(", ")}`,
      );
    }
  }
}

// ── serves after reset ───────────────────────────────────────────────────────────

/** Which real driver {@link expectServesAfterReset} binds, and what it expects back. */
export type ServeProbe =
  | {
      /** virtio-blk: read `expected.length` bytes at sector `sector`. */
      readonly kind: "blk";
      readonly sector: number;
      readonly expected: Uint8Array;
    }
  | {
      /** virtio-rng: read `bytes` bytes (the answer must have that length). */
      readonly kind: "rng";
      readonly bytes: number;
    }
  | {
      /** virtio-net over a loopback back-end: send one broadcast frame, receive it back. */
      readonly kind: "net";
    };

/** Where {@link expectServesAfterReset} may put the fresh driver's rings and buffers. */
export interface ServeRig {
  readonly transport: VirtioDriverTransport;
  readonly memory: GuestMemory;
  /** Scratch guest RAM for the driver's allocator (rings, headers, bounce buffers). */
  readonly scratch: MemoryRange;
}

/** Yields to the event loop once (lets asynchronous back-ends complete). */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Polls `poll` between event-loop turns until `done()` or `turns` turns passed.
 *
 * @returns whether `done()` became true
 */
export async function pollUntil(
  done: () => boolean,
  poll: () => void,
  turns = 200,
): Promise<boolean> {
  for (let i = 0; i < turns && !done(); i++) {
    poll();
    if (done()) break;
    await tick();
  }
  return done();
}

/**
 * The "device serves again after reset" invariant (§2.4, §3.1.1): resets the device
 * through `rig.transport`, binds the real guest driver (full negotiation, fresh rings in
 * `rig.scratch`), runs one good request and checks its answer; then resets again and
 * releases the binding so the target can drive the device raw. Throws the
 * `"serve-after-reset"` finding when the driver cannot bind or the answer is wrong or
 * missing.
 *
 * @param what - the context for the message (target, transport)
 */
export async function expectServesAfterReset(
  rig: ServeRig,
  probe: ServeProbe,
  what: string,
): Promise<void> {
  const fail = (msg: string): never => {
    throw new FuzzFinding("serve-after-reset", `${what}: ${msg}`);
  };
  const { transport, memory } = rig;
  noThrow(`${what}: reset`, () => transport.reset());
  unbindVirtioDriver(transport);
  const allocator = new GuestAllocator(rig.scratch.addr, rig.scratch.len);
  const options = { memory, allocator, queueSize: 8 };
  try {
    if (probe.kind === "blk") {
      const drv = noThrow(`${what}: VirtioBlkDriver.create`, () =>
        VirtioBlkDriver.create(transport, options),
      );
      if (drv instanceof DriverError) return fail(`the blk driver could not bind: ${drv.message}`);
      let got: Uint8Array | Error | null = null;
      drv.read(probe.sector, probe.expected.length).then(
        (b) => {
          got = b;
        },
        (e: unknown) => {
          got = e instanceof Error ? e : new Error(String(e));
        },
      );
      await pollUntil(
        () => got !== null,
        () => drv.poll(),
      );
      if (got === null) return fail("a read after reset never completed");
      const answer = got as Uint8Array | Error;
      if (answer instanceof Error) return fail(`a read after reset failed: ${answer.message}`);
      if (!sameBytes(answer, probe.expected))
        return fail(`read back ${hex(answer)}, expected ${hex(probe.expected)}`);
    } else if (probe.kind === "rng") {
      const drv = noThrow(`${what}: VirtioRngDriver.create`, () =>
        VirtioRngDriver.create(transport, options),
      );
      if (drv instanceof DriverError) return fail(`the rng driver could not bind: ${drv.message}`);
      let got: Uint8Array | Error | null = null;
      drv.read(probe.bytes).then(
        (b) => {
          got = b;
        },
        (e: unknown) => {
          got = e instanceof Error ? e : new Error(String(e));
        },
      );
      await pollUntil(
        () => got !== null,
        () => drv.onInterrupt(),
      );
      if (got === null) return fail("an entropy read after reset never completed");
      const answer = got as Uint8Array | Error;
      if (answer instanceof Error)
        return fail(`an entropy read after reset failed: ${answer.message}`);
      if (answer.length !== probe.bytes)
        return fail(`got ${answer.length} bytes of entropy, asked for ${probe.bytes}`);
    } else {
      const frames: Uint8Array[] = [];
      const drv = noThrow(`${what}: VirtioNetDriver.create`, () =>
        VirtioNetDriver.create(transport, {
          ...options,
          schedule: () => {},
          onFrame: (f: Uint8Array) => {
            frames.push(f.slice());
          },
        }),
      );
      if (drv instanceof DriverError) return fail(`the net driver could not bind: ${drv.message}`);
      const frame = new Uint8Array(60);
      frame.fill(0xff, 0, 6); // broadcast: accepted by every RX filter state (§5.1.6.5.1)
      frame.set([0x02, 0, 0, 0, 0, 0x42], 6);
      frame[12] = 0x88;
      frame[13] = 0xb5; // local experimental ethertype
      for (let i = 14; i < 60; i++) frame[i] = i;
      if (!drv.enqueue(frame)) return fail("the net driver could not queue a frame after reset");
      drv.commit();
      await pollUntil(
        () => frames.length > 0,
        () => {
          drv.poll();
        },
      );
      if (frames.length === 0) return fail("a looped-back frame after reset never arrived");
      if (!sameBytes(frames[0]!, frame))
        return fail(`received ${hex(frames[0]!)}, sent ${hex(frame)}`);
    }
  } finally {
    noThrow(`${what}: reset after the serve check`, () => transport.reset());
    unbindVirtioDriver(transport);
  }
}

/** Byte equality. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
