/**
 * The `Hypervisor`: machine memory and its frame table, domains, the helpers every hypercall
 * family shares, and the dispatcher — a table indexed by hypercall number, as Xen's
 * `pv_hypercall_table` / `hvm_hypercall_table` (generated from xen/include/hypercall-defs.c;
 * reference §1.1). Every hypercall returns a number (`>= 0` or `-errno`, reference §1.3);
 * nothing is thrown into the caller.
 *
 * The families live one per file under `hv/`, as Xen splits them:
 *
 * - `hv/mm.ts` (→ `pv-mm.ts`): `mmu_update`, `mmuext_op`, `update_va_mapping` —
 *   xen/arch/x86/mm.c;
 * - `hv/time.ts`: `set_timer_op`, `vcpu_op`, pvclock, timer expiry — xen/common/sched/core.c,
 *   xen/common/domain.c, xen/common/timer.c, xen/arch/x86/time.c;
 * - `hv/event-channel.ts`: `event_channel_op`, set pending, upcall, VIRQs —
 *   xen/common/event_channel.c, xen/common/event_2l.c;
 * - `hv/multicall.ts`: `multicall` — xen/common/multicall.c;
 * - `hv/sched.ts`: `sched_op` — xen/common/sched/core.c;
 * - `hv/console.ts`: `console_io` — xen/drivers/char/console.c;
 * - `hv/version.ts`: `xen_version` — xen/common/kernel.c;
 * - `hv/iret.ts`: `iret` — xen/arch/x86/pv/iret.c.
 *
 * The families see the hypervisor through {@link HypercallContext} (`hv/hypercall.ts`), the PV
 * MMU through {@link HypervisorCore} (`hv/core.ts`); neither imports this file, and the only
 * reference back to it from below is the `import type` in `domain.ts` that names the public
 * `Domain.hypervisor` property (test/import-graph.test.ts guards this).
 *
 * @module
 */

import { GuestMemory } from "@pvkit/platform";
import {
  DOMID_XEN,
  EVTCHN_2L_NR_CHANNELS,
  Hypercall,
  NR_HYPERCALLS,
  PAGE_SIZE,
  PGT_writable_page,
  VcpuInfoLayout,
} from "./abi.js";
import {
  type Clock,
  ManualClock,
  type PvClockScale,
  PvClockWriter,
  pvclockScale,
} from "./clock.js";
import { Domain, type DomainConfig, type Vcpu } from "./domain.js";
import { XenErrno } from "./errors.js";
import { FRAME_SPECIAL, FRAME_VALIDATED, PageTypeTable } from "./frames.js";
import { doConsoleIo } from "./hv/console.js";
import type { HypervisorOptions, ResolvedHypervisorOptions } from "./hv/core.js";
import {
  deliverEventUpcall,
  doEventChannelOp,
  evtchnSetPending,
  sendGuestVcpuVirq,
} from "./hv/event-channel.js";
import type { HypercallContext, HypercallHandler } from "./hv/hypercall.js";
import { doIret } from "./hv/iret.js";
import { doMmuextOp, doMmuUpdate, doUpdateVaMapping } from "./hv/mm.js";
import { doMulticall } from "./hv/multicall.js";
import { doSchedOp } from "./hv/sched.js";
import {
  doSetTimerOp,
  doVcpuOp,
  fireDueTimers,
  nextTimerDeadline,
  publishDomainTime,
  readTsc,
  runTimersUntil,
} from "./hv/time.js";
import { doXenVersion } from "./hv/version.js";
import type { FrameResolver } from "./paging.js";
import { PvMm } from "./pv-mm.js";

export { TIME_CALIBRATION_NS } from "./hv/time.js";

const EPERM = -XenErrno.EPERM;
const ENOSYS = -XenErrno.ENOSYS;
const ERESTART = -XenErrno.ERESTART;

/**
 * The implemented hypercalls: number, handler, and whether HVM guests may make it (the
 * PV-only ones are marked so in xen/include/hypercall-defs.c; reference §1.1).
 */
const HYPERCALLS: readonly (readonly [op: number, handler: HypercallHandler, hvm: boolean])[] = [
  [Hypercall.mmu_update, doMmuUpdate, false],
  [Hypercall.multicall, doMulticall, true],
  [Hypercall.update_va_mapping, doUpdateVaMapping, false],
  [Hypercall.set_timer_op, doSetTimerOp, true],
  [Hypercall.xen_version, doXenVersion, true],
  [Hypercall.console_io, doConsoleIo, true],
  [Hypercall.iret, doIret, false],
  [Hypercall.vcpu_op, doVcpuOp, true],
  [Hypercall.mmuext_op, doMmuextOp, false],
  [Hypercall.sched_op, doSchedOp, true],
  [Hypercall.event_channel_op, doEventChannelOp, true],
];

