/**
 * `@pvkit/virtio-core`: split virtqueues (device and driver side), feature negotiation,
 * the device-status state machine and the virtio transports.
 *
 * @packageDocumentation
 */

export * from "./spec.js";
export { VirtioError, VirtioErrorCode } from "./errors.js";
export { loadIndex, storeIndex, wordsOver } from "./ring-access.js";
export { ChainReader, ChainWriter, DescriptorChain } from "./queue/chain.js";
export {
  DeviceQueue,
  type DeviceQueueStats,
  isValidQueueSize,
  type QueueErrorHandler,
} from "./queue/device-queue.js";
export {
  type VirtioDevice,
  VirtioDeviceBase,
  type VirtioDeviceEvents,
  type VirtioDeviceOptions,
  type VirtioInterrupt,
} from "./device.js";
// ── transports (device side) ──
export { VIRTIO_MMIO_WINDOW, VirtioMmioTransport, type VirtioMmioTransportOptions } from "./transport/mmio.js";
// ── devices ──
export { type EntropySource, VirtioRngDevice, type VirtioRngEvents, type VirtioRngOptions } from "./devices/rng.js";
// ── driver side ──
