/**
 * One driver per virtio device. A driver's `create` binds the device after it reached
 * DRIVER_OK; a second `create` on the same device — through the same transport or
 * another transport probed at the same address — fails with `ALREADY_BOUND` and a
 * message that names the device and the driver holding it. A device reset (§2.4: the
 * driver writes 0 to the status) ends the binding, as Linux's `virtio_dev_remove`
 * resets the device when a driver lets go: `transport.reset()` or the driver's own
 * `reset()` frees the device for a new driver.
 *
 * @module
 */

import { alreadyBoundMessage, bindDriver, boundDriver, unbindDriver } from "@pvkit/platform";
import { DriverError, VirtioErrorCode } from "../errors.js";
import { VirtioDeviceId } from "../spec.js";
import type { VirtioDriverTransport } from "./transport.js";

/** Where a driver-side transport reaches its device (see {@link VirtioDriverTransport.location}). */
export interface VirtioDeviceLocation {
  /** What the device is reached through: the `Bus` (bindings are per scope). */
  readonly scope: object;
  /** The device within the scope: its register window, e.g. `"mmio 0xfeb00000"`. */
  readonly key: string;
  /** The device for messages, e.g. `"virtio-blk device at mmio 0xfeb00000"`. */
  readonly device: string;
}

const NAMES: Readonly<Record<number, string>> = {
  [VirtioDeviceId.NET]: "virtio-net",
  [VirtioDeviceId.BLOCK]: "virtio-blk",
  [VirtioDeviceId.CONSOLE]: "virtio-console",
  [VirtioDeviceId.ENTROPY]: "virtio-rng",
  [VirtioDeviceId.BALLOON]: "virtio-balloon",
  [VirtioDeviceId.SCSI]: "virtio-scsi",
  [VirtioDeviceId.NINEP]: "virtio-9p",
};

/**
 * The usual name of a virtio device type (§5).
 *
 * @param deviceId - the §5 device id
 * @returns e.g. `"virtio-blk"`, or `"virtio device <id>"` for ids without a short name
 */
export function virtioDeviceName(deviceId: number): string {
  return NAMES[deviceId] ?? `virtio device ${deviceId}`;
}

function locate(transport: VirtioDriverTransport): VirtioDeviceLocation {
  return (
    transport.location ?? {
      scope: transport,
      key: "device",
      device: `${virtioDeviceName(transport.deviceId)} device behind this transport`,
    }
  );
}

/** How a virtio device is released, for the refusal message. */
const RELEASE = "reset the device (transport.reset() or the driver's reset(), §2.4)";

/**
 * Checks that no driver holds the device behind `transport`. Call it before
 * `initVirtioDevice` (whose reset would otherwise end the other driver's binding).
 *
 * @returns `undefined`, or an `ALREADY_BOUND` error naming the device and its driver
 */
export function checkVirtioUnbound(transport: VirtioDriverTransport): DriverError | undefined {
  const loc = locate(transport);
  const held = boundDriver(loc.scope, loc.key);
  return held === undefined
    ? undefined
    : new DriverError(VirtioErrorCode.ALREADY_BOUND, alreadyBoundMessage(held));
}

/**
 * Binds `driver` to the device behind `transport` (after `initVirtioDevice` succeeded).
 *
 * @param driver - the driver's name for messages, e.g. `"VirtioBlkDriver"`
 * @returns `undefined`, or an `ALREADY_BOUND` error naming the device and its driver
 */
export function bindVirtioDriver(
  transport: VirtioDriverTransport,
  driver: string,
): DriverError | undefined {
  const loc = locate(transport);
  const held = bindDriver(loc.scope, loc.key, { device: loc.device, driver, release: RELEASE });
  return held === undefined
    ? undefined
    : new DriverError(VirtioErrorCode.ALREADY_BOUND, alreadyBoundMessage(held));
}

/**
 * Ends the binding of the device behind `transport` (its driver reset it). The built-in
 * transports do this in their `reset()`; a driver calls it too, for transports that do
 * not.
 */
export function unbindVirtioDriver(transport: VirtioDriverTransport): void {
  const loc = locate(transport);
  unbindDriver(loc.scope, loc.key);
}
