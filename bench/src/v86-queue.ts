/**
 * v86's own virtqueue as a peer of pvkit's `DeviceQueue`: the `VirtQueue` of the
 * published `v86` npm package (0.5.462), driven on v86's own guest RAM.
 *
 * v86 exports only `V86` and `CPU`; its `VirtQueue` is reached the way a device gets it:
 * a `V86` is loaded (never started) with a virtio-net card, and the constructor of that
 * card's queue is taken (`cpu.devices.virtio_net.virtio.queues[0].constructor`). Both
 * published builds keep these names — the debug build (`build/libv86-debug.mjs`, whose
 * `dbg_log` and `dbg_assert` calls stay in and build their message strings even with
 * logging off) and the release build (`build/libv86.mjs`) — and both run on the
 * package's `build/v86.wasm`, as `@pvkit/v86`'s tests load them.
 *
 * A bench queue is a new `VirtQueue` over the real CPU object (so every ring and
 * descriptor access goes through v86's own `cpu.read16`/`read32s`/`write16`/`write32`,
 * wasm exports that check for MMIO first) with a small stand-in for the `VirtIO` device
 * object: no feature negotiated (no EVENT_IDX, no indirect descriptors — as pvkit's queue
 * in the bench) and `raise_irq` counting instead of raising PCI interrupts.
 *
 * @module
 */

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { GuestMemory } from "@pvkit/platform";

/** A descriptor as v86's `VirtQueue.get_descriptor` returns it. */
export interface V86Descriptor {
  /** Low 32 bits of the buffer address (v86 uses only these). */
  readonly addr_low: number;
  /** High 32 bits. */
  readonly addr_high: number;
  /** Length in bytes. */
  readonly len: number;
  /** `VIRTQ_DESC_F_*`. */
  readonly flags: number;
  /** Next descriptor when `NEXT` is set. */
  readonly next: number;
}

/** v86's `VirtQueueBufferChain` (the parts the bench uses). */
export interface V86BufferChain {
  /** Head descriptor index. */
  readonly head_idx: number;
  /** Device-readable descriptors in chain order. */
  readonly read_buffers: readonly V86Descriptor[];
  /** Sum of their lengths. */
  readonly length_readable: number;
  /** Bytes the device wrote (the used element's `len`). */
  length_written: number;
  /** Copies the next `dest.length` readable bytes into `dest`; returns bytes copied. */
  get_next_blob(dest: Uint8Array): number;
}

/** v86's `VirtQueue` (the parts the bench uses). */
export interface V86VirtQueue {
  /** Queue size. */
  size: number;
  /** Descriptor table address. */
  desc_addr: number;
  /** Available ring address. */
  avail_addr: number;
  /** Used ring address. */
  used_addr: number;
  /** Next available index to consume. */
  avail_last_idx: number;
  /** Marks the queue enabled (asserts it is configured). */
  enable(): void;
  /** Whether the driver has published a chain not yet popped. */
  has_request(): boolean;
  /** Pops the next chain. */
  pop_request(): V86BufferChain;
  /** Stages a used element for `chain`. */
  push_reply(chain: V86BufferChain): void;
  /** Publishes the staged used elements (one `used.idx` store) and raises the interrupt. */
  flush_replies(): void;
}

/** v86's CPU object (the parts the bench uses). */
export interface V86Cpu {
  /** Guest RAM as bytes (a view into the wasm memory). */
  readonly mem8: Uint8Array;
  /** The wasm memory holding guest RAM. */
  readonly wasm_memory: WebAssembly.Memory;
  /** A view of `length` bytes of guest RAM at `addr` (no copy). */
  read_blob(addr: number, length: number): Uint8Array;
}

/** The stand-in for v86's `VirtIO` device object that a bench queue reports to. */
interface VirtioStandIn {
  readonly name: string;
  is_feature_negotiated(bit: number): boolean;
  raise_irq(type: number): void;
}

/** Which published build. */
export type V86Build = "debug" | "release";

/** The module file of each build inside the `v86` package. */
export const V86_BUILD_FILES: Readonly<Record<V86Build, string>> = {
  debug: "v86/build/libv86-debug.mjs",
  release: "v86/build/libv86.mjs",
};

/** Where rigs start in v86's RAM: past the legacy VGA window (0xA0000–0xBFFFF), which v86 maps as MMIO. */
export const V86_RAM_START = 0x10_0000;

