/**
 * `@pvkit/virtio-core/testing`: driver-side helpers for tests and benchmarks — a raw,
 * unvalidated split-queue builder, guest-memory canaries, and a minimal guest that puts
 * any device behind virtio-mmio or virtio-pci.
 *
 * @packageDocumentation
 * @module @pvkit/virtio-core/testing
 */

export {
  deliverInterrupts,
  type RawMmioGuest,
  type RawMmioGuestOptions,
  rawMmioGuest,
  TEST_MMIO_BASE,
  TEST_PCI_SLOT,
  type TestGuest,
  type TestGuestOptions,
  type TestTransport,
  testGuest,
} from "./guest.js";
export {
  type AddPackedBufferOptions,
  MockPackedQueue,
  type PackedDescriptorFields,
  type PackedUsedElement,
  type RawPackedDescriptor,
} from "./mock-packed.js";
export {
  type AddChainOptions,
  type ChainBuffer,
  type ChainRanges,
  type ConfigureOptions,
  chainRanges,
  checkCanary,
  type DescriptorFields,
  fillCanary,
  type MemoryRange,
  type MockQueueOptions,
  MockSplitQueue,
  type RawDescriptor,
  type SplitQueueLayout,
  type UsedElement,
} from "./mock-queue.js";
