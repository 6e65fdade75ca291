/**
 * `@pvkit/emulated-rtl8139`: a fully emulated Realtek RTL8139 (the PCI function Linux's
 * 8139too binds to) over the shared network back-ends of `@pvkit/platform`, and an
 * 8139too-like guest driver.
 *
 * @packageDocumentation
 * @module @pvkit/emulated-rtl8139
 */

export { etherCrc, ethernetFcs, multicastHashBit } from "./crc.js";
export { Eeprom93C46 } from "./device/eeprom.js";
export {
  Rtl8139,
  type Rtl8139DropReason,
  type Rtl8139Events,
  type Rtl8139Options,
  type Rtl8139Stats,
} from "./device/rtl8139.js";
export {
  type GuestBufferAllocator,
  Rtl8139Driver,
  Rtl8139DriverError,
  type Rtl8139DriverEvents,
  type Rtl8139DriverOptions,
  type Rtl8139DriverStats,
  type Rtl8139RegisterWindow,
} from "./driver/rtl8139-driver.js";
export * from "./spec.js";
