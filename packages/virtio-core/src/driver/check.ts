/**
 * Argument checks of the drivers' `create` factories: a device-side transport or an
 * unchecked `DriverError` where a driver-side transport belongs, or options without
 * `memory` / `allocator`, are host programming mistakes and throw a `TypeError` naming
 * the argument, the type expected and the value given. Run once per `create`.
 *
 * @module
 */

import { expectArgument, expectOptions, hasMethods, isGuestMemoryLike } from "@pvkit/platform";

/**
 * Predicate: a `VirtioDriverTransport` (duck-typed: `deviceId` and the `reset`,
 * `readDeviceFeatures`, `setupQueue`, `notify` and `ackInterrupt` methods).
 *
 * @param value - the candidate
 */
export function isVirtioDriverTransport(value: unknown): boolean {
  return (
    hasMethods(value, "reset", "readDeviceFeatures", "setupQueue", "notify", "ackInterrupt") &&
    typeof (value as { deviceId?: unknown }).deviceId === "number"
  );
}

/**
 * Checks the `(transport, options)` of a driver's `create`.
 *
 * @param where - e.g. `"VirtioBlkDriver.create"`
 * @param transport - must be a driver-side transport (e.g. from `VirtioMmioDriverTransport.probe`)
 * @param options - must hold `memory` (a `GuestMemory`) and `allocator` (a `GuestAllocator`)
 * @throws TypeError naming the first bad argument
 */
export function checkDriverArguments(where: string, transport: unknown, options: unknown): void {
  expectArgument(
    where,
    "transport",
    transport,
    "a driver-side VirtioDriverTransport (VirtioMmioDriverTransport.probe(bus, base) or VirtioPciDriverTransport.probe(bus, config), checked for DriverError)",
    isVirtioDriverTransport,
  );
  expectOptions(where, options, "{ memory, allocator, … }");
  const o = options as Record<string, unknown>;
  expectArgument(where, "options.memory", o.memory, "a GuestMemory", isGuestMemoryLike);
  expectArgument(
    where,
    "options.allocator",
    o.allocator,
    "a GuestAllocator (alloc and free methods)",
    (v) => hasMethods(v, "alloc", "free"),
  );
}
