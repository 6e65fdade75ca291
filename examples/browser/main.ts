/**
 * pvkit in a web page: a virtio-blk disk and its guest driver running in the page, with
 * guest RAM in a `WebAssembly.Memory` (what a Wasm-based emulator would hand pvkit). The
 * guest writes a few sectors, flushes and reads them back, and the page shows the result
 * as one JSON line in `<pre id="result">` and in its title ("pvkit: ok" or
 * "pvkit: failed").
 *
 * Build: `npx tsx examples/browser/build.ts`, then serve `examples/browser/dist/` over
 * HTTP (module scripts do not load from file://) and open it.
 *
 * Nothing here needs Node: the bundle is checked for `node:` imports when it is built.
 *
 * @module
 */

import { Bus, GuestMemory, IrqLine } from "@pvkit/platform";
import { MemoryDisk, VirtioBlkDevice, VirtioBlkDriver } from "@pvkit/virtio-blk";
import {
  DriverError,
  GuestAllocator,
  VIRTIO_MMIO_WINDOW,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
} from "@pvkit/virtio-core";

/** What the page reports (the JSON line in `#result`). */
export interface BrowserResult {
  /** Whether every byte read back matched. */
  readonly ok: boolean;
  /** What backs guest RAM. */
  readonly memory: string;
  /** Bytes written, then read back. */
  readonly bytes: number;
  /** Exits the guest made (register accesses through the Bus). */
  readonly exits: number;
  /** Interrupts delivered to the driver. */
  readonly interrupts: number;
  /** The error, when something failed. */
  readonly error?: string;
}

/** Wasm pages are 64 KiB: 128 of them are 8 MiB of guest RAM. */
const RAM_PAGES = 128;
/** The driver heap: from 1 MiB (below it: what the guest kernel keeps) to the end of RAM. */
const HEAP_BASE = 0x10_0000;
/** Where the device's register window is (MMIO, not RAM). */
const MMIO_BASE = 0xfeb0_0000;

/**
 * Lets the browser's event loop run once. A `MessageChannel` post, not `setTimeout(f, 0)`:
 * browsers clamp nested timeouts to 4 ms, which would stall the guest.
 */
function nextSlice(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/**
 * A stand-in for an emulator's CPU loop: runs the guest in slices and delivers the
 * (level-triggered) interrupt between slices by calling the handler the guest
 * registered: the driver's `onInterrupt()`. See `../block-device.ts` for the longer story.
 */
class ToyCpu {
  /** Interrupts delivered. */
  interrupts = 0;
  private handler: () => void = () => {};

  /** @param irq - the line the CPU watches */
  constructor(private readonly irq: IrqLine) {}

  /** The guest kernel's `request_irq`. */
  requestIrq(handler: () => void): void {
    this.handler = handler;
  }

  /** Runs the guest program until it settles; rejects when it stops making progress. */
  async run<T>(guest: () => Promise<T>, maxSlices = 10_000): Promise<T> {
    let finished = false;
    const result = guest().finally(() => {
      finished = true;
    });
    result.catch(() => {}); // the caller sees the rejection through the returned promise
    for (let slice = 0; !finished; slice++) {
      if (slice >= maxSlices) throw new Error("the guest made no progress");
      await nextSlice();
      for (let n = 0; this.irq.level && n < 64; n++) {
        this.interrupts++;
        this.handler();
      }
    }
    return result;
  }
}

/**
 * Builds the machine, runs the guest, and reports.
 *
 * @returns the result also written into the page
 */
export async function run(): Promise<BrowserResult> {
  // Guest RAM in Wasm memory. If the emulator grows it, GuestMemory notices the new
  // buffer by itself (growing detaches the old one).
  const wasmMemory = new WebAssembly.Memory({ initial: RAM_PAGES });
  const memory = GuestMemory.over(wasmMemory);
  const bus = new Bus();
  const irq = new IrqLine("virtio-blk");
  const device = new VirtioBlkDevice({ backend: new MemoryDisk(256 * 1024), serial: "browser" });
  bus.map(
    "mmio",
    MMIO_BASE,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device, memory, irq }),
    "virtio-blk",
  );

  // The guest: probe, bind the driver (rings and buffers from the heap), hook the IRQ.
  const transport = VirtioMmioDriverTransport.probe(bus, MMIO_BASE);
  if (transport instanceof DriverError) throw new Error(transport.message);
  const allocator = new GuestAllocator(HEAP_BASE, memory.end - HEAP_BASE);
  const driver = VirtioBlkDriver.create(transport, { memory, allocator });
  if (driver instanceof DriverError) throw new Error(driver.message);
  const cpu = new ToyCpu(irq);
  cpu.requestIrq(() => driver.onInterrupt());

  const data = new Uint8Array(8192);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 7) & 0xff;
  const back = await cpu.run(async () => {
    await driver.write(16, data);
    await driver.flush();
    return driver.read(16, data.length);
  });
  const ok = back.length === data.length && back.every((b, i) => b === data[i]);
  return {
    ok,
    memory: "WebAssembly.Memory",
    bytes: data.length,
    exits: bus.exits,
    interrupts: cpu.interrupts,
  };
}

/** Writes `result` into the page: the JSON line and the title. */
function show(result: BrowserResult): void {
  const pre = document.getElementById("result");
  if (pre !== null) pre.textContent = JSON.stringify(result);
  document.title = result.ok ? "pvkit: ok" : "pvkit: failed";
}

run().then(show, (e: unknown) =>
  show({
    ok: false,
    memory: "WebAssembly.Memory",
    bytes: 0,
    exits: 0,
    interrupts: 0,
    error: String(e),
  }),
);
