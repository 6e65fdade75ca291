/**
 * `iret` (xen/arch/x86/pv/iret.c `do_iret`; reference §1.2: the one hypercall entered by a
 * jump, with its frame on the guest stack). PV-only (xen/include/hypercall-defs.c): the
 * dispatcher's HVM table has no entry for it. Inside a multicall an `iret` ends the batch
 * (XSA-213, reference §5.1; see `hv/multicall.ts`).
 *
 * Guest kernel counterpart: the return-to-user path (`xen_iret`).
 *
 * @module
 */

import { IretContextLayout } from "../abi.js";
import type { Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypercallContext } from "./hypercall.js";

const EFAULT = -XenErrno.EFAULT;

/**
 * `HYPERVISOR_iret`: returns to the context described by an `iret_context`. In this model the
 * frame's guest-physical address is the first argument (Xen reads it from the stack). An
 * RPL-3 `cs` switches the vCPU to user mode, after which hypercalls are refused until it
 * enters the kernel again.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; argument 0: guest address of the `iret_context`
 * @returns 0 or `-EFAULT`
 */
export function doIret(hv: HypercallContext, v: Vcpu): number {
  const cs = hv.readGuestU32(v.domain, hv.regNum(v, 0) + IretContextLayout.cs);
  if (cs < 0) return hv.fail(EFAULT, "iret frame is not guest memory");
  if ((cs & 3) === 3) v.kernelMode = false;
  return 0;
}
