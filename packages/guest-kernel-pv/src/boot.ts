/**
 * What the host hands the guest kernel at boot — Xen's `start_info` in spirit: the
 * configuration, the size of RAM, where the shared-info page and the `mfn_list` (the
 * pseudo-physical→machine table, `start_info.mfn_list` in xen.h) are, and the devices
 * with their register windows and interrupt routes. It is plain data (structured-clone
 * safe), so the threaded runtime can pass it to a worker unchanged; both runtimes build
 * the guest's memory views with {@link guestMemoryViews}.
 *
 * Guest-physical map:
 *
 * | guest frames | contents |
 * |---|---|
 * | 0 | reserved (the null page) |
 * | 1 … | `mfn_list`: one little-endian `u32` machine frame per guest frame |
 * | `firstFreePfn` … `ramPages − 1` | the kernel's (allocator, heap, everything else) |
 * | `ramPages` (one page above RAM) | the shared-info page, mapped there by the host (as Xen's `XENMAPSPACE_shared_info`) |
 *
 * @module
 */

import { GuestMemory, type MemoryBacking } from "@pvkit/platform";
import type { NetMode, ResolvedConfig, TimeMode } from "./config.js";

/** Bytes per page. */
export const PAGE_BYTES = 4096;

/** Where the guest's physical memory lives in the backing buffer (machine memory). */
export interface GuestMemoryLayout {
  /** Bytes of guest RAM (guest-physical 0 … ramBytes − 1). */
  readonly ramBytes: number;
  /** Byte offset of guest-physical 0 in the backing. */
  readonly ramOffset: number;
  /** Guest-physical address of the shared-info page. */
  readonly sharedInfoGpa: number;
  /** Byte offset of the shared-info page in the backing. */
  readonly sharedInfoOffset: number;
}

/** The guest's views of its memory. */
export interface GuestMemoryViews {
  /** Guest RAM, guest-physical 0 … `ramBytes − 1` (what drivers and devices use). */
  readonly ram: GuestMemory;
  /** The shared-info page at its guest-physical address (`vcpu_info`, event bitmaps, pvclock). */
  readonly sharedInfo: GuestMemory;
}

/**
 * Builds the guest's views of its memory over the buffer that holds machine memory.
 *
 * @param backing - the machine-memory buffer (`ArrayBuffer`, or a `SharedArrayBuffer` in the
 *   threaded runtime)
 * @param layout - where RAM and the shared-info page are
 * @returns the views
 */
export function guestMemoryViews(
  backing: MemoryBacking,
  layout: GuestMemoryLayout,
): GuestMemoryViews {
  return {
    ram: new GuestMemory([
      { base: 0, size: layout.ramBytes, backing, backingOffset: layout.ramOffset },
    ]),
    sharedInfo: new GuestMemory([
      {
        base: layout.sharedInfoGpa,
        size: PAGE_BYTES,
        backing,
        backingOffset: layout.sharedInfoOffset,
      },
    ]),
  };
}

/** A device's register window and how its interrupt reaches the guest. */
export interface BootDevice {
  /** Register window: MMIO address or I/O port. */
  readonly base: number;
  /** Interrupt line (`IrqLineNo`) with the emulated controller. */
  readonly line: number;
  /**
   * With event channels: the backend domain's unbound port to bind with
   * `EVTCHNOP_bind_interdomain` (Xen's frontend/backend handshake); -1 otherwise.
   */
  readonly backendPort: number;
}

/** The devices the host built. */
export interface BootDevices {
  /** The timer device (`pv`: none, `base` 0). */
  readonly timer: BootDevice & { readonly kind: TimeMode };
  /** The emulated interrupt controller's ports, or null with event channels. */
  readonly pic: { readonly base: number } | null;
  /** The NIC, or null. */
  readonly net: (BootDevice & { readonly kind: NetMode }) | null;
  /** The disk, or null. */
  readonly blk: BootDevice | null;
}

/** Everything the guest kernel learns at boot. */
export interface BootInfo {
  /** The configuration. */
  readonly config: ResolvedConfig;
  /** Pages of guest RAM. */
  readonly ramPages: number;
  /** Where memory is (for {@link guestMemoryViews}). */
  readonly memory: GuestMemoryLayout;
  /** Guest-physical address of `mfn_list` (one `u32` per guest frame). */
  readonly mfnListGpa: number;
  /** First guest frame the kernel may use. */
  readonly firstFreePfn: number;
  /** Offset of this vCPU's `vcpu_info` in the shared-info page. */
  readonly vcpuInfoOffset: number;
  /** TSC frequency in kHz (Xen's CPUID leaf / a calibrated value). */
  readonly tscKhz: number;
  /** Domain id of the backend that owns the devices' event channels (-1 without). */
  readonly backendDomid: number;
  /** The devices. */
  readonly devices: BootDevices;
  /** The guest's IPv4 address (dotted quad). */
  readonly guestIp: string;
  /** The host's IPv4 address: a `HostResponder` (ARP, ICMP echo, UDP sink). */
  readonly hostIp: string;
}
