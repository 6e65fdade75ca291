/**
 * What the `sab-cross-thread` target's host thread, its driver worker and its scribbler
 * worker agree on: guest-memory layout, trap op codes, the control words and the case
 * handed to the workers.
 *
 * Every address a descriptor can ever hold — written by the driver or by the scribbler,
 * or torn between the two — is a *slot* base (areas below) or lies outside guest memory,
 * and every length is at most {@link SLOT_USE}; so whatever mix of fields the device
 * reads, a write it makes stays inside `[slot, slot + SLOT_USE)`. The second half of each
 * slot is canary: a device writing past a buffer's end lands there.
 *
 * @module
 */

/** Guest RAM (bytes). */
export const SAB_MEM = 0x80000;
/** Queue size of the receive and transmit queues. */
export const SAB_QSIZE = 16;
/** Receive ring (queue 0) and transmit ring (queue 1). */
export const RX_RING = 0x1000;
/** Transmit ring base. */
export const TX_RING = 0x2000;
/** Bytes of a slot; the first {@link SLOT_USE} may be written, the rest is canary. */
export const SLOT = 0x1000;
/** The most bytes any descriptor covers. */
export const SLOT_USE = 0x800;
/** Receive buffers: one slot per queue entry. */
export const RX_AREA = 0x10000;
/** Transmit buffers. */
export const TX_AREA = 0x20000;
/** Slots the scribbler points descriptors at. */
export const ZONE_AREA = 0x30000;
/** Slots per area. */
export const SLOTS = 16;
/** Scratch for the fresh driver of the serves-after-reset check (after the workers end). */
export const SCRATCH = { addr: 0x50000, len: 0x30000 } as const;
/** The virtio-mmio window's guest-physical base. */
export const SAB_MMIO_BASE = 0xfeb0_0000;

/** Trap op: a 32-bit MMIO read (`a0` address, `a1` size). */
export const OP_READ = 1;
/** Trap op: an MMIO write (`a0` address, `a1` size, `a2` value). */
export const OP_WRITE = 2;

/** Control word: the scribbler must stop (set by the driver or the host). */
export const CTL_STOP = 0;
/** Control word: scribbles made. */
export const CTL_SCRIBBLES = 1;
/** Control words. */
export const CTL_WORDS = 4;

/** Every slot base in an area. */
export function slotBases(area: number): number[] {
  return Array.from({ length: SLOTS }, (_, i) => area + i * SLOT);
}

/** What the workers get. */
export interface SabWorkerCase {
  readonly role: "driver" | "scribbler";
  /** Guest RAM inside `memory` (the guarded host buffer) starts here. */
  readonly guard: number;
  readonly memory: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly seed: number;
  /** Frames the driver transmits (looped back into its receive queue). */
  readonly frames: number;
  /** Writes the scribbler makes at most. */
  readonly scribbles: number;
  /** Which ring parts it scribbles on: bit 0 descriptors, bit 1 avail ring, bit 2 used ring. */
  readonly parts: number;
  /** Negotiate MRG_RXBUF. */
  readonly mrg: boolean;
}

/** What the driver worker posts back. */
export interface SabDriverReport {
  readonly sent: number;
  readonly received: number;
  /** Frames received whose bytes differ from every frame sent. */
  readonly corrupt: number;
  readonly needsReset: boolean;
  readonly status: number;
}

/** xorshift32: the workers' deterministic randomness. */
export function xorshift(seed: number): () => number {
  let s = seed | 0 || 0x9e37_79b9;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/** Byte `i` of transmitted frame `n` (frames are broadcast, so every RX filter takes them). */
export function frameBytes(n: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.fill(0xff, 0, 6);
  f.set([0x02, 0, 0, 0, 0, n & 0xff], 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = (n * 31 + i * 7) & 0xff;
  return f;
}
