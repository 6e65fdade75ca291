/**
 * Memory-management hypercalls: `mmu_update`, `mmuext_op`, `update_va_mapping`
 * (xen/arch/x86/mm.c `do_mmu_update`, `do_mmuext_op`, `do_update_va_mapping`; reference §2).
 * These handlers decode the registers and hand over to the PV MMU ({@link PvMm}, `pv-mm.ts`),
 * which holds the page-type rules. All three are PV-only (xen/include/hypercall-defs.c): the
 * dispatcher's HVM table has no entry for them.
 *
 * Guest kernel counterpart: the `mmu` pv_ops (`HypercallClient.flushUpdates`, `pin`,
 * `newBaseptr`, `updateVaMapping`).
 *
 * @module
 */

import type { Vcpu } from "../domain.js";
import type { HypercallContext } from "./hypercall.js";

/**
 * `HYPERVISOR_mmu_update(reqs, count, pdone, foreigndom)` (reference §2.1): a batch of
 * `{ptr, val}` requests, preemptible with `MMU_UPDATE_PREEMPTED` continuations (§1.4).
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU
 * @returns 0 or `-errno`
 */
export function doMmuUpdate(hv: HypercallContext, v: Vcpu): number {
  return hv.mm.mmuUpdate(v);
}

/**
 * `HYPERVISOR_mmuext_op(ops, count, pdone, foreigndom)` (reference §2.2): pin/unpin, base
 * pointers, TLB flushes, clear/copy page.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU
 * @returns 0 or `-errno`
 */
export function doMmuextOp(hv: HypercallContext, v: Vcpu): number {
  return hv.mm.mmuextOp(v);
}

/**
 * `HYPERVISOR_update_va_mapping(va, val, flags)` (reference §2.3): `va` is a signed register,
 * `val` the full 64-bit PTE in the second register (both halves), `flags` the `UVMF_*` bits.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU
 * @returns 0 or `-errno`
 */
export function doUpdateVaMapping(hv: HypercallContext, v: Vcpu): number {
  const r = v.regs;
  return hv.mm.updateVaMapping(v, hv.regNum(v, 0), r[2]!, r[3]!, hv.regNum(v, 2));
}
