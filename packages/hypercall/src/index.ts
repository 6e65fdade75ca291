/**
 * `@pvkit/hypercall`: a Xen-style paravirtual interface and its emulated counterparts.
 *
 * @packageDocumentation
 * @module @pvkit/hypercall
 */

export * from "./abi.js";
export * from "./client.js";
export * from "./clock.js";
export * from "./domain.js";
export * from "./emulated/hap-mmu.js";
export * from "./emulated/shadow-mmu.js";
export * from "./emulated/timers.js";
export * from "./errors.js";
export * from "./frames.js";
export * from "./guest-mmu.js";
export * from "./guest-phys.js";
export * from "./hv/core.js";
export type { HypercallContext, HypercallHandler } from "./hv/hypercall.js";
export * from "./hypervisor.js";
export * from "./paging.js";
export * from "./port.js";
export * from "./pv-mm.js";
