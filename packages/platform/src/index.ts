/**
 * `@pvkit/platform`: what every pvkit device and driver shares — guest memory, the bus
 * that counts exits, and interrupt lines.
 *
 * @packageDocumentation
 */

export {
  type AccessSize,
  type AddressSpace,
  allOnes,
  Bus,
  type BusMapping,
  type ExitStats,
  type IoHandler,
} from "./bus.js";
export { isPlatformError, PlatformError, PlatformErrorCode } from "./errors.js";
export { IrqLine, type IrqListener } from "./irq.js";
export {
  ADDRESS_LIMIT,
  combineAddress,
  GuestMemory,
  type GuestMemoryRegion,
  HOST_LITTLE_ENDIAN,
  type MemoryBacking,
  type RegionSpec,
} from "./memory.js";
