/**
 * Constructor checks shared by the device-side transports: a missing or wrong-typed
 * `device`, `memory` or `irq` is a host programming mistake, reported as a `TypeError`
 * that names the option, the type expected and the value given. Run once per transport,
 * never on an access path.
 *
 * @module
 */

import {
  expectArgument,
  expectOptions,
  hasMethods,
  isGuestMemoryLike,
  isIrqLineLike,
} from "@pvkit/platform";

/**
 * Predicate: a `VirtioDevice` (duck-typed: a numeric `deviceId` and `numQueues`, and the
 * `bind`, `readConfig`, `writeConfig` and `setStatus` methods).
 *
 * @param value - the candidate
 */
export function isVirtioDeviceLike(value: unknown): boolean {
  if (!hasMethods(value, "bind", "readConfig", "writeConfig", "setStatus")) return false;
  const d = value as { deviceId?: unknown; numQueues?: unknown };
  return typeof d.deviceId === "number" && typeof d.numQueues === "number";
}

/**
 * Checks `{ device, memory, irq }` of a transport's options.
 *
 * @param where - e.g. `"new VirtioMmioTransport"`
 * @param options - the options argument
 * @param irqRequired - whether `irq` must be given (virtio-mmio) or may be left out (PCI)
 * @throws TypeError naming the first bad option
 */
export function checkTransportOptions(where: string, options: unknown, irqRequired: boolean): void {
  expectOptions(where, options, irqRequired ? "{ device, memory, irq }" : "{ device, memory, … }");
  const o = options as Record<string, unknown>;
  expectArgument(
    where,
    "options.device",
    o.device,
    "a VirtioDevice (e.g. new VirtioRngDevice())",
    isVirtioDeviceLike,
  );
  expectArgument(
    where,
    "options.memory",
    o.memory,
    "a GuestMemory (e.g. GuestMemory.create(16 << 20))",
    isGuestMemoryLike,
  );
  if (irqRequired || o.irq !== undefined)
    expectArgument(where, "options.irq", o.irq, "an IrqLine (new IrqLine(name))", isIrqLineLike);
}
