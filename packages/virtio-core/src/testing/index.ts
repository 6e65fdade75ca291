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
  chainRanges,
  type ConfigureOptions,
  checkCanary,
  type DescriptorFields,
  fillCanary,
  type MemoryRange,
  MockSplitQueue,
  type MockQueueOptions,
  type RawDescriptor,
  type SplitQueueLayout,
  type UsedElement,
} from "./mock-queue.js";
