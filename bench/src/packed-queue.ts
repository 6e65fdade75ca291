/**
 * The packed-ring counterpart of the split-queue suite's rig (virtio 1.2 §2.8): the same
 * chain shapes and buffer bytes in a packed descriptor ring, the driver-side code that
 * makes a batch of them available, and the device-side work of the suite run by pvkit's
 * {@link PackedDeviceQueue}.
 *
 * @module
 */

import { GuestMemory } from "@pvkit/platform";
import {
  PackedDeviceQueue,
  packedRingBytes,
  storeIndex,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VRING_PACKED_EVENT_BYTES,
  wordsOver,
} from "@pvkit/virtio-core";

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** What a {@link PackedQueueRig} needs of a chain shape (the suite's `ChainShape`). */
export interface PackedChainShape {
  /** Short key used in tables. */
  readonly key: string;
  /** Length of each descriptor's buffer (each ≥ 1), all device-readable. */
  readonly lengths: readonly number[];
}

/**
 * Guest memory laid out with one packed virtqueue (§2.8.10): the descriptor ring at 0,
 * the driver and device event suppression structures after it, then one slot per chain
 * holding its buffers (each 64-byte aligned) filled with the same xorshift32 bytes as the
 * split rig of the same seed. Chain `k` uses buffer ID `k`.
 */
export class PackedQueueRig {
  /** The guest memory. */
  readonly memory: GuestMemory;
  /** Ring size (descriptors). */
  readonly size: number;
  /** Chains per batch. */
  readonly batch: number;
  /** Descriptor ring address (QueueDesc). */
  readonly descAddr = 0;
  /** Driver event suppression address (QueueDriver). */
  readonly driverAddr: number;
  /** Device event suppression address (QueueDevice). */
  readonly deviceAddr: number;
  /** Chains whose buffers are laid out (IDs 0 … chains-1). */
  readonly chains: number;
  /** Descriptors per chain. */
  readonly descriptorsPerChain: number;
  /** Whether the memory is a `SharedArrayBuffer` (the head's flags go through `Atomics`). */
  readonly shared: boolean;
  /** A preallocated destination for copy mode: one batch of chains, back to back. */
  readonly dst: Uint8Array;
  /** Chains made available so far. */
  published = 0;

  private readonly lengths: readonly number[];
  private readonly bufferAddrs: Float64Array;
  private readonly view: DataView;
  private readonly halves: Uint16Array;
  /** Next ring position the driver writes, and its avail wrap counter (§2.8.1). */
  private pos = 0;
  private wrap = 1;
  private cursor = 0;

  /**
   * @param shape - the chain shape
   * @param shared - back the memory with a `SharedArrayBuffer`
   * @param options - ring size, batch and seed (as the split rig's)
   */
  constructor(
    shape: PackedChainShape,
    shared: boolean,
    options: { readonly size: number; readonly batch: number; readonly seed: number },
  ) {
    const { size, batch } = options;
    const L = shape.lengths.length;
    this.size = size;
    this.batch = batch;
    this.lengths = shape.lengths;
    this.descriptorsPerChain = L;
    this.chains = Math.floor(size / L);
    if (this.chains < batch) throw new Error(`a ring of ${size} holds fewer than ${batch} chains`);
    this.driverAddr = packedRingBytes(size);
    this.deviceAddr = this.driverAddr + VRING_PACKED_EVENT_BYTES;
    const buffers = align(this.deviceAddr + VRING_PACKED_EVENT_BYTES, 4096);
    const stride = shape.lengths.reduce((s, l) => s + align(l, 64), 0);
    const total = align(buffers + this.chains * stride, 4096);
    this.shared = shared;
    this.memory = GuestMemory.create(total, { shared });
    const region = this.memory.regions[0]!;
    this.view = region.view;
    const halves = wordsOver(region.bytes, 0, packedRingBytes(size));
    if (halves === null) throw new Error("descriptor ring is not 2-byte aligned");
    this.halves = halves;
    this.bufferAddrs = new Float64Array(this.chains * L);
    for (let k = 0; k < this.chains; k++) {
      let off = buffers + k * stride;
      for (let j = 0; j < L; j++) {
        this.bufferAddrs[k * L + j] = off;
        off += align(shape.lengths[j]!, 64);
      }
    }
    const words = new Uint32Array(
      region.bytes.buffer,
      region.bytes.byteOffset + buffers,
      (total - buffers) / 4,
    );
    let x = options.seed >>> 0 || 1;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      words[i] = x;
    }
    this.dst = new Uint8Array(batch * shape.lengths.reduce((s, l) => s + l, 0));
  }

  /**
   * Driver side (§2.8.13): writes the next {@link batch} chains into the ring — every
   * descriptor's address, length and ID, the chain's later descriptors' flags, then the
   * head's flags last (with release ordering on shared memory), which makes the chain
   * available. The device overwrote these slots with used descriptors, so all is rewritten.
   */
  publish(): void {
    const { view, lengths, size } = this;
    const L = this.descriptorsPerChain;
    let pos = this.pos;
    let wrap = this.wrap;
    let k = this.cursor;
    for (let i = 0; i < this.batch; i++) {
      const avail = wrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      const head = pos;
      let headFlags = 0;
      for (let j = 0; j < L; j++) {
        const d = 16 * pos;
        view.setUint32(d, this.bufferAddrs[k * L + j]!, true);
        view.setUint32(d + 4, 0, true);
        view.setUint32(d + 8, lengths[j]!, true);
        view.setUint16(d + 12, k, true);
        const flags = (j + 1 < L ? VIRTQ_DESC_F_NEXT : 0) | avail;
        if (j === 0) headFlags = flags;
        else view.setUint16(d + 14, flags, true);
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
        }
      }
      storeIndex(this.halves, 8 * head + 7, headFlags, this.shared);
      k = k + 1 === this.chains ? 0 : k + 1;
    }
    this.pos = pos;
    this.wrap = wrap;
    this.cursor = k;
    this.published += this.batch;
  }

  /** A pvkit {@link PackedDeviceQueue} over this ring, enabled and active (no EVENT_IDX, no indirect). */
  createDeviceQueue(): PackedDeviceQueue {
    const q = new PackedDeviceQueue(0, this.size, (e) => {
      throw new Error(`benchmark packed queue broke: ${e.message}`);
    });
    q.bind(this.memory);
    q.size = this.size;
    q.descAddr = this.descAddr;
    q.driverAddr = this.driverAddr;
    q.deviceAddr = this.deviceAddr;
    const err = q.enable();
    if (err !== undefined) throw new Error(`benchmark packed queue did not enable: ${err.message}`);
    q.activate(false, false);
    return q;
  }
}

