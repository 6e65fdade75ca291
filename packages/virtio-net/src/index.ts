/**
 * `@pvkit/virtio-net`: the virtio network device (§5.1) over the shared network back-ends
 * of `@pvkit/platform`, and its guest driver.
 *
 * @packageDocumentation
 * @module @pvkit/virtio-net
 */

export {
  type NetControlError,
  type NetDropReason,
  VirtioNetDevice,
  type VirtioNetEvents,
  type VirtioNetOptions,
  type VirtioNetStats,
} from "./device/net-device.js";
export {
  type NetFrameInfo,
  type NetRxMode,
  VirtioNetDriver,
  type VirtioNetDriverEvents,
  type VirtioNetDriverOptions,
  type VirtioNetDriverStats,
} from "./driver/net-driver.js";
export { flowHash } from "./flow.js";
export * from "./spec.js";
