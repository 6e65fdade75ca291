/**
 * Numbers of the virtio-pci transport, virtio 1.2 (cs01) §4.1: PCI ids (§4.1.2), the
 * vendor capability layout and `cfg_type` values (§4.1.4), the common configuration
 * structure (§4.1.4.3), the notification and ISR structures (§4.1.4.4, §4.1.4.5) and
 * MSI-X vector semantics (§4.1.5.1.2). Names keep the spec's (and Linux's
 * `virtio_pci.h`) spelling.
 *
 * @module
 */

import { VirtioDeviceId } from "./spec.js";

// ── §4.1.2 PCI Device Discovery ─────────────────────────────────────────────────────

/** §4.1.2: every virtio PCI function has this PCI Vendor ID (Red Hat / Qumranet). */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** §4.1.2: a modern (non-transitional) device's PCI Device ID is this plus its virtio id. */
export const VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040;
/** §4.1.2: the last PCI Device ID of the virtio range (0x1000–0x107f). */
export const VIRTIO_PCI_DEVICE_ID_LAST = 0x107f;
/** §4.1.2.1: non-transitional devices SHOULD have a Revision ID of 1 or higher. */
export const VIRTIO_PCI_MODERN_REVISION = 1;
/** §4.1.2.1: non-transitional devices SHOULD have a Subsystem Device ID of 0x40 or higher. */
export const VIRTIO_PCI_MIN_MODERN_SUBSYSTEM_ID = 0x40;

/**
 * §4.1.2: the PCI Device ID of a modern device.
 *
 * @param virtioId - the §5 device id
 */
export function virtioPciDeviceId(virtioId: number): number {
  return VIRTIO_PCI_MODERN_DEVICE_ID_BASE + virtioId;
}

/**
 * PCI class codes (PCI Code and ID Assignment spec; virtio §4.1.2 leaves the class to
 * the device type). 24-bit: base class << 16 | sub-class << 8 | programming interface.
 */
export const VirtioPciClass = {
  /** 0x02/0x00: Ethernet controller (virtio-net). */
  NETWORK_ETHERNET: 0x02_00_00,
  /** 0x01/0x00: SCSI storage controller (virtio-blk and virtio-scsi, as QEMU reports them). */
  STORAGE_SCSI: 0x01_00_00,
  /** 0x07/0x80: other communication controller (virtio-console). */
  COMMUNICATION_OTHER: 0x07_80_00,
  /** 0xff: a device that fits no defined class (entropy, balloon, others). */
  OTHERS: 0xff_00_00,
} as const;

/**
 * The class code pvkit reports for a virtio device type.
 *
 * @param virtioId - the §5 device id
 * @returns the 24-bit class code
 */
export function virtioPciClassCode(virtioId: number): number {
  switch (virtioId) {
    case VirtioDeviceId.NET:
      return VirtioPciClass.NETWORK_ETHERNET;
    case VirtioDeviceId.BLOCK:
    case VirtioDeviceId.SCSI:
      return VirtioPciClass.STORAGE_SCSI;
    case VirtioDeviceId.CONSOLE:
      return VirtioPciClass.COMMUNICATION_OTHER;
    default:
      return VirtioPciClass.OTHERS;
  }
}

// ── §4.1.4 Virtio Structure PCI Capabilities ────────────────────────────────────────

/** §4.1.4: `cfg_type` of the common configuration structure. */
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
/** §4.1.4: `cfg_type` of the notification structure. */
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
/** §4.1.4: `cfg_type` of the ISR status byte. */
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
/** §4.1.4: `cfg_type` of the device-specific configuration. */
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
/** §4.1.4: `cfg_type` of the PCI configuration access window. */
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
/** §4.1.4: `cfg_type` of a shared memory region. */
export const VIRTIO_PCI_CAP_SHARED_MEMORY_CFG = 8;
/** §4.1.4: `cfg_type` of vendor-specific data. */
export const VIRTIO_PCI_CAP_VENDOR_CFG = 9;

