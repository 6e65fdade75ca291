/**
 * `@pvkit/virtio-core`: split virtqueues (device and driver side), feature negotiation,
 * the device-status state machine and the virtio transports.
 *
 * @packageDocumentation
 * @module @pvkit/virtio-core
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
// ── driver side ──
export { GuestAllocator, type GuestAllocatorStats } from "./driver/allocator.js";
export {
  bindVirtioDriver,
  checkVirtioUnbound,
  unbindVirtioDriver,
  type VirtioDeviceLocation,
  virtioDeviceName,
} from "./driver/binding.js";
export { checkDriverArguments, isVirtioDriverTransport } from "./driver/check.js";
export {
  DriverQueue,
  type DriverQueueOptions,
  type DriverQueueStats,
  type GuestBuffer,
  type IndirectArea,
  type RingAddresses,
  type UsedBuffer,
} from "./driver/driver-queue.js";
export type { DriverVirtqueue } from "./driver/driver-virtqueue.js";
export {
  DRIVER_OK_STATUS,
  type InitVirtioOptions,
  initVirtioDevice,
  readConfigStable,
  type VirtioDriverDevice,
} from "./driver/init.js";
export {
  type SplitQueueLayout,
  type SplitQueueLayoutOptions,
  splitQueueBytes,
  splitQueueLayout,
} from "./driver/layout.js";
export { VirtioMmioDriverTransport } from "./driver/mmio-driver.js";
export {
  PackedDriverQueue,
  type PackedQueueLayout,
  packedQueueBytes,
  packedQueueLayout,
} from "./driver/packed-driver-queue.js";
export {
  findCapability,
  findVirtioCap,
  VirtioPciDriverTransport,
  type VirtioPciIrqMode,
  type VirtioPciMappedRegion,
  type VirtioPciMsixInfo,
  type VirtioPciMsixOptions,
} from "./driver/pci-driver.js";
export {
  type RngToken,
  type VirtioRngCreateOptions,
  VirtioRngDriver,
  type VirtioRngDriverOptions,
  type VirtioRngDriverStats,
} from "./driver/rng-driver.js";
export type { ConfigAccessSize, VirtioDriverTransport } from "./driver/transport.js";
export { DriverError, isDriverError, VirtioError, VirtioErrorCode } from "./errors.js";
// ── transports (device side) ──
export {
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_LEN,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CAP_SHARED_MEMORY_CFG,
  VIRTIO_PCI_CAP_VENDOR_CFG,
  VIRTIO_PCI_CFG_CAP_LEN,
  VIRTIO_PCI_COMMON_CFG_LEN,
  VIRTIO_PCI_COMMON_CFG_MIN_LEN,
  VIRTIO_PCI_DEVICE_ID_LAST,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
  VIRTIO_PCI_MIN_MODERN_SUBSYSTEM_ID,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_MODERN_REVISION,
  VIRTIO_PCI_NOTIFY_CAP_LEN,
  VIRTIO_PCI_VENDOR_ID,
  VirtioPciCapOffset,
  VirtioPciClass,
  VirtioPciCommonCfg,
  virtioPciClassCode,
  virtioPciDeviceId,
} from "./pci-spec.js";
export { ChainReader, ChainWriter, DescriptorChain } from "./queue/chain.js";
export {
  DeviceQueue,
  type DeviceQueueStats,
  isValidQueueSize,
  type QueueErrorHandler,
} from "./queue/device-queue.js";
export { PackedDeviceQueue } from "./queue/packed-device-queue.js";
export type { DeviceVirtqueue } from "./queue/virtqueue.js";
export { loadIndex, storeIndex, wordsOver } from "./ring-access.js";
export * from "./spec.js";
export {
  VIRTIO_MMIO_WINDOW,
  VirtioMmioTransport,
  type VirtioMmioTransportOptions,
} from "./transport/mmio.js";
export {
  type VirtioPciBarLayout,
  type VirtioPciCapabilityOffsets,
  type VirtioPciLayout,
  type VirtioPciLayoutPreset,
  type VirtioPciLayoutShape,
  type VirtioPciRegion,
  type VirtioPciStats,
  VirtioPciTransport,
  type VirtioPciTransportOptions,
  virtioPciLayout,
} from "./transport/pci.js";
