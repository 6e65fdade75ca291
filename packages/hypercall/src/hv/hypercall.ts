/**
 * The contract between the dispatcher in `hypervisor.ts` and the hypercall families in
 * `hv/*.ts`: a family exports handlers of type {@link HypercallHandler}, and the dispatcher
 * keeps one table of them indexed by hypercall number — Xen's `pv_hypercall_table` /
 * `hvm_hypercall_table`, generated from xen/include/hypercall-defs.c (reference §1.1).
 *
 * @module
 */

import type { PvClockScale, PvClockWriter } from "../clock.js";
import type { Domain, Vcpu } from "../domain.js";
import type { PvMm } from "../pv-mm.js";
import type { HypervisorCore } from "./core.js";

/**
 * The hypervisor as a hypercall handler sees it: {@link HypervisorCore} plus the PV MMU, the
 * dispatcher (for `multicall`) and the timekeeping state the time family publishes from.
 * {@link Hypervisor} implements it.
 */
export interface HypercallContext extends HypervisorCore {
  /** The PV MMU (xen/arch/x86/mm.c). */
  readonly mm: PvMm;
  /** TSC→ns scale published in every `vcpu_time_info`. */
  readonly timeScale: PvClockScale;
  /**
   * Every domain, indexed by id (null for a destroyed one), for the timer scan. Read-only to
   * the families; only the `Hypervisor` adds domains.
   */
  readonly domains: readonly (Domain | null)[];
  /** The `vcpu_time_info` writer of each vCPU (created with its domain). */
  readonly clockWriters: ReadonlyMap<Vcpu, PvClockWriter>;
  /** Clock time of the last `vcpu_time_info` publication, ns. */
  lastTimePublish: number;

  /**
   * Runs the handler of hypercall `op` with its arguments in `v.regs`: no user-mode check,
   * no counting, no upcall delivery (`multicall` runs each entry through this).
   *
   * @param v - the calling vCPU
   * @param op - hypercall number
   * @returns the result (`>= 0`, `-errno`, or `-ERESTART` with a continuation in `v.regs`)
   */
  dispatch(v: Vcpu, op: number): number;
}

/**
 * One hypercall's handler (`do_<name>` in Xen). It decodes its own arguments from `v.regs`
 * (use {@link HypervisorCore.regNum} for signed 64-bit values) and returns `>= 0` or
 * `-errno`, never throwing; `-ERESTART` means it rewrote `v.regs` with its continuation
 * (reference §1.4). A plain function, so the table holds no closures and a call allocates
 * nothing.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU (its domain is the caller's)
 * @returns the result
 */
export type HypercallHandler = (hv: HypercallContext, v: Vcpu) => number;
