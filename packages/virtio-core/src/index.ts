/**
 * `@pvkit/virtio-core`: split virtqueues (device and driver side), feature negotiation,
 * the device-status state machine and the virtio transports.
 *
 * @packageDocumentation
 */

export {
  type VirtioDevice,
  VirtioDeviceBase,
  type VirtioDeviceEvents,
  type VirtioDeviceOptions,
  type VirtioInterrupt,
} from "./device.js";
// ── devices ──
export {
  type EntropySource,
  VirtioRngDevice,
  type VirtioRngEvents,
  type VirtioRngOptions,
} from "./devices/rng.js";
export { VirtioError, VirtioErrorCode } from "./errors.js";
export { ChainReader, ChainWriter, DescriptorChain } from "./queue/chain.js";
export {
  DeviceQueue,
  type DeviceQueueStats,
  isValidQueueSize,
  type QueueErrorHandler,
} from "./queue/device-queue.js";
export { loadIndex, storeIndex, wordsOver } from "./ring-access.js";
export * from "./spec.js";
// ── transports (device side) ──
export {
  VIRTIO_MMIO_WINDOW,
  VirtioMmioTransport,
  type VirtioMmioTransportOptions,
} from "./transport/mmio.js";
// ── driver side ──