/**
 * A dense table of {@link NR_HYPERCALLS} slots (null = `-ENOSYS`) for one guest type.
 *
 * @param hvm - build the HVM table (PV-only hypercalls left out)
 */
function hypercallTable(hvm: boolean): readonly (HypercallHandler | null)[] {
  const table: (HypercallHandler | null)[] = [];
  for (let op = 0; op < NR_HYPERCALLS; op++) table.push(null);
  for (const [op, handler, forHvm] of HYPERCALLS) if (forHvm || !hvm) table[op] = handler;
  return table;
}

/** `pv_hypercall_table`. */
const PV_HYPERCALLS = hypercallTable(false);
/** `hvm_hypercall_table`. */
const HVM_HYPERCALLS = hypercallTable(true);

/** Xen's name of a hypercall number (for refusal messages), or the number. */
function hypercallName(op: number): string {
  for (const [name, n] of Object.entries(Hypercall)) if (n === op) return name;
  return `hypercall ${op}`;
}

/**
 * A Xen-like hypervisor for PV (and, for the emulated MMUs, HVM) guests.
 *
 * @example
 * ```ts
 * const hv = new Hypervisor({ machinePages: 4096 });
 * const dom = hv.createDomain({ pages: 1024 });
 * const port = new HypercallPort(hv, dom.vcpus[0]!);
 * port.call(Hypercall.xen_version, XENVER_version, 0); // (4 << 16) | 20
 * ```
 */
export class Hypervisor implements HypercallContext {
  /** Machine memory (host RAM). */
  readonly memory: GuestMemory;
  /** Little-endian view of machine memory. */
  readonly machineView: DataView;
  /** Bytes of machine memory. */
  readonly machineBytes: Uint8Array;
  /** 32-bit words of machine memory (for `Atomics`, e.g. pvclock). */
  readonly machineWords: Int32Array;
  /** Machine memory is a `SharedArrayBuffer` (see {@link HypervisorCore.machineShared}). */
  readonly machineShared: boolean;
  /** The frame table. */
  readonly frames: PageTypeTable;
  /** Machine-to-phys table (`MMU_MACHPHYS_UPDATE`), -1 when unset. */
  readonly m2p: Float64Array;
  /** The PV MMU. */
  readonly mm: PvMm;
  /** The time source. */
  readonly clock: Clock;
  /** Resolved options. */
  readonly options: ResolvedHypervisorOptions;
  /** TSC→ns scale published in every `vcpu_time_info`. */
  readonly timeScale: PvClockScale;
  /** Hypercalls handled, per number (continuations included). */
  readonly hypercallCounts = new Uint32Array(NR_HYPERCALLS);
  /** Description of the most recent refusal (what the guest did). */
  lastError = "";
  /** Refusals counted. */
  errors = 0;
  /** Resolves an entry's frame as a machine frame (PV tables hold machine frames). */
  readonly identityResolver: FrameResolver;

  private readonly slots: (Domain | null)[] = [];
  private readonly writers = new Map<Vcpu, PvClockWriter>();
  private readonly freeFrames: number[] = [];

  /**
   * Every domain, indexed by id (null for a destroyed one); for the hypercall families (the
   * timer scan). Use {@link allDomains} or {@link domainById} otherwise.
   */
  readonly domains: readonly (Domain | null)[] = this.slots;
  /** The `vcpu_time_info` writer of each vCPU (for `hv/time.ts`). */
  readonly clockWriters: ReadonlyMap<Vcpu, PvClockWriter> = this.writers;
  /** Clock time of the last `vcpu_time_info` publication, ns (kept by `hv/time.ts`). */
  lastTimePublish = 0;

