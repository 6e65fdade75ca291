/**
 * The guest kernel's hypercall library (what Linux keeps in `arch/x86/xen/`), over the
 * `Cpu`: every hypercall is one `HYPERCALL` exit carrying the hypercall number and the
 * register values; argument structures (`mmu_update` requests, `mmuext_op`, multicall
 * entries, event-channel structures) are laid out in guest RAM exactly as Xen's public
 * headers define them (layouts from `@pvkit/hypercall`'s ABI) and only their
 * guest-physical addresses travel — as on real hardware.
 *
 * `mmu_update` requests are queued in a batch and sent in one exit, as Linux's lazy MMU
 * mode does (arch/x86/xen/multicalls.c): the batch holds {@link DEFAULT_MMU_BATCH}
 * requests (`MC_ARGS = MC_BATCH × 16` bytes with `MC_BATCH` 32), and a pending `mmuext_op`
 * (a TLB flush, a new base pointer) rides in the same `multicall`.
 *
 * Scratch area: three guest pages — small structures, the `mmu_update` batch, the
 * multicall list.
 *
 * @module
 */

import {
  DOMID_SELF,
  EVTCHNOP_bind_interdomain,
  EVTCHNOP_bind_virq,
  EvtchnBindInterdomainLayout,
  EvtchnBindVirqLayout,
  Hypercall,
  MmuextOpLayout,
  MmuUpdateLayout,
  MulticallEntryLayout,
  SCHEDOP_block,
} from "@pvkit/hypercall";
import type { GuestMemory } from "@pvkit/platform";
import { type Cpu, ExitOp } from "../../exit.js";

/** Requests per `mmu_update` batch: Linux's `MC_ARGS` (32 × 16 bytes) of arguments. */
export const DEFAULT_MMU_BATCH = 32;

const PAGE = 4096;
const S_STRUCT = 0x000;
const S_MMUEXT = 0x040;
const S_DONE = 0x080;

/** What failed, for the kernel's panic message. */
export interface HypercallFailure {
  /** Hypercall name. */
  readonly call: string;
  /** Its result (`-errno`). */
  readonly rc: number;
}

/** The guest's Xen hypercalls over the `Cpu`. */
export class XenHypercalls {
  /** The last failed call (set when a method returns a negative result). */
  lastFailure: HypercallFailure | null = null;
  private readonly view: DataView;
  private readonly base: number;
  private readonly batch: number;
  private readonly mc: number;
  private pending = 0;

  /**
   * @param cpu - the CPU
   * @param ram - guest RAM
   * @param scratchGpa - three page-aligned guest pages for argument structures
   * @param batchSize - `mmu_update` requests per batch (1 … 256)
   */
  constructor(
    private readonly cpu: Cpu,
    ram: GuestMemory,
    scratchGpa: number,
    readonly batchSize = DEFAULT_MMU_BATCH,
  ) {
    const r = ram.regions[0]!;
    this.view = r.view;
    this.base = scratchGpa;
    this.batch = scratchGpa + PAGE;
    this.mc = scratchGpa + 2 * PAGE;
    if (!(batchSize >= 1 && batchSize <= PAGE / MmuUpdateLayout.size)) {
      throw new RangeError(`mmu_update batch must hold 1…256 requests, got ${batchSize}`);
    }
  }

  /** One hypercall (one exit). @returns its result */
  call(nr: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0): number {
    return this.cpu.exit(ExitOp.HYPERCALL, nr, a0, a1, a2, a3, a4);
  }

  private fail(call: string, rc: number): number {
    this.lastFailure = { call, rc };
    return rc;
  }

  private u64(at: number, value: number): void {
    const hi = Math.floor(value / 2 ** 32);
    this.view.setUint32(at, value - hi * 2 ** 32, true);
    this.view.setUint32(at + 4, hi >>> 0, true);
  }

  // ---------------------------------------------------------------------------------------
  // PV MMU

  /** Requests queued and not sent. */
  get queued(): number {
    return this.pending;
  }

  /**
   * Queues one `MMU_NORMAL_PT_UPDATE` request (`ptr` = machine address of the entry); a
   * full batch is sent first (one exit).
   *
   * @returns 0, or the error of the batch that had to be sent
   */
  queueUpdate(ptrMa: number, lo: number, hi: number): number {
    if (this.pending === this.batchSize) {
      const rc = this.flush(-1, 0);
      if (rc < 0) return rc;
    }
    const at = this.batch + this.pending * MmuUpdateLayout.size;
    this.u64(at + MmuUpdateLayout.ptr, ptrMa);
    this.view.setUint32(at + MmuUpdateLayout.val, lo >>> 0, true);
    this.view.setUint32(at + MmuUpdateLayout.val + 4, hi >>> 0, true);
    this.pending++;
    return 0;
  }

