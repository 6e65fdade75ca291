/**
 * Refcount block entries of every width (qcow2.txt "Host cluster management":
 * refcount_bits = 1 << refcount_order, 1 to 64 bits, big-endian, sub-byte widths from
 * the least significant bit), and the layout of a fresh refcount structure placed after
 * every cluster in use (for new images and for the repair of a dirty image).
 *
 * @module
 */

/** Reads entry `i` of a refcount block (64-bit values above 2^53 read as 2^53). */
export function getRefcount(block: DataView, order: number, i: number): number {
  switch (order) {
    case 3:
      return block.getUint8(i);
    case 4:
      return block.getUint16(i * 2);
    case 5:
      return block.getUint32(i * 4);
    case 6: {
      const hi = block.getUint32(i * 8);
      return hi >= 0x20_0000 ? 2 ** 53 : hi * 2 ** 32 + block.getUint32(i * 8 + 4);
    }
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      return (block.getUint8(bit >>> 3) >>> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

/** Writes entry `i` of a refcount block (`value` within {@link maxRefcount}). */
export function setRefcount(block: DataView, order: number, i: number, value: number): void {
  switch (order) {
    case 3:
      block.setUint8(i, value);
      return;
    case 4:
      block.setUint16(i * 2, value);
      return;
    case 5:
      block.setUint32(i * 4, value);
      return;
    case 6:
      block.setUint32(i * 8, Math.floor(value / 2 ** 32));
      block.setUint32(i * 8 + 4, value >>> 0);
      return;
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      const byte = block.getUint8(bit >>> 3);
      block.setUint8(bit >>> 3, (byte & ~mask) | ((value << (bit & 7)) & mask));
    }
  }
}

/** The largest refcount an entry of `order` holds. */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

/** Where a fresh refcount structure goes: the table at `start`, then the blocks. */
export interface RefcountPlan {
  /** First cluster of the table. */
  readonly tableCluster: number;
  /** Clusters of the table. */
  readonly tableClusters: number;
  /** Block index → cluster index of each refcount block, in order after the table. */
  readonly blocks: ReadonlyMap<number, number>;
  /** First cluster after the structure. */
  readonly end: number;
}

/**
 * Lays out a refcount table and blocks from cluster `start` on that describe every
 * cluster below `start` (those `usedBlock` marks) and themselves. The table and blocks
 * depend on each other's size, so this iterates to the fixed point (it converges: each
 * round can only add blocks, and blocks are bounded by the clusters they cover).
 *
 * @param start - first free cluster (the structure goes here)
 * @param usedBlock - whether block `b` (< ceil(start / perBlock)) covers a cluster in use
 * @param clusterBits - log2 of the cluster size
 * @param perBlock - refcount entries per block
 */
export function planRefcounts(
  start: number,
  usedBlock: (b: number) => boolean,
  clusterBits: number,
  perBlock: number,
): RefcountPlan {
  const cs = 2 ** clusterBits;
  const below = Math.ceil(start / perBlock);
  let usedBelow = 0;
  for (let b = 0; b < below; b++) if (usedBlock(b)) usedBelow++;
  let n = 1;
  let k = 0;
  for (;;) {
    const end = start + n + k;
    const firstNew = Math.floor(start / perBlock);
    const lastNew = Math.floor((end - 1) / perBlock);
    let count = usedBelow;
    for (let b = firstNew; b <= lastNew; b++) if (b >= below || !usedBlock(b)) count++;
    const entries = lastNew + 1;
    const n2 = Math.max(1, Math.ceil((entries * 8) / cs));
    if (n2 === n && count === k) break;
    n = Math.max(n, n2);
    k = Math.max(k, count);
  }
  const blocks = new Map<number, number>();
  const end = start + n + k;
  const lastNew = Math.floor((end - 1) / perBlock);
  let at = start + n;
  for (let b = 0; b <= lastNew; b++) {
    const touchesNew = (b + 1) * perBlock > start;
    if ((b < below && usedBlock(b)) || touchesNew) blocks.set(b, at++);
  }
  return { tableCluster: start, tableClusters: n, blocks, end: at };
}
