/**
 * `MockPackedQueue`: a raw, unvalidated driver-side builder over one packed virtqueue in
 * guest memory (§2.8), the packed counterpart of `MockSplitQueue`: tests write exactly
 * the descriptors, flags, IDs and wrap-counter bits they want — well-formed or hostile —
 * and read back what the device wrote.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import type { VirtioError } from "../errors.js";
import type { DeviceVirtqueue } from "../queue/virtqueue.js";
import {
  packedRingBytes,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VRING_PACKED_EVENT_BYTES,
} from "../spec.js";
import type { ChainBuffer, ConfigureOptions, MemoryRange } from "./mock-queue.js";

/** One packed descriptor as the driver writes it (§2.8.13); stored truncated to its field widths. */
export interface RawPackedDescriptor {
  /** Buffer address; a `bigint` for any 64-bit value, or a non-negative integer `number`. */
  readonly addr: bigint | number;
  /** Length (stored as `len >>> 0`). */
  readonly len: number;
  /** Buffer ID (stored as `id & 0xffff`); default 0. */
  readonly id?: number;
  /** Flags (stored as `flags & 0xffff`), AVAIL/USED included: nothing is added. */
  readonly flags?: number;
}

/** A packed descriptor read back from guest memory. */
export interface PackedDescriptorFields {
  /** Address (64 bits). */
  readonly addr: bigint;
  /** Length. */
  readonly len: number;
  /** Buffer ID. */
  readonly id: number;
  /** Flags. */
  readonly flags: number;
}

/** Options of {@link MockPackedQueue.addBuffer}. */
export interface AddPackedBufferOptions {
  /** Buffer ID (default: the lowest ID not outstanding in this mock). */
  readonly id?: number;
  /** Put the buffers in an indirect table at this address (one INDIRECT ring descriptor). */
  readonly indirectTable?: number;
  /** Write the head's flags, making the buffer available (default true). */
  readonly makeAvailable?: boolean;
}

/** A used descriptor as the driver finds it (§2.8.7). */
export interface PackedUsedElement {
  /** Buffer ID. */
  readonly id: number;
  /** Length written (as stored, whatever the WRITE flag says). */
  readonly len: number;
  /** Flags of the used descriptor. */
  readonly flags: number;
}

function must<V>(v: V | { readonly message: string } | undefined): V {
  if (typeof v === "object" && v !== null && "message" in v)
    throw new RangeError(`MockPackedQueue: ${v.message}`);
  return v as V;
}

function toU64(addr: bigint | number): bigint {
  if (typeof addr === "bigint") return BigInt.asUintN(64, addr);
  if (!Number.isInteger(addr)) throw new RangeError(`descriptor address ${addr} is not an integer`);
  return BigInt.asUintN(64, BigInt(addr));
}

/**
 * A driver-side builder over one packed virtqueue. It tracks the driver's avail position
 * and wrap counter, and the used position it reads next, like a driver would; every raw
 * write is available too.
 *
 * @example
 * ```ts
 * const mock = new MockPackedQueue(mem, 8);
 * const q = new PackedDeviceQueue(0, 8);
 * mock.configure(q);
 * const id = mock.addBuffer([{ addr: 0x8000, len: 64 }]);
 * const chain = q.popChain()!; // chain.head === id
 * q.addUsed(chain.head, 0);
 * mock.readUsed(); // { id, len: 0, flags }
 * ```
 */
export class MockPackedQueue {
  /** Guest-physical address of the descriptor ring. */
  readonly descAddr: number;
  /** Guest-physical address of the driver event suppression structure. */
  readonly driverAddr: number;
  /** Guest-physical address of the device event suppression structure. */
  readonly deviceAddr: number;
  /** The driver's next avail position. */
  nextAvail = 0;
  /** The driver's avail wrap counter (starts at 1, §2.8.1). */
  availWrap = 1;
  /** The driver's next used position. */
  nextUsed = 0;
  /** The driver's used wrap counter. */
  usedWrap = 1;
  /** Ring slots of each outstanding buffer ID (as this mock added it). */
  readonly slotsOf = new Map<number, number>();