/** §4.1.4: byte offsets inside `struct virtio_pci_cap` and its extensions. */
export const VirtioPciCapOffset = {
  /** u8 cap_vndr: PCI_CAP_ID_VNDR (0x09). */
  CAP_VNDR: 0,
  /** u8 cap_next. */
  CAP_NEXT: 1,
  /** u8 cap_len: length of this capability structure. */
  CAP_LEN: 2,
  /** u8 cfg_type. */
  CFG_TYPE: 3,
  /** u8 bar: where the structure lives (0–5). */
  BAR: 4,
  /** u8 id: distinguishes several capabilities of one type. */
  ID: 5,
  /** le32 offset inside the BAR. */
  OFFSET: 8,
  /** le32 length of the structure. */
  LENGTH: 12,
  /** §4.1.4.4: le32 notify_off_multiplier (notify capability only). */
  NOTIFY_OFF_MULTIPLIER: 16,
  /** §4.1.4.9: u8 pci_cfg_data[4] (PCI_CFG capability only). */
  PCI_CFG_DATA: 16,
} as const;

/** §4.1.4: length of `struct virtio_pci_cap`. */
export const VIRTIO_PCI_CAP_LEN = 16;
/** §4.1.4.4: length of `struct virtio_pci_notify_cap`. */
export const VIRTIO_PCI_NOTIFY_CAP_LEN = 20;
/** §4.1.4.9: length of `struct virtio_pci_cfg_cap`. */
export const VIRTIO_PCI_CFG_CAP_LEN = 20;

// ── §4.1.4.3 Common configuration structure layout ──────────────────────────────────

/** §4.1.4.3: byte offsets of `struct virtio_pci_common_cfg`. */
export const VirtioPciCommonCfg = {
  /** le32 RW: selects which 32 bits `device_feature` shows. */
  DEVICE_FEATURE_SELECT: 0x00,
  /** le32 RO: 32 bits of the offered features. */
  DEVICE_FEATURE: 0x04,
  /** le32 RW: selects which 32 bits `driver_feature` writes. */
  DRIVER_FEATURE_SELECT: 0x08,
  /** le32 RW: 32 bits of the accepted features. */
  DRIVER_FEATURE: 0x0c,
  /** le16 RW: MSI-X vector for configuration changes. */
  CONFIG_MSIX_VECTOR: 0x10,
  /** le16 RO: number of virtqueues. */
  NUM_QUEUES: 0x12,
  /** u8 RW: the device status (§2.1); 0 resets. */
  DEVICE_STATUS: 0x14,
  /** u8 RO: configuration generation (§2.5). */
  CONFIG_GENERATION: 0x15,
  /** le16 RW: selects the virtqueue the queue_* fields address. */
  QUEUE_SELECT: 0x16,
  /** le16 RW: queue size (maximum on reset; 0 = queue unavailable). */
  QUEUE_SIZE: 0x18,
  /** le16 RW: MSI-X vector for this queue. */
  QUEUE_MSIX_VECTOR: 0x1a,
  /** le16 RW: 1 enables the queue. */
  QUEUE_ENABLE: 0x1c,
  /** le16 RO: this queue's offset in the notification structure (× multiplier). */
  QUEUE_NOTIFY_OFF: 0x1e,
  /** le64 RW: descriptor table address. */
  QUEUE_DESC: 0x20,
  /** le64 RW: driver area (available ring) address. */
  QUEUE_DRIVER: 0x28,
  /** le64 RW: device area (used ring) address. */
  QUEUE_DEVICE: 0x30,
  /** le16 RO: notification data for this queue (with VIRTIO_F_NOTIF_CONFIG_DATA). */
  QUEUE_NOTIFY_DATA: 0x38,
  /** le16 RW: 1 resets this queue (with VIRTIO_F_RING_RESET). */
  QUEUE_RESET: 0x3a,
} as const;

/** §4.1.4.3: bytes of `struct virtio_pci_common_cfg` up to and including `queue_reset`. */
export const VIRTIO_PCI_COMMON_CFG_LEN = 0x3c;
/** §4.1.4.3: bytes of the structure without `queue_notify_data` and `queue_reset` (Linux's minimum). */
export const VIRTIO_PCI_COMMON_CFG_MIN_LEN = 0x38;

// ── §4.1.4.5 ISR status, §4.1.5.1.2 MSI-X vectors ───────────────────────────────────

/** §4.1.4.5: ISR bit: a used-buffer notification (queue interrupt). */
export const VIRTIO_PCI_ISR_QUEUE = 0x1;
/** §4.1.4.5: ISR bit: a configuration-change notification. */
export const VIRTIO_PCI_ISR_CONFIG = 0x2;

/** §4.1.5.1.2: "no vector": an event mapped to it raises no MSI-X message. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
