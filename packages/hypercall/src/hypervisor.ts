/**
 * The `Hypervisor`: machine memory and its frame table, domains, the hypercall dispatcher,
 * event channels (2-level ABI), PV timers and pvclock publication. Every hypercall returns
 * a number (`>= 0` or `-errno`, reference §1.3); nothing is thrown into the caller.
 *
 * @module
 */

import { GuestMemory } from "@pvkit/platform";
import {
  CONSOLEIO_read,
  CONSOLEIO_write,
  DOMID_SELF,
  DOMID_XEN,
  EVTCHN_2L_NR_CHANNELS,
  EVTCHNOP_alloc_unbound,
  EVTCHNOP_bind_interdomain,
  EVTCHNOP_bind_ipi,
  EVTCHNOP_bind_virq,
  EVTCHNOP_close,
  EVTCHNOP_send,
  EVTCHNOP_unmask,
  EvtchnAllocUnboundLayout,
  EvtchnBindInterdomainLayout,
  EvtchnBindIpiLayout,
  EvtchnBindVirqLayout,
  Hypercall,
  IretContextLayout,
  MulticallEntryLayout,
  NR_HYPERCALLS,
  NR_VIRQS,
  PAGE_SIZE,
  PERIODIC_TIMER_MIN_NS,
  PGT_writable_page,
  SCHEDOP_block,
  SCHEDOP_shutdown,
  SCHEDOP_yield,
  SET_TIMER_OP_FALLBACK_NS,
  SET_TIMER_OP_MAX_AHEAD_NS,
  SharedInfoLayout,
  VCPUOP_is_up,
  VCPUOP_set_periodic_timer,
  VCPUOP_set_singleshot_timer,
  VCPUOP_stop_periodic_timer,
  VCPUOP_stop_singleshot_timer,
  VcpuInfoLayout,
  VcpuSetSingleshotTimerLayout,
  VIRQ_DEBUG,
  VIRQ_TIMER,
  VIRQ_XENOPROF,
  VIRQ_XENPMU,
  XEN_CAPABILITIES_INFO_LEN,
  XEN_CHANGESET_INFO_LEN,
  XEN_EXTRAVERSION_LEN,
  XEN_PVCLOCK_TSC_STABLE_BIT,
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
} from "./abi.js";
import {
  type Clock,
  ManualClock,
  nsToTsc,
  type PvClockScale,
  PvClockWriter,
  pvclockScale,
} from "./clock.js";
import {
  Domain,
  type DomainConfig,
  ECS_FREE,
  ECS_INTERDOMAIN,
  ECS_IPI,
  ECS_UNBOUND,
  ECS_VIRQ,
  type Vcpu,
} from "./domain.js";
import { XenErrno } from "./errors.js";
import { FRAME_SPECIAL, FRAME_VALIDATED, PageTypeTable } from "./frames.js";
import type { FrameResolver } from "./paging.js";
import { PvMm } from "./pv-mm.js";

const EINVAL = -XenErrno.EINVAL;
const EPERM = -XenErrno.EPERM;
const EFAULT = -XenErrno.EFAULT;
const ESRCH = -XenErrno.ESRCH;
const ENOSYS = -XenErrno.ENOSYS;
const ENOENT = -XenErrno.ENOENT;
const EEXIST = -XenErrno.EEXIST;
const ENOSPC = -XenErrno.ENOSPC;
const ERESTART = -XenErrno.ERESTART;

/**
 * Xen re-publishes `vcpu_time_info` at least this often (time calibration `EPOCH`, 1 s in
 * xen/arch/x86/time.c), bounding the drift of the 32-bit TSC scale.
 */
export const TIME_CALIBRATION_NS = 1_000_000_000;

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
export class Hypervisor {
  /** Machine memory (host RAM). */
  readonly memory: GuestMemory;
  /** Little-endian view of machine memory. */
  readonly machineView: DataView;
  /** Bytes of machine memory. */
  readonly machineBytes: Uint8Array;
  /** 32-bit words of machine memory (for `Atomics`, e.g. pvclock). */
  readonly machineWords: Int32Array;
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

