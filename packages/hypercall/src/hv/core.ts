/**
 * What every part of the hypervisor shares: its options and {@link HypervisorCore}, the
 * interface through which the PV MMU (`pv-mm.ts`) and the hypercall families (`hv/*.ts`)
 * reach the {@link Hypervisor}'s state — machine memory, the frame table, domains — and the
 * helpers they all use (argument registers, guest-memory copies, `fail`, preemption).
 *
 * In Xen these are the globals and helpers every hypercall source file includes
 * (`frame_table`, `rcu_lock_domain_by_id`, `copy_from_guest`, `hypercall_preempt_check`,
 * `gdprintk`). Depending on this interface instead of the `Hypervisor` class keeps the
 * import graph one-way: `hypervisor.ts` → families → `hv/core.ts` → `domain.ts`.
 *
 * @module
 */

import type { GuestMemory } from "@pvkit/platform";
import type { Clock } from "../clock.js";
import type { Domain, Vcpu } from "../domain.js";
import type { PageTypeTable } from "../frames.js";

/** Options of a {@link Hypervisor}. */
export interface HypervisorOptions {
  /** Machine memory in 4 KiB frames (default 16384 = 64 MiB). */
  readonly machinePages?: number;
  /** Back machine memory with a `SharedArrayBuffer` (default false). */
  readonly shared?: boolean;
  /** Time source (default a {@link ManualClock} at 0). */
  readonly clock?: Clock;
  /** TSC frequency in kHz (default 2 500 000 = 2.5 GHz). */
  readonly tscKhz?: number;
  /** `pv-linear-pt` (default true, as in Xen). */
  readonly linearPageTables?: boolean;
  /**
   * Refuse `MMUEXT_NEW_BASEPTR` unless the frame is a pinned, validated L4 (default true).
   * With false, Xen's own behaviour: the base pointer's L4 is validated on demand.
   */
  readonly strictBasePtr?: boolean;
  /** Preempt long batches after this many elements per invocation (default: never). */
  readonly preemptAfter?: number;
  /** TLB entries per vCPU (default 1024). */
  readonly tlbEntries?: number;
  /** Event-channel ports per domain (default and maximum 4096, the 2-level ABI). */
  readonly maxPorts?: number;
  /** Console bytes kept per domain (default 65536). */
  readonly consoleLimit?: number;
}

/** Resolved options. */
export interface ResolvedHypervisorOptions {
  /** See {@link HypervisorOptions.machinePages}. */
  readonly machinePages: number;
  /** See {@link HypervisorOptions.tscKhz}. */
  readonly tscKhz: number;
  /** See {@link HypervisorOptions.linearPageTables}. */
  readonly linearPageTables: boolean;
  /** See {@link HypervisorOptions.strictBasePtr}. */
  readonly strictBasePtr: boolean;
  /** See {@link HypervisorOptions.preemptAfter}. */
  readonly preemptAfter: number;
  /** See {@link HypervisorOptions.tlbEntries}. */
  readonly tlbEntries: number;
  /** See {@link HypervisorOptions.maxPorts}. */
  readonly maxPorts: number;
  /** See {@link HypervisorOptions.consoleLimit}. */
  readonly consoleLimit: number;
}

/**
 * The hypervisor as the PV MMU and every hypercall family see it: machine memory, the frame
 * table, domains, and the shared helpers. {@link Hypervisor} implements it; the members carry
 * the same documentation there.
 *
 * Guest handles are guest-physical (pseudo-physical) addresses in this model, translated
 * through the domain's p2m; every copy helper refuses (returns -1) anything outside it, as
 * Xen's `copy_from_guest` / `copy_to_guest` fail with `-EFAULT` (reference §1.3).
 */