/**
 * pvkit packed, zero-copy: the split suite's `pvkitZeroCopy` on a {@link PackedDeviceQueue}
 * (kept a separate function so that each queue class's call sites stay monomorphic and
 * neither measurement slows the other).
 *
 * @returns the sum of the bytes read
 */
export function packedZeroCopy(q: PackedDeviceQueue): number {
  let sum = 0;
  for (let c = q.popChain(); c !== null; c = q.popChain()) {
    for (let i = 0, n = c.readableCount; i < n; i++) {
      const bytes = c.bufferBytes(i);
      const off = c.bufferOffset(i);
      const len = c.bufferLength(i);
      sum += bytes[off]! + bytes[off + (len >>> 1)]! + bytes[off + len - 1]!;
    }
    q.addUsed(c.head, 0);
  }
  q.publishUsed();
  return sum;
}

/**
 * pvkit packed, copy: the split suite's `pvkitCopy` on a {@link PackedDeviceQueue}.
 *
 * @returns bytes copied
 */
export function packedCopy(q: PackedDeviceQueue, dst: Uint8Array): number {
  let pos = 0;
  let total = 0;
  for (let c = q.popChain(); c !== null; c = q.popChain()) {
    const need = c.readableLength;
    if (pos + need > dst.length) pos = 0;
    const n = c.copyFromReadable(0, dst, pos, need);
    pos += n;
    total += n;
    q.addUsed(c.head, 0);
  }
  q.publishUsed();
  return total;
}
