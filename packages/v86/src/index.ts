/**
 * `@pvkit/v86`: plugs pvkit devices into the v86 emulator — virtio-pci (any virtio
 * device), the emulated RTL8139 or any PCI function on its PCI bus, virtio-mmio devices
 * at fixed addresses declared through an ACPI SSDT — so a real Linux kernel drives them.
 * No Node-only imports: it runs in browsers too.
 *
 * @packageDocumentation
 * @module @pvkit/v86
 */

export {
  type AcpiTableFile,
  acpiEarlyCpio,
  amlInteger,
  amlPkgLength,
  type VirtioMmioAcpiDevice,
  type VirtioMmioSsdtOptions,
  virtioMmioSsdt,
} from "./acpi.js";
export {
  type AttachedMmioDevice,
  type AttachedPciFunction,
  type AttachPvkitOptions,
  attachPvkit,
  DEFAULT_V86_MMIO_BASE,
  DEFAULT_V86_MMIO_IRQS,
  type PvkitV86,
  planVirtioMmio,
  pvkitAcpiInitrd,
  V86_MMIO_GRANULE,
  V86_VIRTIO_MMIO_OFFSET,
  type V86DeviceSpec,
  type V86PciFunctionSpec,
  type V86VirtioMmioSpec,
  type V86VirtioPciSpec,
  type V86WakeupStats,
  v86GuestMemory,
} from "./attach.js";
export { type CpioEntry, CpioMode, cpioNewc, parentDirs } from "./cpio.js";
export { type ExitCount, V86ExitCounter } from "./exits.js";
export { type V86NicEmulator, v86NicBackend } from "./nic.js";
export type {
  V86Cpu,
  V86Emulator,
  V86Io,
  V86Pci,
  V86PciDevice,
  V86PortEntry,
} from "./v86-types.js";
