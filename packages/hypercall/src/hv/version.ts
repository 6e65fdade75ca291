/**
 * `xen_version` (xen/common/kernel.c `do_xen_version`; xen/include/public/version.h,
 * features.h): the version number, strings, platform parameters, feature bitmap and page size.
 *
 * Guest kernel counterpart: boot-time feature detection (`xen_setup_features`).
 *
 * @module
 */

import {
  PAGE_SIZE,
  XEN_CAPABILITIES_INFO_LEN,
  XEN_CHANGESET_INFO_LEN,
  XEN_EXTRAVERSION_LEN,
  XEN_VERSION_MAJOR,
  XEN_VERSION_MINOR,
  XENFEAT_writable_page_tables,
  XENVER_capabilities,
  XENVER_changeset,
  XENVER_extraversion,
  XENVER_get_features,
  XENVER_pagesize,
  XENVER_platform_parameters,
  XENVER_version,
  XenFeatureInfoLayout,
} from "../abi.js";
import type { Domain, Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypervisorCore } from "./core.js";
import type { HypercallContext } from "./hypercall.js";

const EFAULT = -XenErrno.EFAULT;
const ENOSYS = -XenErrno.ENOSYS;

/**
 * Copies `text` as a NUL-padded 7-bit string of exactly `size` bytes to guest memory.
 *
 * @returns 0, or `-EFAULT` (nothing written) when the range is not the domain's
 */
function writeGuestString(
  hv: HypervisorCore,
  d: Domain,
  gpa: number,
  text: string,
  size: number,
): number {
  if (!hv.guestRangeOk(d, gpa, size)) return EFAULT;
  const bytes = hv.machineBytes;
  for (let i = 0; i < size; i++) {
    bytes[d.gpaToMa(gpa + i)] = i < text.length ? text.charCodeAt(i) & 0x7f : 0;
  }
  return 0;
}

/**
 * `HYPERVISOR_xen_version(cmd, arg)`: `XENVER_version` returns `(major << 16) | minor`; the
 * string commands fill a fixed-size buffer at `arg`; `XENVER_platform_parameters` reports
 * `virt_start` (L4 slot 256, where Xen's range begins); `XENVER_get_features` submap 0 has
 * `XENFEAT_writable_page_tables`; `XENVER_pagesize` returns 4096.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `cmd` (int), `arg` (guest address)
 * @returns the value, 0, or `-errno`
 */
export function doXenVersion(hv: HypercallContext, v: Vcpu): number {
  const cmd = v.regs[0]! | 0;
  const arg = hv.regNum(v, 1);
  const d = v.domain;
  switch (cmd) {
    case XENVER_version:
      return (XEN_VERSION_MAJOR << 16) | XEN_VERSION_MINOR;
    case XENVER_extraversion:
      return writeGuestString(hv, d, arg, "-pvkit", XEN_EXTRAVERSION_LEN);
    case XENVER_capabilities:
      return writeGuestString(hv, d, arg, "xen-3.0-x86_64", XEN_CAPABILITIES_INFO_LEN);
    case XENVER_changeset:
      return writeGuestString(hv, d, arg, "pvkit model", XEN_CHANGESET_INFO_LEN);
    case XENVER_platform_parameters:
      // virt_start: the hypervisor's range starts at L4 slot 256 (0xffff800000000000).
      return hv.writeGuestU64(d, arg, 0, 0xffff_8000) < 0 ? EFAULT : 0;
    case XENVER_get_features: {
      const idx = hv.readGuestU32(d, arg + XenFeatureInfoLayout.submap_idx);
      if (idx < 0) return EFAULT;
      const map = idx === 0 ? 1 << XENFEAT_writable_page_tables : 0;
      return hv.writeGuestU32(d, arg + XenFeatureInfoLayout.submap, map) < 0 ? EFAULT : 0;
    }
    case XENVER_pagesize:
      return PAGE_SIZE;
    default:
      return hv.fail(ENOSYS, `xen_version ${cmd}`);
  }
}