  /**
   * Sends the queued requests, with one `mmuext_op` (`extCmd` ≥ 0) in the same exit: no
   * request and no op → no exit; only one of them → that hypercall; both → a `multicall`
   * of the two (reference §5.1).
   *
   * @param extCmd - an `MMUEXT_*` command, or -1 for none
   * @param extArg - its `arg1` (an mfn or a linear address)
   * @returns 0 or the first error
   */
  flush(extCmd: number, extArg: number): number {
    const n = this.pending;
    this.pending = 0;
    if (n === 0 && extCmd < 0) return 0;
    if (extCmd >= 0) this.layoutMmuext(this.base + S_MMUEXT, extCmd, extArg);
    if (n === 0) {
      const rc = this.call(Hypercall.mmuext_op, this.base + S_MMUEXT, 1, 0, DOMID_SELF);
      return rc < 0 ? this.fail(`mmuext_op(${extCmd})`, rc) : 0;
    }
    this.view.setUint32(this.base + S_DONE, 0, true);
    if (extCmd < 0) {
      const rc = this.call(Hypercall.mmu_update, this.batch, n, this.base + S_DONE, DOMID_SELF);
      return rc < 0 ? this.fail(`mmu_update(${n} requests)`, rc) : 0;
    }
    this.mcEntry(0, Hypercall.mmu_update, this.batch, n, this.base + S_DONE, DOMID_SELF);
    this.mcEntry(1, Hypercall.mmuext_op, this.base + S_MMUEXT, 1, 0, DOMID_SELF);
    const rc = this.call(Hypercall.multicall, this.mc, 2);
    if (rc < 0) return this.fail("multicall", rc);
    const r0 = this.mcResult(0);
    if (r0 < 0) return this.fail(`mmu_update(${n} requests) in a multicall`, r0);
    const r1 = this.mcResult(1);
    return r1 < 0 ? this.fail(`mmuext_op(${extCmd}) in a multicall`, r1) : 0;
  }

  /** One `mmuext_op` now (pending requests go first, in the same exit). */
  mmuext(cmd: number, arg1: number): number {
    return this.flush(cmd, arg1);
  }

  private layoutMmuext(at: number, cmd: number, arg1: number): void {
    this.view.setUint32(at + MmuextOpLayout.cmd, cmd, true);
    this.view.setUint32(at + MmuextOpLayout.cmd + 4, 0, true);
    this.u64(at + MmuextOpLayout.arg1, arg1);
    this.u64(at + MmuextOpLayout.arg2, 0);
  }

  private mcEntry(i: number, op: number, a0: number, a1: number, a2: number, a3: number): void {
    const at = this.mc + i * MulticallEntryLayout.size;
    this.u64(at + MulticallEntryLayout.op, op);
    this.u64(at + MulticallEntryLayout.result, 0);
    this.u64(at + MulticallEntryLayout.args, a0);
    this.u64(at + MulticallEntryLayout.args + 8, a1);
    this.u64(at + MulticallEntryLayout.args + 16, a2);
    this.u64(at + MulticallEntryLayout.args + 24, a3);
    this.u64(at + MulticallEntryLayout.args + 32, 0);
  }

  private mcResult(i: number): number {
    const at = this.mc + i * MulticallEntryLayout.size + MulticallEntryLayout.result;
    const lo = this.view.getUint32(at, true);
    const hi = this.view.getUint32(at + 4, true);
    return hi >= 0x8000_0000 ? (hi - 2 ** 32) * 2 ** 32 + lo : hi * 2 ** 32 + lo;
  }

  // ---------------------------------------------------------------------------------------
  // Time, events, scheduling

  /** `HYPERVISOR_set_timer_op(timeout)`: absolute ns, 0 cancels. */
  setTimerOp(deadlineNs: number): number {
    const rc = this.call(Hypercall.set_timer_op, deadlineNs);
    return rc < 0 ? this.fail("set_timer_op", rc) : rc;
  }

  /** `EVTCHNOP_bind_virq` on vCPU 0. @returns the port or `-errno` */
  bindVirq(virq: number): number {
    const at = this.base + S_STRUCT;
    this.view.setUint32(at + EvtchnBindVirqLayout.virq, virq, true);
    this.view.setUint32(at + EvtchnBindVirqLayout.vcpu, 0, true);
    this.view.setUint32(at + EvtchnBindVirqLayout.port, 0, true);
    const rc = this.call(Hypercall.event_channel_op, EVTCHNOP_bind_virq, at);
    if (rc < 0) return this.fail(`bind_virq(${virq})`, rc);
    return this.view.getUint32(at + EvtchnBindVirqLayout.port, true);
  }

  /** `EVTCHNOP_bind_interdomain` to a backend's unbound port. @returns the local port or `-errno` */
  bindInterdomain(remoteDom: number, remotePort: number): number {
    const at = this.base + S_STRUCT;
    this.view.setUint32(at + EvtchnBindInterdomainLayout.remote_dom, remoteDom & 0xffff, true);
    this.view.setUint32(at + EvtchnBindInterdomainLayout.remote_port, remotePort, true);
    this.view.setUint32(at + EvtchnBindInterdomainLayout.local_port, 0, true);
    const rc = this.call(Hypercall.event_channel_op, EVTCHNOP_bind_interdomain, at);
    if (rc < 0) return this.fail(`bind_interdomain(${remoteDom}, ${remotePort})`, rc);
    return this.view.getUint32(at + EvtchnBindInterdomainLayout.local_port, true);
  }

  /** `SCHEDOP_block`: idle until an event (re-enables upcalls). */
  block(): number {
    const rc = this.call(Hypercall.sched_op, SCHEDOP_block, 0);
    return rc < 0 ? this.fail("sched_op(block)", rc) : rc;
  }
}