  /** @param options - see {@link HypervisorOptions} */
  constructor(options: HypervisorOptions = {}) {
    const pages = Math.max(16, Math.floor(options.machinePages ?? 16384));
    this.options = {
      machinePages: pages,
      tscKhz: options.tscKhz ?? 2_500_000,
      linearPageTables: options.linearPageTables ?? true,
      strictBasePtr: options.strictBasePtr ?? true,
      preemptAfter: options.preemptAfter ?? Number.POSITIVE_INFINITY,
      tlbEntries: options.tlbEntries ?? 1024,
      maxPorts: Math.min(EVTCHN_2L_NR_CHANNELS, options.maxPorts ?? EVTCHN_2L_NR_CHANNELS),
      consoleLimit: options.consoleLimit ?? 65536,
    };
    this.memory = GuestMemory.create(pages * PAGE_SIZE, { shared: options.shared ?? false });
    const region = this.memory.regions[0]!;
    this.machineView = region.view;
    this.machineBytes = region.bytes;
    this.machineWords = new Int32Array(region.bytes.buffer, region.bytes.byteOffset, pages * 1024);
    this.machineShared = options.shared ?? false;
    this.frames = new PageTypeTable(pages);
    this.m2p = new Float64Array(pages).fill(-1);
    this.clock = options.clock ?? new ManualClock();
    this.timeScale = pvclockScale(this.options.tscKhz * 1000);
    // Frame 0 stays Xen's; the rest are handed out highest first so p2m is not the identity.
    this.frames.assign(0, DOMID_XEN);
    for (let m = 1; m < pages; m++) this.freeFrames.push(m);
    const frames = this.frames;
    this.identityResolver = (frame) => (frame < frames.frames ? frame : -1);
    this.mm = new PvMm(this);
  }

  // ---------------------------------------------------------------------------------------
  // Frames and domains

  /**
   * Takes a free machine frame (zeroed) for an owner.
   *
   * @param owner - domain id or `DOMID_XEN`
   * @returns the frame, or -1 when machine memory is exhausted
   */
  allocFrame(owner: number): number {
    const mfn = this.freeFrames.pop();
    if (mfn === undefined) return -1;
    this.machineBytes.fill(0, mfn * PAGE_SIZE, (mfn + 1) * PAGE_SIZE);
    this.frames.assign(mfn, owner);
    return mfn;
  }

  /** Free machine frames left. */
  get freeFrameCount(): number {
    return this.freeFrames.length;
  }

  /**
   * Builds a domain: its pages, the shared-info page (a Xen heap page the guest may map, of
   * permanent type writable), per-vCPU `vcpu_time_info`.
   *
   * @param config - the domain
   * @returns the domain
   * @throws Error when machine memory is too small (a host configuration error)
   */
  createDomain(config: DomainConfig): Domain {
    const pages = Math.floor(config.pages);
    if (!(pages > 0) || pages + 1 > this.freeFrames.length) {
      throw new Error(`cannot give ${config.pages} pages: ${this.freeFrames.length} frames free`);
    }
    const id = this.slots.length;
    const p2m = new Int32Array(pages);
    for (let pfn = 0; pfn < pages; pfn++) {
      const mfn = this.allocFrame(id);
      p2m[pfn] = mfn;
      this.m2p[mfn] = pfn;
    }
    const si = this.allocFrame(id);
    this.frames.flags[si] = FRAME_SPECIAL | FRAME_VALIDATED;
    this.frames.type[si] = PGT_writable_page;
    this.frames.typeCount[si] = 1;
    const d = new Domain(this, id, config, p2m, si, this.options.tlbEntries, this.options.maxPorts);
    this.slots.push(d);
    for (const v of d.vcpus) {
      this.machineBytes[v.vcpuInfoMa + VcpuInfoLayout.evtchn_upcall_mask] = 1;
      const w = new PvClockWriter(this.machineWords, v.vcpuInfoMa + VcpuInfoLayout.time);
      this.writers.set(v, w);
    }
    publishDomainTime(this, d);
    return d;
  }

  /**
   * Looks a domain up.
   *
   * @param id - domain id
   * @returns the domain or null
   */
  domainById(id: number): Domain | null {
    return this.slots[id] ?? null;
  }

  /** Every domain. */
  get allDomains(): readonly Domain[] {
    return this.slots.filter((d): d is Domain => d !== null);
  }

  // ---------------------------------------------------------------------------------------
  // Diagnostics, TLBs, preemption

  /**
   * Records a refusal and returns its code (what `gdprintk` would have logged).
   *
   * @param rc - the `-errno`
   * @param message - what the guest did
   * @returns `rc`
   */
  fail(rc: number, message: string): number {
    this.errors++;
    this.lastError = message;
    return rc;
  }

  /** Flushes every vCPU's TLB of every domain. */
  flushAllTlbs(): void {
    for (const d of this.slots) if (d) for (const v of d.vcpus) v.tlb.flushAll();
  }

  /** Flushes the TLBs of a domain's vCPUs. */
  flushDomainTlbs(d: Domain): void {
    for (const v of d.vcpus) v.tlb.flushAll();
  }

