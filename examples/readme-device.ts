// An emulator's side: a virtio entropy device on its MMIO bus, with its interrupt routed to
// the emulator's interrupt controller. Then a guest's side: pvkit's driver for the device.
import { fileURLToPath } from "node:url";
import { Bus, GuestMemory, IrqLine } from "@pvkit/platform";
import {
  DriverError,
  GuestAllocator,
  VIRTIO_MMIO_WINDOW,
  VirtioMmioDriverTransport,
  VirtioMmioTransport,
  VirtioRngDevice,
  VirtioRngDriver,
} from "@pvkit/virtio-core";

/** Runs the example. @returns the random bytes the guest got, the exits and the interrupts */
export async function main(): Promise<{ bytes: Uint8Array; exits: number; interrupts: number }> {
  // Stand-ins for the emulator's own parts: its RAM and its interrupt controller (PIC).
  const emulatorRamBuffer = new ArrayBuffer(16 << 20); // or SharedArrayBuffer, WebAssembly.Memory
  const pic = {
    pending: new Set<number>(), // the IRQ lines that are high
    setLevel(line: number, high: boolean): void {
      if (high) this.pending.add(line);
      else this.pending.delete(line);
    },
  };

  // The emulator's side: the device, its register window on the bus, its IRQ line.
  const memory = GuestMemory.over(emulatorRamBuffer);
  const irq = new IrqLine("virtio-rng");
  irq.onChange((high) => pic.setLevel(5, high));
  const rng = new VirtioRngDevice();
  const bus = new Bus();
  bus.map(
    "mmio",
    0xfeb0_0000,
    VIRTIO_MMIO_WINDOW,
    new VirtioMmioTransport({ device: rng, memory, irq }),
    "virtio-rng",
  );
  // The CPU's MMIO accesses go to bus.read("mmio", addr, 4) / bus.write("mmio", addr, 4, v).

  // The guest's side. A guest OS brings its own driver; pvkit has one for TypeScript guests.
  // It reaches the device only through the bus (every register access is an exit). Its
  // rings and buffers come from a heap the guest gives it: inside guest RAM, and nowhere
  // the guest uses for anything else (here 1 MiB at 1 MiB). The device is not in RAM.
  const transport = VirtioMmioDriverTransport.probe(bus, 0xfeb0_0000);
  if (transport instanceof DriverError) throw new Error(transport.message);
  const allocator = new GuestAllocator(0x10_0000, 0x10_0000);
  const driver = VirtioRngDriver.create(transport, { memory, allocator });
  if (driver instanceof DriverError) throw new Error(driver.message);
  const request = driver.read(32); // posts a buffer, notifies: the device fills it, raises IRQ 5
  // The CPU, between two instructions, runs the guest's handler while IRQ 5 is pending.
  // Forget this and `request` never settles: the driver completes it in onInterrupt().
  for (let n = 0; n < 8 && pic.pending.has(5); n++) driver.onInterrupt(); // acks: the line drops
  const bytes = await request;
  return { bytes, exits: bus.exits, interrupts: irq.raises };
}

// Run when executed directly (`npx tsx --conditions=@pvkit/source examples/readme-device.ts`).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { bytes, exits, interrupts } = await main();
  const hex = Buffer.from(bytes).toString("hex");
  console.log(`${bytes.length} random bytes: ${hex}; ${exits} exits, ${interrupts} interrupt`);
}