export interface HypervisorCore {
  /** Machine memory (host RAM). */
  readonly memory: GuestMemory;
  /** Little-endian view of machine memory. */
  readonly machineView: DataView;
  /** Bytes of machine memory. */
  readonly machineBytes: Uint8Array;
  /** 32-bit words of machine memory (for `Atomics`, e.g. pvclock). */
  readonly machineWords: Int32Array;
  /**
   * Machine memory is a `SharedArrayBuffer` (a guest may run in another thread): the
   * event-channel bits are then updated with `Atomics`, else with plain accesses.
   */
  readonly machineShared: boolean;
  /** The frame table (`frame_table`, `struct page_info`; reference §2.4). */
  readonly frames: PageTypeTable;
  /** Machine-to-phys table (`MMU_MACHPHYS_UPDATE`), -1 when unset. */
  readonly m2p: Float64Array;
  /** The time source. */
  readonly clock: Clock;
  /** Resolved options. */
  readonly options: ResolvedHypervisorOptions;

  /**
   * Looks a domain up (`rcu_lock_domain_by_id`).
   *
   * @param id - domain id
   * @returns the domain or null
   */
  domainById(id: number): Domain | null;

  /**
   * Records a refusal and returns its code (what `gdprintk` would have logged).
   *
   * @param rc - the `-errno`
   * @param message - what the guest did
   * @returns `rc`
   */
  fail(rc: number, message: string): number;

  /** Flushes every vCPU's TLB of every domain. */
  flushAllTlbs(): void;

  /**
   * Flushes the TLBs of a domain's vCPUs.
   *
   * @param d - the domain
   */
  flushDomainTlbs(d: Domain): void;

  /**
   * `hypercall_preempt_check()`: true when the current invocation did enough work
   * (reference §1.4).
   *
   * @param v - the vCPU
   * @returns whether to create a continuation now
   */
  preemptCheck(v: Vcpu): boolean;

  /**
   * A register as a signed number.
   *
   * @param v - the vCPU
   * @param i - argument index 0..4
   * @returns the value, or NaN when it is not a safe integer
   */
  regNum(v: Vcpu, i: number): number;

  /**
   * Sets a register from a signed safe integer (`hypercall_create_continuation` rewrites
   * arguments this way; reference §1.4).
   *
   * @param v - the vCPU
   * @param i - argument index
   * @param value - the value
   */
  setRegNum(v: Vcpu, i: number, value: number): void;

  /**
   * Reads a little-endian u32 of guest-physical memory.
   *
   * @param d - the domain
   * @param gpa - guest-physical address
   * @returns the value, or -1 when the address is not the domain's
   */
  readGuestU32(d: Domain, gpa: number): number;

  /**
   * Reads a little-endian u64 into `out[0]` (low) and `out[1]` (high).
   *
   * @param d - the domain
   * @param gpa - guest-physical address
   * @param out - receives the two words
   * @returns 0, or -1 when the address is not the domain's
   */
  readGuestU64(d: Domain, gpa: number, out: Uint32Array): number;

  /**
   * Writes a little-endian u32 to guest-physical memory (a `copy_to_guest`).
   *
   * @param d - the domain
   * @param gpa - guest-physical address
   * @param value - the value
   * @returns 0, or -1 when any byte is not the domain's (then nothing is written)
   */
  writeGuestU32(d: Domain, gpa: number, value: number): number;

  /**
   * Writes a little-endian u64 given as two words.
   *
   * @param d - the domain
   * @param gpa - guest-physical address
   * @param lo - low word
   * @param hi - high word
   * @returns 0 or -1 (nothing written)
   */
  writeGuestU64(d: Domain, gpa: number, lo: number, hi: number): number;

  /**
   * Whether `[gpa, gpa + length)` is entirely the domain's memory (`guest_handle_okay`).
   *
   * @param d - the domain
   * @param gpa - guest-physical address
   * @param length - bytes
   * @returns true when every page of the range is mapped in the domain's p2m
   */
  guestRangeOk(d: Domain, gpa: number, length: number): boolean;
}