  /**
   * `hypercall_preempt_check()`: true when the current invocation did enough work.
   *
   * @param v - the vCPU
   * @returns whether to create a continuation now
   */
  preemptCheck(v: Vcpu): boolean {
    return ++v.work > this.options.preemptAfter;
  }

  // ---------------------------------------------------------------------------------------
  // Guest memory (guest handles are guest-physical addresses in this model)

  /**
   * Reads a little-endian u32 of guest-physical memory.
   *
   * @returns the value, or -1 when the address is not the domain's
   */
  readGuestU32(d: Domain, gpa: number): number {
    const ma = d.gpaToMa(gpa);
    if (ma < 0) return -1;
    if ((gpa & 0xfff) <= PAGE_SIZE - 4) return this.machineView.getUint32(ma, true);
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const b = d.gpaToMa(gpa + i);
      if (b < 0) return -1;
      v += this.machineBytes[b]! * 2 ** (8 * i);
    }
    return v;
  }

  /**
   * Reads a little-endian u64 into `out[0]` (low) and `out[1]` (high).
   *
   * @returns 0, or -1 when the address is not the domain's
   */
  readGuestU64(d: Domain, gpa: number, out: Uint32Array): number {
    const lo = this.readGuestU32(d, gpa);
    if (lo < 0) return -1;
    const hi = this.readGuestU32(d, gpa + 4);
    if (hi < 0) return -1;
    out[0] = lo;
    out[1] = hi;
    return 0;
  }

  /**
   * Writes a little-endian u32 to guest-physical memory (a `copy_to_guest`).
   *
   * @returns 0, or -1 when any byte is not the domain's (then nothing is written)
   */
  writeGuestU32(d: Domain, gpa: number, value: number): number {
    const ma = d.gpaToMa(gpa);
    if (ma < 0) return -1;
    if ((gpa & 0xfff) <= PAGE_SIZE - 4) {
      this.machineView.setUint32(ma, value >>> 0, true);
      return 0;
    }
    for (let i = 0; i < 4; i++) if (d.gpaToMa(gpa + i) < 0) return -1;
    for (let i = 0; i < 4; i++) this.machineBytes[d.gpaToMa(gpa + i)] = (value >>> (8 * i)) & 0xff;
    return 0;
  }

  /**
   * Writes a little-endian u64 given as two words.
   *
   * @returns 0 or -1 (nothing written)
   */
  writeGuestU64(d: Domain, gpa: number, lo: number, hi: number): number {
    if (d.gpaToMa(gpa) < 0 || d.gpaToMa(gpa + 7) < 0) return -1;
    this.writeGuestU32(d, gpa, lo);
    this.writeGuestU32(d, gpa + 4, hi);
    return 0;
  }

  /**
   * Whether `[gpa, gpa + length)` is entirely the domain's memory.
   *
   * @returns true when every page of the range is mapped in the domain's p2m
   */
  guestRangeOk(d: Domain, gpa: number, length: number): boolean {
    if (!(length >= 0) || d.gpaToMa(gpa) < 0) return false;
    if (length === 0) return true;
    const last = gpa + length - 1;
    if (!Number.isSafeInteger(last)) return false;
    for (let p = Math.floor(gpa / PAGE_SIZE); p <= Math.floor(last / PAGE_SIZE); p++) {
      if (d.pfnToMfn(p) < 0) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Registers

  /**
   * A register as a signed number.
   *
   * @param v - the vCPU
   * @param i - argument index 0..4
   * @returns the value, or NaN when it is not a safe integer
   */
  regNum(v: Vcpu, i: number): number {
    const lo = v.regs[2 * i]!;
    const hi = v.regs[2 * i + 1]!;
    const value = hi >= 0x8000_0000 ? (hi - 2 ** 32) * 2 ** 32 + lo : hi * 2 ** 32 + lo;
    return Number.isSafeInteger(value) ? value : Number.NaN;
  }

  /**
   * Sets a register from a signed safe integer (continuations rewrite arguments this way).
   *
   * @param v - the vCPU
   * @param i - argument index
   * @param value - the value
   */
  setRegNum(v: Vcpu, i: number, value: number): void {
    const hi = Math.floor(value / 2 ** 32);
    v.regs[2 * i] = value - hi * 2 ** 32;
    v.regs[2 * i + 1] = hi >>> 0;
  }

  // ---------------------------------------------------------------------------------------
  // Dispatch (the families are in hv/*.ts)

  /**
   * Handles one hypercall of `v` with its arguments already in `v.regs` (the port does
   * that): counts it, refuses it from user mode (`_pv_hypercall`), dispatches, and delivers a
   * pending event upcall on the way out. Returns `-ERESTART` when preempted: the registers
   * then hold the continuation (reference §1.4).
   *
   * @param v - the calling vCPU
   * @param op - hypercall number
   * @returns the result (`>= 0` or `-errno`)
   */
  hypercall(v: Vcpu, op: number): number {
    v.work = 0;
    if (op >= 0 && op < NR_HYPERCALLS) this.hypercallCounts[op]!++;
    if (!v.kernelMode) {
      // Only guest-kernel code may issue hypercalls (_pv_hypercall).
      return this.fail(EPERM, `d${v.domain.id}v${v.id} hypercall ${op} from user mode`);
    }
    const rc = this.dispatch(v, op);
    if (rc !== ERESTART) deliverEventUpcall(this, v);
    return rc;
  }

  /**
   * Runs the handler of hypercall `op` from the table of the caller's guest type (PV or HVM);
   * an unknown number, or a PV-only hypercall from an HVM guest, is `-ENOSYS`. No user-mode
   * check, no counting, no upcall: `multicall` runs its entries through this.
   *
   * @param v - the calling vCPU
   * @param op - hypercall number
   * @returns the result (`>= 0`, `-errno`, or `-ERESTART` with a continuation in `v.regs`)
   */
  dispatch(v: Vcpu, op: number): number {
    const table = v.domain.kind === "pv" ? PV_HYPERCALLS : HVM_HYPERCALLS;
    const handler = op >= 0 && op < NR_HYPERCALLS ? table[op] : undefined;
    if (handler) return handler(this, v);
    if (op >= 0 && op < NR_HYPERCALLS && PV_HYPERCALLS[op]) {
      return this.fail(ENOSYS, `${hypercallName(op)} is PV-only`);
    }
    return this.fail(ENOSYS, `hypercall ${op} is not implemented`);
  }

  // ---------------------------------------------------------------------------------------
  // Time (hv/time.ts)

  /** The TSC the guest reads with RDTSC (no exit for a PV guest with a stable TSC). */
  rdtsc(): number {
    return readTsc(this);
  }

  /**
   * Publishes `vcpu_time_info` for every vCPU of a domain (version protocol, reference §4.1).
   *
   * @param d - the domain
   */
  updateTime(d: Domain): void {
    publishDomainTime(this, d);
  }

  /**
   * Earliest pending timer deadline of any vCPU.
   *
   * @returns ns, or -1 when no timer is armed
   */
  nextDeadline(): number {
    return nextTimerDeadline(this);
  }

  /**
   * Fires every timer due at the clock's current time, earliest deadline first, each as
   * VIRQ_TIMER on its vCPU (`send_timer_event`).
   *
   * @returns timers fired
   */
  poll(): number {
    return fireDueTimers(this);
  }

  /**
   * Advances a {@link ManualClock} to `targetNs`, stopping at every timer deadline on the
   * way so timers fire at their exact time and in order.
   *
   * @param targetNs - time to stop at
   * @returns timers fired
   * @throws Error when the clock is not a ManualClock (use {@link poll} with a real clock)
   */
  runUntil(targetNs: number): number {
    return runTimersUntil(this, targetNs);
  }

  // ---------------------------------------------------------------------------------------
  // Event channels (hv/event-channel.ts)

  /**
   * `evtchn_2l_set_pending`: sets the pending bit; unless masked, sets the selector bit
   * and marks the notified vCPU's upcall pending.
   *
   * @param d - the domain owning the port
   * @param port - the port
   */
  setPending(d: Domain, port: number): void {
    evtchnSetPending(this, d, port);
  }

  /**
   * Delivers the event upcall if `evtchn_upcall_pending` is set and the vCPU has not masked
   * upcalls; like Xen, masks upcalls while the callback runs. Bounded re-delivery.
   *
   * @param v - the vCPU
   */
  deliverUpcall(v: Vcpu): void {
    deliverEventUpcall(this, v);
  }

  /**
   * Sends a virtual IRQ to a vCPU if it is bound (`send_guest_vcpu_virq`); delivers the
   * upcall right away when the vCPU accepts it.
   *
   * @param v - the vCPU
   * @param virq - `VIRQ_*`
   */
  sendVirq(v: Vcpu, virq: number): void {
    sendGuestVcpuVirq(this, v, virq);
  }
}