  private readonly domains: (Domain | null)[] = [];
  private readonly freeFrames: number[] = [];
  private readonly scratch = new Uint32Array(2);
  private readonly clockWriters = new Map<Vcpu, PvClockWriter>();
  private lastTimePublish = 0;

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
    const id = this.domains.length;
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
    this.domains.push(d);
    for (const v of d.vcpus) {
      this.machineBytes[v.vcpuInfoMa + VcpuInfoLayout.evtchn_upcall_mask] = 1;
      const w = new PvClockWriter(this.machineWords, v.vcpuInfoMa + VcpuInfoLayout.time);
      this.clockWriters.set(v, w);
    }
    this.updateTime(d);
    return d;
  }

  /**
   * Looks a domain up.
   *
   * @param id - domain id
   * @returns the domain or null
   */
  domainById(id: number): Domain | null {
    return this.domains[id] ?? null;
  }

  /** Every domain. */
  get allDomains(): readonly Domain[] {
    return this.domains.filter((d): d is Domain => d !== null);
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
    for (const d of this.domains) if (d) for (const v of d.vcpus) v.tlb.flushAll();
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

  private writeGuestString(d: Domain, gpa: number, text: string, size: number): number {
    if (!this.guestRangeOk(d, gpa, size)) return EFAULT;
    for (let i = 0; i < size; i++) {
      const c = i < text.length ? text.charCodeAt(i) & 0x7f : 0;
      this.machineBytes[d.gpaToMa(gpa + i)] = c;
    }
    return 0;
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
  // Dispatch

  /**
   * Handles one hypercall of `v` with its arguments already in `v.regs` (the port does
   * that). Returns `-ERESTART` when preempted: the registers then hold the continuation.
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
    if (rc !== ERESTART) this.deliverUpcall(v);
    return rc;
  }

  private dispatch(v: Vcpu, op: number): number {
    const d = v.domain;
    const pv = d.kind === "pv";
    const r = v.regs;
    switch (op) {
      case Hypercall.mmu_update:
        return pv ? this.mm.mmuUpdate(v) : this.fail(ENOSYS, "mmu_update is PV-only");
      case Hypercall.mmuext_op:
        return pv ? this.mm.mmuextOp(v) : this.fail(ENOSYS, "mmuext_op is PV-only");
      case Hypercall.update_va_mapping:
        if (!pv) return this.fail(ENOSYS, "update_va_mapping is PV-only");
        return this.mm.updateVaMapping(v, this.regNum(v, 0), r[2]!, r[3]!, this.regNum(v, 2));
      case Hypercall.set_timer_op:
        return this.setTimerOp(v, this.regNum(v, 0));
      case Hypercall.vcpu_op:
        return this.vcpuOp(v, r[0]! | 0, r[2]!, this.regNum(v, 2));
      case Hypercall.multicall:
        return this.multicall(v, this.regNum(v, 0), this.regNum(v, 1));
      case Hypercall.event_channel_op:
        return this.eventChannelOp(v, r[0]! | 0, this.regNum(v, 1));
      case Hypercall.console_io:
        return this.consoleIo(v, r[0]! | 0, r[2]!, this.regNum(v, 2));
      case Hypercall.sched_op:
        return this.schedOp(v, r[0]! | 0, this.regNum(v, 1));
      case Hypercall.xen_version:
        return this.xenVersion(v, r[0]! | 0, this.regNum(v, 1));
      case Hypercall.iret:
        return pv ? this.iret(v, this.regNum(v, 0)) : this.fail(ENOSYS, "iret is PV-only");
      default:
        return this.fail(ENOSYS, `hypercall ${op} is not implemented`);
    }
  }

  /**
   * `HYPERVISOR_multicall(call_list, nr_calls)`: each entry's result goes into its own
   * `result` field, a failing entry does not stop the batch, nested multicall is refused,
   * an `iret` entry ends it (XSA-213). Reference §5.1.
   */
  private multicall(v: Vcpu, list: number, nr: number): number {
    const d = v.domain;
    if (v.inMulticall) return this.fail(EINVAL, "multicall reentry is disallowed");
    if (!(nr >= 0) || !this.guestRangeOk(d, list, nr * MulticallEntryLayout.size)) {
      return this.fail(EFAULT, `multicall list 0x${list.toString(16)} × ${nr} is not guest memory`);
    }
    v.inMulticall = true;
    const tmp = this.scratch;
    let rc = 0;
    for (let i = 0; i < nr; i++) {
      const at = list + i * MulticallEntryLayout.size;
      if (i > 0 && this.preemptCheck(v)) {
        this.setRegNum(v, 0, at);
        this.setRegNum(v, 1, nr - i);
        v.inMulticall = false;
        return ERESTART;
      }
      if (this.readGuestU64(d, at + MulticallEntryLayout.op, tmp) < 0) {
        rc = EFAULT;
        break;
      }
      const op = tmp[1] === 0 ? tmp[0]! : -1;
      for (let a = 0; a < 5; a++) {
        this.readGuestU64(d, at + MulticallEntryLayout.args + a * 8, tmp);
        v.regs[2 * a] = tmp[0]!;
        v.regs[2 * a + 1] = tmp[1]!;
      }
      const saved = v.work;
      const result = this.dispatch(v, op);
      v.work = saved + 1;
      if (result === ERESTART) {
        // A preempted sub-call: its continuation arguments go back into the entry.
        for (let a = 0; a < 5; a++) {
          this.writeGuestU64(
            d,
            at + MulticallEntryLayout.args + a * 8,
            v.regs[2 * a]!,
            v.regs[2 * a + 1]!,
          );
        }
        this.setRegNum(v, 0, at);
        this.setRegNum(v, 1, nr - i);
        v.inMulticall = false;
        return ERESTART;
      }
      this.writeGuestU64(
        d,
        at + MulticallEntryLayout.result,
        result >>> 0,
        result < 0 ? 0xffff_ffff : 0,
      );
      if (op === Hypercall.iret || !v.kernelMode) {
        // XSA-213: an iret (or any return to user mode) ends the batch.
        rc = result;
        break;
      }
    }
    v.inMulticall = false;
    return rc;
  }

  /**
   * `HYPERVISOR_iret`: returns to the context described by an `iret_context`. In this model
   * the frame's guest-physical address is the first argument (Xen reads it from the stack).
   * An RPL-3 `cs` switches the vCPU to user mode.
   */
  private iret(v: Vcpu, ctx: number): number {
    const cs = this.readGuestU32(v.domain, ctx + IretContextLayout.cs);
    if (cs < 0) return this.fail(EFAULT, "iret frame is not guest memory");
    if ((cs & 3) === 3) v.kernelMode = false;
    return 0;
  }

  // ---------------------------------------------------------------------------------------
  // Time

  /** The TSC the guest reads with RDTSC (no exit for a PV guest with a stable TSC). */
  rdtsc(): number {
    return nsToTsc(this.clock.nowNs(), this.options.tscKhz);
  }

  /** Publishes `vcpu_time_info` for every vCPU of a domain (version protocol, reference §4.1). */
  updateTime(d: Domain): void {
    const now = this.clock.nowNs();
    this.lastTimePublish = now;
    const tsc = nsToTsc(now, this.options.tscKhz);
    for (const v of d.vcpus) {
      this.clockWriters.get(v)?.publish(tsc, now, this.timeScale, XEN_PVCLOCK_TSC_STABLE_BIT);
    }
  }

  /**
   * `HYPERVISOR_set_timer_op(timeout)`: absolute ns; 0 cancels; negative or ≥ 2^50 ns
   * ahead is a guest bug and becomes NOW() + 100 ms (xen/common/sched/core.c).
   */
  private setTimerOp(v: Vcpu, timeout: number): number {
    if (timeout === 0) {
      v.singleshotDeadline = -1;
      return 0;
    }
    const now = this.clock.nowNs();
    if (!(timeout > 0) || timeout - now >= SET_TIMER_OP_MAX_AHEAD_NS) {
      v.singleshotDeadline = now + SET_TIMER_OP_FALLBACK_NS;
    } else {
      v.singleshotDeadline = timeout;
    }
    return 0;
  }

  /** `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)`: the timer sub-commands (vcpu.h). */
  private vcpuOp(v: Vcpu, cmd: number, vcpuid: number, arg: number): number {
    const d = v.domain;
    const target = d.vcpus[vcpuid];
    if (target === undefined) return this.fail(ENOENT, `vcpu_op on missing vCPU ${vcpuid}`);
    const tmp = this.scratch;
    switch (cmd) {
      case VCPUOP_set_periodic_timer: {
        if (this.readGuestU64(d, arg, tmp) < 0) return EFAULT;
        if (tmp[1]! >= 0x8000_0000) return this.fail(EINVAL, "period > STIME_DELTA_MAX");
        const period = Math.min(tmp[1]! * 2 ** 32 + tmp[0]!, Number.MAX_SAFE_INTEGER);
        if (period < PERIODIC_TIMER_MIN_NS) return this.fail(EINVAL, `period ${period} ns < 1 ms`);
        target.periodicPeriod = period;
        target.periodicNext = Math.min(this.clock.nowNs() + period, Number.MAX_SAFE_INTEGER);
        return 0;
      }
      case VCPUOP_stop_periodic_timer:
        target.periodicPeriod = 0;
        target.periodicNext = -1;
        return 0;
      case VCPUOP_set_singleshot_timer: {
        if (target !== v) return this.fail(EINVAL, "single-shot timer of another vCPU");
        if (
          this.readGuestU64(d, arg + VcpuSetSingleshotTimerLayout.timeout_abs_ns, tmp) < 0 ||
          this.readGuestU32(d, arg + VcpuSetSingleshotTimerLayout.flags) < 0
        ) {
          return EFAULT;
        }
        // VCPU_SSHOTTMR_future is ignored (commit 19c6cbd909): a past deadline fires at once.
        const at = Math.min(tmp[1]! * 2 ** 32 + tmp[0]!, Number.MAX_SAFE_INTEGER);
        v.singleshotDeadline = Math.max(at, 1);
        return 0;
      }
      case VCPUOP_stop_singleshot_timer:
        if (target !== v) return this.fail(EINVAL, "single-shot timer of another vCPU");
        v.singleshotDeadline = -1;
        return 0;
      case VCPUOP_is_up:
        return 1;
      default:
        return this.fail(ENOSYS, `vcpu_op ${cmd} is not implemented`);
    }
  }

  /**
   * Earliest pending timer deadline of any vCPU.
   *
   * @returns ns, or -1 when no timer is armed
   */
  nextDeadline(): number {
    let best = -1;
    for (const d of this.domains) {
      if (d === null) continue;
      for (const v of d.vcpus) {
        if (v.singleshotDeadline >= 0 && (best < 0 || v.singleshotDeadline < best)) {
          best = v.singleshotDeadline;
        }
        if (v.periodicPeriod > 0 && (best < 0 || v.periodicNext < best)) best = v.periodicNext;
      }
    }
    return best;
  }

  /**
   * Fires every timer due at the clock's current time, earliest deadline first, each as
   * VIRQ_TIMER on its vCPU (`send_timer_event`).
   *
   * @returns timers fired
   */
  poll(): number {
    const now = this.clock.nowNs();
    if (now - this.lastTimePublish >= TIME_CALIBRATION_NS) {
      for (const d of this.domains) if (d) this.updateTime(d);
    }
    let fired = 0;
    let bound = 1;
    for (const d of this.domains) if (d) bound += 2 * d.vcpus.length;
    for (let n = 0; n < bound; n++) {
      let best: Vcpu | null = null;
      let bestAt = Number.POSITIVE_INFINITY;
      let periodic = false;
      for (const d of this.domains) {
        if (d === null) continue;
        for (const v of d.vcpus) {
          if (
            v.singleshotDeadline >= 0 &&
            v.singleshotDeadline <= now &&
            v.singleshotDeadline < bestAt
          ) {
            best = v;
            bestAt = v.singleshotDeadline;
            periodic = false;
          }
          if (v.periodicPeriod > 0 && v.periodicNext <= now && v.periodicNext < bestAt) {
            best = v;
            bestAt = v.periodicNext;
            periodic = true;
          }
        }
      }
      if (best === null) break;
      if (periodic) best.periodicNext = now + best.periodicPeriod;
      else best.singleshotDeadline = -1;
      best.timerEvents++;
      this.sendVirq(best, VIRQ_TIMER);
      fired++;
    }
    return fired;
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
    const clock = this.clock;
    if (!(clock instanceof ManualClock)) throw new Error("runUntil needs a ManualClock");
    let fired = 0;
    for (let guard = 0; guard < 10_000_000; guard++) {
      const next = this.nextDeadline();
      if (next < 0 || next > targetNs) break;
      clock.set(next);
      fired += this.poll();
    }
    clock.set(targetNs);
    fired += this.poll();
    return fired;
  }

  // ---------------------------------------------------------------------------------------
  // Event channels (2-level ABI; xen/common/event_2l.c, event_channel.c)

  private bitTestSet(ma: number, bit: number): boolean {
    const at = ma + (bit >>> 3);
    const m = 1 << (bit & 7);
    const old = this.machineBytes[at]!;
    this.machineBytes[at] = old | m;
    return (old & m) !== 0;
  }

  private bitTest(ma: number, bit: number): boolean {
    return (this.machineBytes[ma + (bit >>> 3)]! & (1 << (bit & 7))) !== 0;
  }

  private bitTestClear(ma: number, bit: number): boolean {
    const at = ma + (bit >>> 3);
    const m = 1 << (bit & 7);
    const old = this.machineBytes[at]!;
    this.machineBytes[at] = old & ~m;
    return (old & m) !== 0;
  }

  /**
   * `evtchn_2l_set_pending`: sets the pending bit; unless masked, sets the selector bit
   * and marks the notified vCPU's upcall pending.
   */
  setPending(d: Domain, port: number): void {
    const si = d.sharedInfoMa;
    if (this.bitTestSet(si + SharedInfoLayout.evtchn_pending, port)) return;
    if (this.bitTest(si + SharedInfoLayout.evtchn_mask, port)) return;
    const v = d.vcpus[d.portVcpu[port]!] ?? d.vcpus[0]!;
    if (!this.bitTestSet(v.vcpuInfoMa + VcpuInfoLayout.evtchn_pending_sel, port >>> 6)) {
      this.markEventsPending(v);
    }
  }

  private markEventsPending(v: Vcpu): void {
    this.machineBytes[v.vcpuInfoMa + VcpuInfoLayout.evtchn_upcall_pending] = 1;
    v.blocked = false;
  }

  /**
   * Delivers the event upcall if `evtchn_upcall_pending` is set and the vCPU has not masked
   * upcalls; like Xen, masks upcalls while the callback runs. Bounded re-delivery.
   */
  deliverUpcall(v: Vcpu): void {
    if (v.inUpcall) return;
    const info = v.vcpuInfoMa;
    const bytes = this.machineBytes;
    v.inUpcall = true;
    for (let round = 0; round < 16; round++) {
      if (bytes[info + VcpuInfoLayout.evtchn_upcall_pending] === 0) break;
      if (bytes[info + VcpuInfoLayout.evtchn_upcall_mask] !== 0) break;
      bytes[info + VcpuInfoLayout.evtchn_upcall_mask] = 1;
      v.upcalls++;
      const handler = v.onUpcall;
      if (handler !== null) handler(v);
      bytes[info + VcpuInfoLayout.evtchn_upcall_mask] = 0;
      if (handler === null) break;
    }
    v.inUpcall = false;
  }

  /**
   * Sends a virtual IRQ to a vCPU if it is bound (`send_guest_vcpu_virq`); delivers the
   * upcall right away when the vCPU accepts it.
   */
  sendVirq(v: Vcpu, virq: number): void {
    const port = v.virqToPort[virq] ?? 0;
    if (port === 0) return;
    this.setPending(v.domain, port);
    this.deliverUpcall(v.domain.vcpus[v.domain.portVcpu[port]!] ?? v);
  }

  private allocPort(d: Domain): number {
    for (let p = 1; p < d.portState.length; p++) if (d.portState[p] === ECS_FREE) return p;
    return -1;
  }

  private portValid(d: Domain, port: number): boolean {
    return port > 0 && port < d.portState.length && d.portState[port] !== ECS_FREE;
  }

  private eventChannelOp(v: Vcpu, cmd: number, arg: number): number {
    const d = v.domain;
    switch (cmd) {
      case EVTCHNOP_bind_virq: {
        if (!this.guestRangeOk(d, arg, EvtchnBindVirqLayout.size)) return EFAULT;
        const virq = this.readGuestU32(d, arg + EvtchnBindVirqLayout.virq);
        const vcpu = this.readGuestU32(d, arg + EvtchnBindVirqLayout.vcpu);
        if (virq >= NR_VIRQS) return this.fail(EINVAL, `VIRQ ${virq} out of range`);
        const perVcpu =
          virq === VIRQ_TIMER ||
          virq === VIRQ_DEBUG ||
          virq === VIRQ_XENOPROF ||
          virq === VIRQ_XENPMU;
        if (!perVcpu && vcpu !== 0) return this.fail(EINVAL, `global VIRQ ${virq} on vCPU ${vcpu}`);
        const target = d.vcpus[vcpu];
        if (target === undefined) return this.fail(ENOENT, `no vCPU ${vcpu}`);
        if (target.virqToPort[virq] !== 0) return this.fail(EEXIST, `VIRQ ${virq} already bound`);
        const port = this.allocPort(d);
        if (port < 0) return this.fail(ENOSPC, "no free event-channel port");
        d.portState[port] = ECS_VIRQ;
        d.portVcpu[port] = vcpu;
        d.portVirq[port] = virq;
        target.virqToPort[virq] = port;
        this.writeGuestU32(d, arg + EvtchnBindVirqLayout.port, port);
        return 0;
      }
      case EVTCHNOP_bind_ipi: {
        if (!this.guestRangeOk(d, arg, EvtchnBindIpiLayout.size)) return EFAULT;
        const vcpu = this.readGuestU32(d, arg + EvtchnBindIpiLayout.vcpu);
        if (d.vcpus[vcpu] === undefined) return this.fail(ENOENT, `no vCPU ${vcpu}`);
        const port = this.allocPort(d);
        if (port < 0) return this.fail(ENOSPC, "no free event-channel port");
        d.portState[port] = ECS_IPI;
        d.portVcpu[port] = vcpu;
        this.writeGuestU32(d, arg + EvtchnBindIpiLayout.port, port);
        return 0;
      }
      case EVTCHNOP_alloc_unbound: {
        if (!this.guestRangeOk(d, arg, EvtchnAllocUnboundLayout.size)) return EFAULT;
        const word = this.readGuestU32(d, arg);
        const dom = word & 0xffff;
        const remote = word >>> 16;
        if (dom !== DOMID_SELF && dom !== d.id)
          return this.fail(EPERM, "alloc_unbound for another domain");
        const rd = remote === DOMID_SELF ? d : this.domainById(remote);
        if (rd === null) return this.fail(ESRCH, `remote domain ${remote} does not exist`);
        const port = this.allocPort(d);
        if (port < 0) return this.fail(ENOSPC, "no free event-channel port");
        d.portState[port] = ECS_UNBOUND;
        d.portVcpu[port] = 0;
        d.portRemoteDom[port] = rd.id;
        this.writeGuestU32(d, arg + EvtchnAllocUnboundLayout.port, port);
        return 0;
      }
      case EVTCHNOP_bind_interdomain: {
        if (!this.guestRangeOk(d, arg, EvtchnBindInterdomainLayout.size)) return EFAULT;
        const remote = this.readGuestU32(d, arg) & 0xffff;
        const rport = this.readGuestU32(d, arg + EvtchnBindInterdomainLayout.remote_port);
        const rd = remote === DOMID_SELF ? d : this.domainById(remote);
        if (rd === null) return this.fail(ESRCH, `remote domain ${remote} does not exist`);
        if (
          !this.portValid(rd, rport) ||
          rd.portState[rport] !== ECS_UNBOUND ||
          rd.portRemoteDom[rport] !== d.id
        ) {
          return this.fail(EINVAL, `remote port ${rport} of d${rd.id} is not unbound for d${d.id}`);
        }
        const port = this.allocPort(d);
        if (port < 0) return this.fail(ENOSPC, "no free event-channel port");
        d.portState[port] = ECS_INTERDOMAIN;
        d.portVcpu[port] = 0;
        d.portRemoteDom[port] = rd.id;
        d.portRemotePort[port] = rport;
        rd.portState[rport] = ECS_INTERDOMAIN;
        rd.portRemoteDom[rport] = d.id;
        rd.portRemotePort[rport] = port;
        this.writeGuestU32(d, arg + EvtchnBindInterdomainLayout.local_port, port);
        return 0;
      }
      case EVTCHNOP_send: {
        const port = this.readGuestU32(d, arg);
        if (port < 0) return EFAULT;
        if (!this.portValid(d, port)) return this.fail(EINVAL, `send on invalid port ${port}`);
        switch (d.portState[port]) {
          case ECS_INTERDOMAIN: {
            const rd = this.domainById(d.portRemoteDom[port]!);
            if (rd !== null) {
              const rport = d.portRemotePort[port]!;
              this.setPending(rd, rport);
              this.deliverUpcall(rd.vcpus[rd.portVcpu[rport]!] ?? rd.vcpus[0]!);
            }
            return 0;
          }
          case ECS_IPI:
            this.setPending(d, port);
            this.deliverUpcall(d.vcpus[d.portVcpu[port]!] ?? v);
            return 0;
          case ECS_UNBOUND:
            return 0;
          default:
            return this.fail(EINVAL, `send on Xen-attached port ${port}`);
        }
      }
      case EVTCHNOP_unmask: {
        const port = this.readGuestU32(d, arg);
        if (port < 0) return EFAULT;
        if (!this.portValid(d, port)) return this.fail(EINVAL, `unmask of invalid port ${port}`);
        const si = d.sharedInfoMa;
        const target = d.vcpus[d.portVcpu[port]!] ?? v;
        if (
          this.bitTestClear(si + SharedInfoLayout.evtchn_mask, port) &&
          this.bitTest(si + SharedInfoLayout.evtchn_pending, port) &&
          !this.bitTestSet(target.vcpuInfoMa + VcpuInfoLayout.evtchn_pending_sel, port >>> 6)
        ) {
          this.markEventsPending(target);
        }
        return 0;
      }
      case EVTCHNOP_close: {
        const port = this.readGuestU32(d, arg);
        if (port < 0) return EFAULT;
        if (!this.portValid(d, port)) return this.fail(EINVAL, `close of invalid port ${port}`);
        if (d.portState[port] === ECS_VIRQ) {
          const owner = d.vcpus[d.portVcpu[port]!];
          if (owner) owner.virqToPort[d.portVirq[port]!] = 0;
        } else if (d.portState[port] === ECS_INTERDOMAIN) {
          const rd = this.domainById(d.portRemoteDom[port]!);
          const rport = d.portRemotePort[port]!;
          if (rd !== null && rd.portState[rport] === ECS_INTERDOMAIN) {
            rd.portState[rport] = ECS_UNBOUND;
            rd.portRemoteDom[rport] = d.id;
          }
        }
        d.portState[port] = ECS_FREE;
        d.portRemoteDom[port] = -1;
        this.bitTestClear(d.sharedInfoMa + SharedInfoLayout.evtchn_pending, port);
        return 0;
      }
      default:
        return this.fail(ENOSYS, `event_channel_op ${cmd} is not implemented`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Console, scheduler, version

  private consoleIo(v: Vcpu, cmd: number, count: number, buffer: number): number {
    const d = v.domain;
    if (cmd === CONSOLEIO_write) {
      if (!this.guestRangeOk(d, buffer, count))
        return this.fail(EFAULT, "console buffer is not guest memory");
      let text = "";
      for (let i = 0; i < count; i++)
        text += String.fromCharCode(this.machineBytes[d.gpaToMa(buffer + i)]!);
      d.console = (d.console + text).slice(-this.options.consoleLimit);
      return 0;
    }
    if (cmd === CONSOLEIO_read) {
      if (!d.privileged) return this.fail(EPERM, "CONSOLEIO_read needs privilege");
      return 0;
    }
    return this.fail(ENOSYS, `console_io ${cmd}`);
  }

  private schedOp(v: Vcpu, cmd: number, arg: number): number {
    switch (cmd) {
      case SCHEDOP_yield:
        return 0;
      case SCHEDOP_block: {
        // Blocking re-enables event delivery; pending work means no sleep.
        const info = v.vcpuInfoMa;
        this.machineBytes[info + VcpuInfoLayout.evtchn_upcall_mask] = 0;
        v.blocked = this.machineBytes[info + VcpuInfoLayout.evtchn_upcall_pending] === 0;
        return 0;
      }
      case SCHEDOP_shutdown: {
        const reason = this.readGuestU32(v.domain, arg);
        if (reason < 0) return EFAULT;
        v.domain.shutdownReason = reason;
        return 0;
      }
      default:
        return this.fail(ENOSYS, `sched_op ${cmd}`);
    }
  }

  private xenVersion(v: Vcpu, cmd: number, arg: number): number {
    const d = v.domain;
    switch (cmd) {
      case XENVER_version:
        return (XEN_VERSION_MAJOR << 16) | XEN_VERSION_MINOR;
      case XENVER_extraversion:
        return this.writeGuestString(d, arg, "-pvkit", XEN_EXTRAVERSION_LEN);
      case XENVER_capabilities:
        return this.writeGuestString(d, arg, "xen-3.0-x86_64", XEN_CAPABILITIES_INFO_LEN);
      case XENVER_changeset:
        return this.writeGuestString(d, arg, "pvkit model", XEN_CHANGESET_INFO_LEN);
      case XENVER_platform_parameters:
        // virt_start: the hypervisor's range starts at L4 slot 256 (0xffff800000000000).
        return this.writeGuestU64(d, arg, 0, 0xffff_8000) < 0 ? EFAULT : 0;
      case XENVER_get_features: {
        const idx = this.readGuestU32(d, arg + XenFeatureInfoLayout.submap_idx);
        if (idx < 0) return EFAULT;
        const map = idx === 0 ? 1 << XENFEAT_writable_page_tables : 0;
        return this.writeGuestU32(d, arg + XenFeatureInfoLayout.submap, map) < 0 ? EFAULT : 0;
      }
      case XENVER_pagesize:
        return PAGE_SIZE;
      default:
        return this.fail(ENOSYS, `xen_version ${cmd}`);
    }
  }
}
