/**
 * `VirtioRngDevice`: the entropy device (§5.4, device id 4). The driver posts
 * device-writable buffers on its one queue (requestq); the device fills them with random
 * bytes. Linux's `virtio_rng` drives it.
 *
 * @module
 */

import { VirtioDeviceBase, type VirtioDeviceEvents } from "../device.js";
import type { DescriptorChain } from "../queue/chain.js";
import type { DeviceVirtqueue } from "../queue/virtqueue.js";
import { VIRTIO_RNG_QUEUE_REQUEST, VirtioDeviceId } from "../spec.js";

/** Fills `buffer` with random bytes (never a view of shared memory). */
export type EntropySource = (buffer: Uint8Array) => void;

/** Options of {@link VirtioRngDevice}. */
export interface VirtioRngOptions {
  /** QueueNumMax of requestq (power of two; default 256). */
  readonly queueSize?: number;
  /** Where the bytes come from (default: `crypto.getRandomValues`). */
  readonly source?: EntropySource;
  /** Most bytes served per request; larger buffers get a shorter used length (default 64 KiB). */
  readonly maxBytesPerRequest?: number;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  readonly eventIdx?: boolean;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  readonly indirectDesc?: boolean;
  /** Offer VIRTIO_F_RING_PACKED (§2.8; default false): packed rings if the driver accepts them. */
  readonly ringPacked?: boolean;
}

/** Events of {@link VirtioRngDevice}. */
export type VirtioRngEvents = VirtioDeviceEvents & {
  /** A request was served with `bytes` random bytes. */
  served: (bytes: number) => void;
  /** A request was malformed (it carried device-readable buffers): completed with length 0. */
  badRequest: (head: number) => void;
};

const SCRATCH_BYTES = 65536; // crypto.getRandomValues serves at most 64 KiB per call

function defaultSource(buffer: Uint8Array): void {
  globalThis.crypto.getRandomValues(buffer);
}

/**
 * The virtio entropy device.
 *
 * @example
 * ```ts
 * const rng = new VirtioRngDevice({ queueSize: 64 });
 * bus.map("mmio", base, VIRTIO_MMIO_WINDOW, new VirtioMmioTransport({ device: rng, memory, irq }), "rng");
 * ```
 */
export class VirtioRngDevice extends VirtioDeviceBase<VirtioRngEvents> {
  /** Random bytes handed to the guest. */
  bytesServed = 0;
  /** Requests completed. */
  requestsServed = 0;
  /** Malformed requests (device-readable buffers, §5.4.6.1) completed with length 0. */
  badRequests = 0;

  private readonly source: EntropySource;
  private readonly maxBytes: number;
  private readonly scratch: Uint8Array;
  private readonly serveChain = (chain: DescriptorChain): number => this.fill(chain);

  constructor(options: VirtioRngOptions = {}) {
    super({
      deviceId: VirtioDeviceId.ENTROPY,
      queueSizes: [options.queueSize ?? 256],
      ...(options.eventIdx === undefined ? {} : { eventIdx: options.eventIdx }),
      ...(options.indirectDesc === undefined ? {} : { indirectDesc: options.indirectDesc }),
      ...(options.ringPacked === undefined ? {} : { ringPacked: options.ringPacked }),
    });
    this.source = options.source ?? defaultSource;
    this.maxBytes = options.maxBytesPerRequest ?? 65536;
    this.scratch = new Uint8Array(Math.min(SCRATCH_BYTES, this.maxBytes));
  }

  protected onQueueNotify(index: number, queue: DeviceVirtqueue): void {
    if (index === VIRTIO_RNG_QUEUE_REQUEST) this.serveQueue(queue, this.serveChain);
  }

  private fill(chain: DescriptorChain): number {
    // §5.4.6.1: the driver MUST NOT place device-readable buffers in requestq. A per-request
    // fault: complete it with nothing written and carry on.
    if (chain.readableCount > 0) {
      this.badRequests++;
      this.emit("badRequest", chain.head);
      return 0;
    }
    const want = Math.min(chain.writableLength, this.maxBytes);
    let done = 0;
    while (done < want) {
      const n = Math.min(this.scratch.length, want - done);
      const part = n === this.scratch.length ? this.scratch : this.scratch.subarray(0, n);
      this.source(part);
      done += chain.copyToWritable(done, part);
    }
    this.bytesServed += done;
    this.requestsServed++;
    this.emit("served", done);
    return done;
  }
}
