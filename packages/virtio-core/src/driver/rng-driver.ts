/**
 * `VirtioRngDriver`: the guest side of the entropy device (§5.4, device id 4). It posts
 * device-writable buffers on requestq (§5.4.6: never device-readable ones), keeps many of
 * them in flight, and completes `read(n)` promises from its interrupt handler.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import {
  featureMask,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_INT_CONFIG,
  VIRTIO_INT_VRING,
  VirtioDeviceId,
} from "../spec.js";
import type { GuestAllocator } from "./allocator.js";
import { bindVirtioDriver, checkVirtioUnbound, unbindVirtioDriver } from "./binding.js";
import { checkDriverArguments } from "./check.js";
import type { DriverVirtqueue } from "./driver-virtqueue.js";
import { initVirtioDevice } from "./init.js";
import type { VirtioDriverTransport } from "./transport.js";

/** One posted buffer: part of a `read(n)`. Opaque to users; it is the queue's token type. */
export interface RngToken {
  /** @internal */
  readonly request: RngRequest;
  /** @internal offset of this part inside the request's result */
  readonly offset: number;
  /** @internal bytes this part must deliver */
  readonly length: number;
  /** @internal guest buffer (allocated on first post) */
  addr: number;
  /** @internal bytes received so far */
  got: number;
  /** @internal zero-length completions in a row */
  empty: number;
}

/** @internal one `read(n)` */
interface RngRequest {
  readonly out: Uint8Array;
  remaining: number;
  done: boolean;
  readonly resolve: (bytes: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

/** Options of {@link VirtioRngDriver}. */
export interface VirtioRngDriverOptions {
  /** The transport the device sits behind. */
  readonly transport: VirtioDriverTransport;
  /** requestq, set up by {@link initVirtioDevice}. */
  readonly queue: DriverVirtqueue<RngToken>;
  /** Guest memory (buffers are copied out of it on completion). */
  readonly memory: GuestMemory;
  /** Where the driver allocates its DMA buffers. */
  readonly allocator: GuestAllocator;
  /** Largest buffer posted per descriptor; bigger reads are split (default 4096). */
  readonly chunkSize?: number;
}

/** Options of {@link VirtioRngDriver.create}. */
export interface VirtioRngCreateOptions {
  /** Guest memory. */
  readonly memory: GuestMemory;
  /** The guest allocator for rings and buffers. */
  readonly allocator: GuestAllocator;
  /** requestq size wanted (0 or absent: the device's maximum). */
  readonly queueSize?: number;
  /** Features to ask for (default VERSION_1 | EVENT_IDX | INDIRECT_DESC). */
  readonly features?: bigint;
  /** See {@link VirtioRngDriverOptions.chunkSize}. */
  readonly chunkSize?: number;
}

/** Counters of {@link VirtioRngDriver}. */
export interface VirtioRngDriverStats {
  /** Random bytes delivered to callers. */
  bytes: number;
  /** Buffers completed by the device. */
  completions: number;
  /** Interrupts handled that had a status bit set. */
  interrupts: number;
  /** Interrupts with a zero status (shared line, or already handled). */
  spurious: number;
  /** Notifications sent to the device. */
  kicks: number;
}

const MAX_EMPTY = 3;

/**
 * The virtio-rng front-end.
 *
 * @example
 * ```ts
 * const t = VirtioMmioDriverTransport.probe(bus, base) as VirtioMmioDriverTransport;
 * const rng = VirtioRngDriver.create(t, { memory, allocator });
 * if (rng instanceof DriverError) throw new Error(rng.message);
 * irq.onChange((high) => high && rng.onInterrupt());
 * const bytes = await rng.read(32);
 * ```
 */
export class VirtioRngDriver {
  /** Counters. */
  readonly stats: VirtioRngDriverStats = {
    bytes: 0,
    completions: 0,
    interrupts: 0,
    spurious: 0,
    kicks: 0,
  };
  /** Why the driver stopped (device reset needed, broken ring), or `null`. */
  failure: DriverError | null = null;

  private readonly transport: VirtioDriverTransport;
  private readonly queue: DriverVirtqueue<RngToken>;
  private readonly memory: GuestMemory;
  private readonly allocator: GuestAllocator;
  private readonly chunk: number;
  private waiting: RngToken[] = [];
  private waitHead = 0;
  private readonly pending = new Set<RngRequest>();
  private inInterrupt = false;
  private again = false;
  private readonly complete = (token: RngToken, len: number): void => this.completed(token, len);

  constructor(options: VirtioRngDriverOptions) {
    this.transport = options.transport;
    this.queue = options.queue;
    this.memory = options.memory;
    this.allocator = options.allocator;
    const c = options.chunkSize ?? 4096;
    this.chunk = Number.isInteger(c) && c > 0 ? c : 4096;
  }

  /**
   * Initialises the device behind `transport` (§3.1.1) and returns a driver for it.
   *
   * @returns the driver, or why it could not be set up (wrong device id, feature or
   *   queue failure, or `ALREADY_BOUND` when another driver drives the device and it was
   *   not reset since)
   * @throws TypeError when `transport` is not a driver-side transport (e.g. the
   *   device-side `VirtioMmioTransport`, or a `DriverError` from `probe`) or `options`
   *   lacks `memory` / `allocator`
   */
  static create(
    transport: VirtioDriverTransport,
    options: VirtioRngCreateOptions,
  ): VirtioRngDriver | DriverError {
    checkDriverArguments("VirtioRngDriver.create", transport, options);
    if (transport.deviceId !== VirtioDeviceId.ENTROPY) {
      return new DriverError(
        VirtioErrorCode.WRONG_DEVICE,
        `device id ${transport.deviceId} is not an entropy device (4, §5.4)`,
      );
    }
    const busy = checkVirtioUnbound(transport);
    if (busy !== undefined) return busy;
    const wanted =
      options.features ??
      featureMask(
        VIRTIO_F_VERSION_1,
        VIRTIO_F_EVENT_IDX,
        VIRTIO_F_INDIRECT_DESC,
        VIRTIO_F_RING_PACKED, // §2.8: packed rings when the device offers them
      );
    const dev = initVirtioDevice<RngToken>(transport, {
      wanted,
      memory: options.memory,
      allocator: options.allocator,
      queueSizes: [options.queueSize ?? 0],
    });
    if (dev instanceof DriverError) return dev;
    const taken = bindVirtioDriver(transport, "VirtioRngDriver");
    if (taken !== undefined) return taken;
    return new VirtioRngDriver({
      transport,
      queue: dev.queues[0]!,
      memory: options.memory,
      allocator: options.allocator,
      ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }),
    });
  }