/** A loaded, never-started v86 whose RAM holds bench queues. */
export interface V86Machine {
  /** The build. */
  readonly build: V86Build;
  /** The CPU. */
  readonly cpu: V86Cpu;
  /** All guest RAM as one pvkit region at guest-physical 0 (the same bytes v86 reads). */
  readonly memory: GuestMemory;
  /** Interrupts v86's queues raised (the stand-in counts them). */
  readonly interrupts: number;
  /** Reserves `bytes` of guest RAM (4 KiB aligned) and returns its guest-physical address. */
  allocate(bytes: number): number;
  /** Forgets every allocation (the next starts at {@link V86_RAM_START} again). */
  reset(): void;
  /** A new v86 `VirtQueue` of `size` entries over this machine's RAM, at the given ring addresses, enabled. */
  createQueue(size: number, desc: number, avail: number, used: number): V86VirtQueue;
  /** Stops and frees the emulator. */
  destroy(): Promise<void>;
}

interface V86Instance {
  add_listener(event: string, f: () => void): void;
  destroy(): Promise<void>;
  v86: { cpu: V86Cpu & { devices: { virtio_net?: { virtio: { queues: object[] } } } } };
}

/**
 * Loads a build of v86 with `memoryBytes` of RAM and a virtio-net card (for its
 * `VirtQueue` constructor), without BIOS and without starting it.
 */
export async function loadV86(build: V86Build, memoryBytes = 64 << 20): Promise<V86Machine> {
  const require = createRequire(import.meta.url);
  const mod = (await import(pathToFileURL(require.resolve(V86_BUILD_FILES[build])).href)) as {
    V86: new (options: Record<string, unknown>) => V86Instance;
  };
  const emulator = new mod.V86({
    wasm_path: require.resolve("v86/build/v86.wasm"),
    memory_size: memoryBytes,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    log_level: 0,
    net_device: { type: "virtio" },
  });
  await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  const cpu = emulator.v86.cpu;
  const card = cpu.devices.virtio_net;
  const sample = card?.virtio.queues[0];
  if (sample === undefined)
    throw new Error(`v86 ${build} build: no virtio-net queue to take VirtQueue from`);
  const VirtQueue = sample.constructor as new (
    cpu: V86Cpu,
    virtio: VirtioStandIn,
    options: { size_supported: number; notify_offset: number },
  ) => V86VirtQueue;
  let interrupts = 0;
  const standIn: VirtioStandIn = {
    name: "pvkit-bench",
    is_feature_negotiated: () => false,
    raise_irq: () => {
      interrupts++;
    },
  };
  const size = cpu.mem8.length;
  const memory = new GuestMemory([
    { base: 0, size, backing: cpu.wasm_memory, backingOffset: cpu.mem8.byteOffset },
  ]);
  let next = V86_RAM_START;
  return {
    build,
    cpu,
    memory,
    get interrupts() {
      return interrupts;
    },
    allocate(bytes) {
      const at = next;
      const end = at + Math.ceil(bytes / 4096) * 4096;
      if (end > size) throw new Error(`v86 RAM of ${size} bytes is full (${bytes} more asked)`);
      next = end;
      return at;
    },
    reset() {
      next = V86_RAM_START;
    },
    createQueue(queueSize, desc, avail, used) {
      const q = new VirtQueue(cpu, standIn, { size_supported: queueSize, notify_offset: 0 });
      q.desc_addr = desc;
      q.avail_addr = avail;
      q.used_addr = used;
      q.enable();
      return q;
    },
    destroy: () => emulator.destroy(),
  };
}

/**
 * v86, zero-copy: the same work as the split-queue suite's `pvkitZeroCopy` — pops every
 * available chain, reads the first, middle and last byte of each readable buffer in place
 * (through `cpu.read_blob`, v86's view of guest RAM), returns each chain with used
 * length 0 and publishes `used.idx` once (`flush_replies`).
 *
 * @returns the sum of the bytes read
 */
export function v86ZeroCopy(q: V86VirtQueue, cpu: V86Cpu): number {
  let sum = 0;
  while (q.has_request()) {
    const c = q.pop_request();
    const bufs = c.read_buffers;
    for (let i = 0; i < bufs.length; i++) {
      const d = bufs[i]!;
      const bytes = cpu.read_blob(d.addr_low, d.len);
      sum += bytes[0]! + bytes[d.len >>> 1]! + bytes[d.len - 1]!;
    }
    q.push_reply(c);
  }
  q.flush_replies();
  return sum;
}

/**
 * v86, copy: the same work as `pvkitCopy` — copies every chain's readable bytes with
 * `get_next_blob` into `dst`, back to back (starting over at 0 when full). A v86 device
 * usually copies into a fresh `Uint8Array(length_readable)`; the bench hands it a
 * `subarray` of one preallocated buffer instead, which only makes v86 faster.
 *
 * @returns bytes copied
 */
export function v86Copy(q: V86VirtQueue, dst: Uint8Array): number {
  let pos = 0;
  let total = 0;
  while (q.has_request()) {
    const c = q.pop_request();
    const need = c.length_readable;
    if (pos + need > dst.length) pos = 0;
    const n = c.get_next_blob(dst.subarray(pos, pos + need));
    pos += n;
    total += n;
    q.push_reply(c);
  }
  q.flush_replies();
  return total;
}
