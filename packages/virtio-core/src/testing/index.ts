/**
 * `@pvkit/virtio-core/testing`: driver-side helpers for tests and benchmarks — a raw,
 * unvalidated split-queue builder and guest-memory canaries.
 *
 * @packageDocumentation
 */

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
