/**
 * `Domain` and `Vcpu`: what the hypervisor keeps per guest and per virtual CPU — the
 * pseudo-physical→machine map, the shared-info page, event-channel ports, timers, the
 * current base pointer (CR3) and the TLB (Xen's `struct domain` / `struct vcpu`,
 * xen/include/xen/sched.h).
 *
 * This file sits below the hypervisor: it depends on no hypercall family, on neither the PV MMU
 * nor the dispatcher, and of its owner it uses only `machineView` and `identityResolver` (for
 * the page walk of {@link Vcpu.translate}). Its one reference to `hypervisor.ts` is the
 * `import type` that names the public {@link Domain.hypervisor} property; it is erased at
 * runtime (test/import-graph.test.ts allows exactly that edge).
 *
 * @module
 */

import { NR_VIRQS, PAGE_SIZE } from "./abi.js";
import type { Hypervisor } from "./hypervisor.js";
import {
  ACCESS_WRITE,
  FAULT_NON_CANONICAL,
  FAULT_NOT_PRESENT,
  FAULT_RESERVED,
  isCanonical,
  TLB_MISS,
  Tlb,
  tlbTranslate,
  vaTo48,
  type WalkOut,
  walk,
} from "./paging.js";

/** A PV guest (the PV MMU and PV-only hypercalls) or an HVM guest (translated, emulated MMU). */
export type DomainKind = "pv" | "hvm";

/** Event-channel port states (`ECS_*` in xen/include/xen/sched.h). */
export const ECS_FREE = 0;
/** Allocated, waiting for a remote domain to bind. */
export const ECS_UNBOUND = 1;
/** Connected to a port of another domain. */
export const ECS_INTERDOMAIN = 2;
/** Bound to a virtual IRQ. */
export const ECS_VIRQ = 4;
/** Bound to an inter-processor interrupt. */
export const ECS_IPI = 5;

/** Called when Xen delivers an event upcall to a vCPU (the guest's event callback). */
export type UpcallHandler = (vcpu: Vcpu) => void;

/** One virtual CPU. */
export class Vcpu {
  /**
   * Hypercall argument registers RDI, RSI, RDX, R10, R8 as (low, high) 32-bit word pairs:
   * `regs[2*i]` is the low word of argument `i`, `regs[2*i+1]` the high word.
   */
  readonly regs = new Uint32Array(10);
  /** Whether the vCPU runs its guest kernel (hypercalls are kernel-only). */
  kernelMode = true;
  /** Machine frame of the current L4 (`guest_table`), or -1. Holds an L4 type reference. */
  cr3 = -1;
  /** Machine frame of the user L4 (`guest_table_user`), or -1. */
  cr3User = -1;
  /** The TLB of this vCPU. */
  readonly tlb: Tlb;
  /** Set while a multicall runs on this vCPU (nested multicall is refused). */
  inMulticall = false;
  /** Work units done by the current hypercall invocation (for preemption). */
  work = 0;
  /** Absolute deadline of the single-shot timer in ns, or -1. */
  singleshotDeadline = -1;
  /** Period of the periodic timer in ns, or 0 when stopped. */
  periodicPeriod = 0;
  /** Next periodic expiry in ns. */
  periodicNext = -1;
  /** `virq_to_evtchn`: port bound per VIRQ on this vCPU (0 = none). */
  readonly virqToPort = new Int32Array(NR_VIRQS);
  /** Blocked in `SCHEDOP_block` until an event arrives. */
  blocked = false;
  /** Upcalls delivered. */
  upcalls = 0;
  /** VIRQ_TIMER events sent to this vCPU. */
  timerEvents = 0;
  /** Memory references made by page walks on TLB misses (4 per walk for 4-level tables). */
  walkRefs = 0;
  /** The guest's event callback, or null. */
  onUpcall: UpcallHandler | null = null;
  /** True while the upcall handler runs (no re-entry). */
  inUpcall = false;
  private readonly out: WalkOut = { frame: 0, perms: 0, refs: 0 };

  /**
   * @param id - vCPU id within the domain
   * @param domain - the owner
   * @param tlbEntries - TLB size
   */
  constructor(
    readonly id: number,
    readonly domain: Domain,
    tlbEntries: number,
  ) {
    this.tlb = new Tlb(tlbEntries);
  }

  /** Machine address of this vCPU's `vcpu_info` in the shared-info page. */
  get vcpuInfoMa(): number {
    return this.domain.sharedInfoMfn * PAGE_SIZE + this.id * 64;
  }

  /**
   * Simulates a guest entry to kernel mode (a syscall or interrupt taken while in user mode).
   */
  enterKernel(): void {
    this.kernelMode = true;
  }

  /**
   * Translates a guest-virtual address through the PV page tables (CR3) and the TLB, as the
   * CPU does for every memory access of the guest kernel. Sets A/D bits like hardware.
   *
   * @param va - the virtual address (signed register model)
   * @param access - `ACCESS_*` bits
   * @returns the machine address, or a negative `FAULT_*` code
   */
  translate(va: number, access: number): number {
    if (!isCanonical(va)) return FAULT_NON_CANONICAL;
    const lin = vaTo48(va);
    const l4 = Math.floor(lin / 2 ** 39);
    // Xen's own L4 slots are supervisor-only to a PV guest (its kernel runs outside ring 0).
    if (l4 >= 256 && l4 <= 271) return FAULT_RESERVED;
    if (this.cr3 < 0) return FAULT_NOT_PRESENT;
    const hit = tlbTranslate(this.tlb, va, access);
    if (hit !== TLB_MISS) return hit;
    const vpn = Math.floor(lin / PAGE_SIZE);
    const off = lin - vpn * PAGE_SIZE;
    const hv = this.domain.hypervisor;
    const rc = walk(hv.machineView, this.cr3, lin, access, hv.identityResolver, this.out);
    this.walkRefs += this.out.refs;
    if (rc < 0) return rc;
    this.tlb.insert(vpn, this.out.frame, this.out.perms);
    return this.out.frame * PAGE_SIZE + off;
  }