  /**
   * @param memory - guest memory
   * @param size - queue size (any value; a hostile size is a test case)
   * @param base - where the ring starts (default 0); the event structures follow it
   */
  constructor(
    readonly memory: GuestMemory,
    readonly size: number,
    base = 0,
  ) {
    this.descAddr = base;
    this.driverAddr = base + packedRingBytes(size);
    this.deviceAddr = this.driverAddr + VRING_PACKED_EVENT_BYTES;
    for (const r of this.ringRanges()) memory.fill(r.addr, r.len, 0);
  }

  /** One past the last ring byte. */
  get end(): number {
    return this.deviceAddr + VRING_PACKED_EVENT_BYTES;
  }

  /** The ring and both event structures, for canaries. */
  ringRanges(): MemoryRange[] {
    return [
      { addr: this.descAddr, len: packedRingBytes(this.size) },
      { addr: this.driverAddr, len: VRING_PACKED_EVENT_BYTES },
      { addr: this.deviceAddr, len: VRING_PACKED_EVENT_BYTES },
    ];
  }

  /** The AVAIL/USED bits that make a descriptor available in lap `wrap` (§2.8.1). */
  static availBits(wrap: number): number {
    return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  /** Writes descriptor `pos` of the ring as given (flags last). */
  writeDescriptor(pos: number, d: RawPackedDescriptor): void {
    this.writeAt(this.descAddr + 16 * pos, d);
  }

  /** Writes a descriptor at any address (an indirect table entry). */
  writeAt(addr: number, d: RawPackedDescriptor): void {
    const m = this.memory;
    must(m.check(addr, 16));
    must(m.writeU64(addr, toU64(d.addr)));
    must(m.writeU32(addr + 8, d.len >>> 0));
    must(m.writeU16(addr + 12, (d.id ?? 0) & 0xffff));
    must(m.writeU16(addr + 14, (d.flags ?? 0) & 0xffff));
  }

  /** Reads descriptor `pos` of the ring. */
  readDescriptor(pos: number): PackedDescriptorFields {
    const m = this.memory;
    const a = this.descAddr + 16 * pos;
    return {
      addr: must<bigint>(m.readU64(a)),
      len: must<number>(m.readU32(a + 8)),
      id: must<number>(m.readU16(a + 12)),
      flags: must<number>(m.readU16(a + 14)),
    };
  }

  /**
   * Writes `descs` at the next avail positions (their flags as given, AVAIL/USED bits
   * included), the first one's flags last, and advances the avail position and wrap
   * counter over them. @returns the position of the first
   */
  pushRaw(descs: readonly RawPackedDescriptor[]): number {
    const head = this.nextAvail;
    for (let i = descs.length - 1; i >= 0; i--) {
      const pos = (head + i) % this.size;
      this.writeDescriptor(pos, descs[i]!);
    }
    const next = head + descs.length;
    this.availWrap ^= Math.floor(next / this.size) & 1;
    this.nextAvail = next % this.size;
    return head;
  }

  /**
   * Makes a well-formed buffer available (§2.8.21.1): readable buffers then writable ones
   * as a NEXT-linked list of consecutive descriptors (or one INDIRECT descriptor), each
   * with the buffer ID and the AVAIL/USED bits of its lap, the head's flags written last.
   *
   * @returns the buffer ID
   */
  addBuffer(buffers: readonly ChainBuffer[], options: AddPackedBufferOptions = {}): number {
    const id = options.id ?? this.freeId();
    let slots: number;
    if (options.indirectTable !== undefined) {
      buffers.forEach((b, i) => {
        this.writeAt(options.indirectTable! + 16 * i, {
          addr: b.addr,
          len: b.len,
          flags: b.writable ? VIRTQ_DESC_F_WRITE : 0,
        });
      });
      slots = 1;
      const flags = VIRTQ_DESC_F_INDIRECT | MockPackedQueue.availBits(this.availWrap);
      this.place([{ addr: options.indirectTable, len: 16 * buffers.length, id, flags }], options);
    } else {
      slots = buffers.length;
      const descs: RawPackedDescriptor[] = [];
      let wrap = this.availWrap;
      buffers.forEach((b, i) => {
        if ((this.nextAvail + i) % this.size === 0 && i > 0) wrap ^= 1;
        let flags = (b.writable ? VIRTQ_DESC_F_WRITE : 0) | MockPackedQueue.availBits(wrap);
        if (i + 1 < buffers.length) flags |= VIRTQ_DESC_F_NEXT;
        descs.push({ addr: b.addr, len: b.len, id, flags });
      });
      this.place(descs, options);
    }
    this.slotsOf.set(id, slots);
    return id;
  }

  private place(descs: RawPackedDescriptor[], options: AddPackedBufferOptions): void {
    if (options.makeAvailable ?? true) {
      this.pushRaw(descs);
      return;
    }
    const headFlags = descs[0]!.flags ?? 0;
    const head = this.nextAvail;
    this.pushRaw([
      { ...descs[0]!, flags: headFlags ^ (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) },
      ...descs.slice(1),
    ]);
    this.pendingHead = { pos: head, flags: headFlags };
  }

  private pendingHead: { pos: number; flags: number } | null = null;

  /** Publishes the head flags of the last buffer added with `makeAvailable: false`. */
  publish(): void {
    const p = this.pendingHead;
    if (p === null) return;
    must(this.memory.writeU16(this.descAddr + 16 * p.pos + 14, p.flags));
    this.pendingHead = null;
  }

  private freeId(): number {
    for (let i = 0; ; i++) if (!this.slotsOf.has(i)) return i;
  }

  /**
   * Reads the used descriptor at the driver's next used position, if the device wrote one
   * in this lap (AVAIL = USED = the used wrap counter), and moves past the slots its ID
   * took. @returns the element, or null
   */
  readUsed(): PackedUsedElement | null {
    const d = this.readDescriptor(this.nextUsed);
    const a = (d.flags >> 7) & 1;
    const u = (d.flags >> 15) & 1;
    if (a !== u || a !== this.usedWrap) return null;
    const slots = this.slotsOf.get(d.id) ?? 1;
    this.slotsOf.delete(d.id);
    const next = this.nextUsed + slots;
    this.usedWrap ^= Math.floor(next / this.size) & 1;
    this.nextUsed = next % this.size;
    return { id: d.id, len: d.len, flags: d.flags };
  }

  /** Writes the driver event suppression structure (§2.8.10). */
  setDriverEvent(offWrap: number, flags: number): void {
    must(this.memory.writeU16(this.driverAddr, offWrap & 0xffff));
    must(this.memory.writeU16(this.driverAddr + 2, flags & 0xffff));
  }

  /** Reads the device event suppression structure the device wrote. */
  deviceEvent(): { offWrap: number; flags: number } {
    return {
      offWrap: must<number>(this.memory.readU16(this.deviceAddr)),
      flags: must<number>(this.memory.readU16(this.deviceAddr + 2)),
    };
  }

  /** Writes size and addresses into a device queue (what the transport does). */
  applyLayout(queue: DeviceVirtqueue): void {
    queue.size = this.size;
    queue.descAddr = this.descAddr;
    queue.driverAddr = this.driverAddr;
    queue.deviceAddr = this.deviceAddr;
  }

  /** Binds, applies the layout, enables and activates `queue`. @returns the enable error, if any */
  configure(queue: DeviceVirtqueue, options: ConfigureOptions = {}): VirtioError | undefined {
    queue.bind(this.memory);
    this.applyLayout(queue);
    const err = queue.enable();
    if (err !== undefined) return err;
    queue.activate(options.eventIdx ?? false, options.indirect ?? false);
    return undefined;
  }
}