  /** Buffers posted and not yet returned. */
  get inFlight(): number {
    return this.queue.inFlight;
  }

  /** Parts waiting for a free descriptor or guest memory. */
  get backlog(): number {
    return this.waiting.length - this.waitHead;
  }

  /**
   * Reads `n` random bytes. The request is split into buffers of at most `chunkSize`
   * bytes, all posted at once (as far as the ring and the allocator allow); the rest are
   * posted as completions free room.
   *
   * @returns the bytes; rejects (with an `Error` whose `cause` is a {@link DriverError})
   *   when the device breaks, needs a reset, or keeps returning nothing
   */
  read(n: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(n) || n < 0)
      return Promise.reject(new RangeError(`cannot read ${n} bytes`));
    if (this.failure !== null) return Promise.reject(asError(this.failure));
    if (n === 0) return Promise.resolve(new Uint8Array(0));
    return new Promise<Uint8Array>((resolve, reject) => {
      const request: RngRequest = {
        out: new Uint8Array(n),
        remaining: n,
        done: false,
        resolve,
        reject,
      };
      this.pending.add(request);
      for (let off = 0; off < n; off += this.chunk) {
        this.waiting.push({
          request,
          offset: off,
          length: Math.min(this.chunk, n - off),
          addr: -1,
          got: 0,
          empty: 0,
        });
      }
      this.pump();
    });
  }

  /** Posts waiting parts while there is room, then notifies the device if it wants it. */
  private pump(): void {
    const q = this.queue;
    while (this.waitHead < this.waiting.length && this.failure === null) {
      const t = this.waiting[this.waitHead]!;
      if (t.request.done) {
        this.releaseBuffer(t);
        this.waitHead++;
        continue;
      }
      if (t.addr < 0) {
        t.addr = this.allocator.alloc(t.length, 8);
        if (t.addr < 0) {
          if (q.inFlight === 0) {
            this.failRequest(
              t.request,
              new DriverError(
                VirtioErrorCode.OUT_OF_MEMORY,
                `no guest memory for a ${t.length}-byte entropy buffer`,
              ),
            );
            this.waitHead++;
            continue;
          }
          break; // completions will free memory
        }
      }
      const r = q.add([], [{ addr: t.addr + t.got, len: t.length - t.got }], t);
      if (r instanceof DriverError) {
        if (r.code === VirtioErrorCode.NO_SPACE) break;
        this.fail(r);
        break;
      }
      this.waitHead++;
    }
    if (this.waitHead === this.waiting.length) {
      this.waiting = [];
      this.waitHead = 0;
    } else if (this.waitHead > 1024 && this.waitHead * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.waitHead);
      this.waitHead = 0;
    }
    if (q.kick()) this.stats.kicks++;
  }

  /**
   * The interrupt handler: call it when the device's IRQ line rises. Reads and
   * acknowledges the interrupt status (§4.2.3.4), drains completed buffers, re-enables
   * callbacks (closing the race with a device that completes meanwhile), posts waiting
   * parts. Re-entrant calls (a completion that kicks the device, which interrupts again
   * at once) are folded into the running handler.
   *
   * @returns whether the interrupt was this device's (a status bit was set)
   */
  onInterrupt(): boolean {
    if (this.inInterrupt) {
      this.again = true;
      return true;
    }
    this.inInterrupt = true;
    let ours = false;
    try {
      do {
        this.again = false;
        const isr = this.transport.ackInterrupt();
        if ((isr & (VIRTIO_INT_VRING | VIRTIO_INT_CONFIG)) === 0) {
          if (!ours) this.stats.spurious++;
          continue;
        }
        ours = true;
        this.stats.interrupts++;
        if (isr & VIRTIO_INT_CONFIG && this.transport.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) {
          this.fail(
            new DriverError(
              VirtioErrorCode.DEVICE_NEEDS_RESET,
              "the entropy device set DEVICE_NEEDS_RESET (§2.1.2)",
            ),
          );
          break;
        }
        this.drain();
        this.pump();
      } while (this.again);
    } finally {
      this.inInterrupt = false;
    }
    return ours;
  }

  /** Takes every completion (Linux's disable-drain-enable loop, bounded by rounds). */
  private drain(): void {
    const q = this.queue;
    for (let round = 0; round < 64; round++) {
      q.drainUsed(this.complete, q.size);
      if (q.broken) {
        this.fail(q.error!);
        return;
      }
      if (q.enableCallbacks()) return;
    }
  }

  private completed(t: RngToken, len: number): void {
    this.stats.completions++;
    const req = t.request;
    if (req.done) {
      this.releaseBuffer(t);
      return;
    }
    if (len > 0) {
      const dst = req.out.subarray(t.offset + t.got, t.offset + t.got + len);
      this.memory.read(t.addr + t.got, dst);
      t.got += len;
      t.empty = 0;
      req.remaining -= len;
      this.stats.bytes += len;
    } else if (++t.empty >= MAX_EMPTY) {
      this.failRequest(
        req,
        new DriverError(
          VirtioErrorCode.QUEUE_BROKEN,
          `the entropy device returned no bytes ${MAX_EMPTY} times in a row`,
        ),
      );
      this.releaseBuffer(t);
      return;
    }
    if (t.got < t.length) {
      this.waiting.push(t); // short read: post the rest of the same buffer
      return;
    }
    this.releaseBuffer(t);
    if (req.remaining === 0) {
      req.done = true;
      this.pending.delete(req);
      req.resolve(req.out);
    }
  }

  private releaseBuffer(t: RngToken): void {
    if (t.addr >= 0) this.allocator.free(t.addr);
    t.addr = -1;
  }

  private failRequest(req: RngRequest, err: DriverError): void {
    if (req.done) return;
    req.done = true;
    this.pending.delete(req);
    req.reject(asError(err));
  }

  /**
   * Stops the driver: every pending read rejects with `err`. Buffers the device still
   * holds stay allocated until {@link reset} (the device may still write them).
   */
  private fail(err: DriverError): void {
    if (this.failure === null) this.failure = err;
    for (const req of [...this.pending]) this.failRequest(req, err);
    for (let i = this.waitHead; i < this.waiting.length; i++) {
      const t = this.waiting[i]!;
      this.failRequest(t.request, err);
      this.releaseBuffer(t);
    }
    this.waiting = [];
    this.waitHead = 0;
  }

  /**
   * Resets the device (§2.4) and takes back every buffer it still held: pending reads
   * reject, buffers return to the allocator, the ring is reinitialised. The device must
   * be set up again (e.g. a new {@link VirtioRngDriver.create}) before further reads;
   * the reset releases the device for that new driver.
   */
  reset(): void {
    this.transport.reset();
    unbindVirtioDriver(this.transport);
    const err = new DriverError(VirtioErrorCode.DEVICE_NEEDS_RESET, "the device was reset");
    for (const t of this.queue.detachUnused()) {
      this.failRequest(t.request, err);
      this.releaseBuffer(t);
    }
    this.fail(err);
  }
}

function asError(err: DriverError): Error {
  return new Error(err.toString(), { cause: err });
}