  /**
   * Writes a 32-bit value through a virtual address (a guest-kernel store).
   *
   * @returns 0, or a `FAULT_*` code
   */
  storeU32(va: number, value: number): number {
    const ma = this.translate(va, ACCESS_WRITE);
    if (ma < 0) return ma;
    this.domain.hypervisor.machineView.setUint32(ma, value >>> 0, true);
    return 0;
  }

  /**
   * Reads a 32-bit value through a virtual address (a guest-kernel load).
   *
   * @returns the value, or a negative `FAULT_*` code
   */
  loadU32(va: number): number {
    const ma = this.translate(va, 0);
    if (ma < 0) return ma;
    return this.domain.hypervisor.machineView.getUint32(ma, true);
  }
}

/** Configuration of a new domain. */
export interface DomainConfig {
  /** Pages of pseudo-physical memory. */
  readonly pages: number;
  /** Number of vCPUs (1..32, default 1). */
  readonly vcpus?: number;
  /** `"pv"` (default) or `"hvm"`. */
  readonly kind?: DomainKind;
  /** A privileged (dom0-like) domain: may act on other domains' memory. */
  readonly privileged?: boolean;
  /** For diagnostics. */
  readonly name?: string;
}

/** A guest. */
export class Domain {
  /** Pseudo-physical frame → machine frame (`p2m`); -1 for holes. */
  readonly p2m: Int32Array;
  /** The vCPUs. */
  readonly vcpus: Vcpu[] = [];
  /** Event-channel port state (`ECS_*`). */
  readonly portState: Uint8Array;
  /** vCPU notified for each port. */
  readonly portVcpu: Uint8Array;
  /** VIRQ bound to each port (for `ECS_VIRQ`). */
  readonly portVirq: Uint8Array;
  /** Remote domain of each port (`ECS_UNBOUND`/`ECS_INTERDOMAIN`). */
  readonly portRemoteDom: Int32Array;
  /** Remote port (`ECS_INTERDOMAIN`). */
  readonly portRemotePort: Int32Array;
  /** Bytes the guest wrote with `CONSOLEIO_write` (bounded: the oldest are dropped). */
  console = "";
  /** `SHUTDOWN_*` reason once the guest shut down, else -1. */
  shutdownReason = -1;
  /** Whether a privileged (dom0-like) domain. */
  readonly privileged: boolean;
  /** `"pv"` or `"hvm"`. */
  readonly kind: DomainKind;
  /** Name for diagnostics. */
  readonly name: string;

  /**
   * Created by {@link Hypervisor.createDomain}.
   *
   * @param hypervisor - the owner
   * @param id - domain id
   * @param config - the configuration
   * @param frames - machine frames, one per pseudo-physical page
   * @param sharedInfoMfn - the shared-info frame
   * @param tlbEntries - TLB size per vCPU
   * @param maxPorts - event-channel ports
   */
  constructor(
    readonly hypervisor: Hypervisor,
    readonly id: number,
    config: DomainConfig,
    frames: Int32Array,
    readonly sharedInfoMfn: number,
    tlbEntries: number,
    maxPorts: number,
  ) {
    this.p2m = frames;
    this.kind = config.kind ?? "pv";
    this.privileged = config.privileged ?? false;
    this.name = config.name ?? `d${id}`;
    const n = Math.max(1, Math.min(32, config.vcpus ?? 1));
    for (let i = 0; i < n; i++) this.vcpus.push(new Vcpu(i, this, tlbEntries));
    this.portState = new Uint8Array(maxPorts);
    this.portVcpu = new Uint8Array(maxPorts);
    this.portVirq = new Uint8Array(maxPorts);
    this.portRemoteDom = new Int32Array(maxPorts).fill(-1);
    this.portRemotePort = new Int32Array(maxPorts);
  }

  /** Pages of pseudo-physical memory. */
  get nrPages(): number {
    return this.p2m.length;
  }

  /** Machine address of the shared-info page. */
  get sharedInfoMa(): number {
    return this.sharedInfoMfn * PAGE_SIZE;
  }

  /**
   * Machine frame of a pseudo-physical frame.
   *
   * @param pfn - pseudo-physical frame number
   * @returns the machine frame, or -1 when outside the domain
   */
  pfnToMfn(pfn: number): number {
    if (!(pfn >= 0 && pfn < this.p2m.length) || Math.floor(pfn) !== pfn) return -1;
    return this.p2m[pfn]!;
  }

  /**
   * Machine address of a guest-physical address.
   *
   * @param gpa - guest (pseudo-)physical address
   * @returns the machine address, or -1
   */
  gpaToMa(gpa: number): number {
    if (!(gpa >= 0) || Math.floor(gpa) !== gpa) return -1;
    const pfn = Math.floor(gpa / PAGE_SIZE);
    const mfn = this.pfnToMfn(pfn);
    return mfn < 0 ? -1 : mfn * PAGE_SIZE + (gpa - pfn * PAGE_SIZE);
  }
}
