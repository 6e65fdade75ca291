/**
 * `HypercallClient`: the guest kernel's side of the ABI. It lays every argument structure out
 * in its own guest memory exactly as Xen's public headers do and passes numbers and
 * guest-physical pointers through a {@link HypercallPort} — never JavaScript objects.
 * Batches (`mmu_update`, `multicall`) are written in place and cost one exit each.
 *
 * Scratch layout (guest-physical, `scratchPages` ≥ 3 contiguous pages):
 * page 0 holds small argument structures, pages 1…n-2 the `mmu_update` batch, the last page
 * the multicall list (64 entries).
 *
 * @module
 */

import {
  CONSOLEIO_write,
  DOMID_SELF,
  EVTCHNOP_alloc_unbound,
  EVTCHNOP_bind_interdomain,
  EVTCHNOP_bind_ipi,
  EVTCHNOP_bind_virq,
  EVTCHNOP_close,
  EVTCHNOP_send,
  EVTCHNOP_unmask,
  Hypercall,
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_TLB_FLUSH_LOCAL,
  MMUEXT_UNPIN_TABLE,
  MmuextOpLayout,
  MmuUpdateLayout,
  MulticallEntryLayout,
  PAGE_SIZE,
  SCHEDOP_block,
  SCHEDOP_shutdown,
  SCHEDOP_yield,
  SharedInfoLayout,
  VCPUOP_set_periodic_timer,
  VCPUOP_set_singleshot_timer,
  VCPUOP_stop_periodic_timer,
  VCPUOP_stop_singleshot_timer,
  VcpuInfoLayout,
} from "./abi.js";
import { PvClockReader } from "./clock.js";
import { XenErrno } from "./errors.js";
import type { GuestPhys } from "./guest-phys.js";
import type { HypercallPort } from "./port.js";

const EFAULT = -XenErrno.EFAULT;
const E2BIG = -XenErrno.E2BIG;

/** Offsets inside scratch page 0. */
const S_STRUCT = 0x000; // 64 bytes: timer / evtchn structures
const S_MMUEXT = 0x040; // one mmuext_op (24 bytes)
const S_DONE = 0x060; // u32 done count
const S_CONSOLE = 0x800; // 2 KiB console chunk
const CONSOLE_CHUNK = 0x800;

/** The guest's hypercall library. */
export class HypercallClient {
  /** Entries applied by the last {@link flushUpdates} / {@link mmuUpdate} (`*pdone`). */
  lastDone = 0;
  private readonly base: number;
  private readonly batchBase: number;
  private readonly batchCapacity: number;
  private readonly mcBase: number;
  private pending = 0;
  private mcPending = 0;
  private readonly tmp = new Uint32Array(2);
  private readonly enc = new TextEncoder();

  /**
   * @param port - the vCPU's hypercall port
   * @param phys - the guest's own memory
   * @param scratchGpa - page-aligned guest-physical address of the scratch area
   * @param scratchPages - pages in the scratch area (≥ 3)
   */
  constructor(
    readonly port: HypercallPort,
    readonly phys: GuestPhys,
    scratchGpa: number,
    scratchPages: number,
  ) {
    if (scratchGpa % PAGE_SIZE !== 0 || scratchPages < 3) {
      throw new Error("scratch must be page-aligned and at least 3 pages");
    }
    this.base = scratchGpa;
    this.batchBase = scratchGpa + PAGE_SIZE;
    this.batchCapacity = ((scratchPages - 2) * PAGE_SIZE) / MmuUpdateLayout.size;
    this.mcBase = scratchGpa + (scratchPages - 1) * PAGE_SIZE;
  }

  /** Guest-physical address of the `*pdone` word. */
  get doneGpa(): number {
    return this.base + S_DONE;
  }

  // ---------------------------------------------------------------------------------------
  // PV MMU

  /**
   * Raw `HYPERVISOR_mmu_update(reqs, count, pdone, foreigndom)`.
   *
   * @returns the hypercall result; {@link lastDone} holds `*pdone`
   */
  mmuUpdate(reqs: number, count: number, pdone: number, foreigndom = DOMID_SELF): number {
    if (pdone !== 0) this.phys.writeU32(pdone, 0);
    const rc = this.port.call(Hypercall.mmu_update, reqs, count, pdone, foreigndom);
    if (pdone !== 0) this.lastDone = Math.max(0, this.phys.readU32(pdone));
    return rc;
  }

  /** Requests queued and not yet flushed. */
  get queued(): number {
    return this.pending;
  }

  /** Batch capacity in entries. */
  get capacity(): number {
    return this.batchCapacity;
  }

  /**
   * Queues one `{ptr, val}` request (no exit). A full queue is flushed first.
   *
   * @param ptr - machine address of the entry with the `MMU_*` command in bits 0..2
   * @param lo - low word of the new value
   * @param hi - high word of the new value
   * @returns 0, or the error of the flush a full queue forced
   */
  queueUpdate(ptr: number, lo: number, hi: number): number {
    if (this.pending === this.batchCapacity) {
      const rc = this.flushUpdates();
      if (rc < 0) return rc;
    }
    const at = this.batchBase + this.pending * MmuUpdateLayout.size;
    const phi = Math.floor(ptr / 2 ** 32);
    if (
      this.phys.writeU64(at, ptr - phi * 2 ** 32, phi) < 0 ||
      this.phys.writeU64(at + 8, lo, hi) < 0
    ) {
      return EFAULT;
    }
    this.pending++;
    return 0;
  }

  /**
   * Sends the queued requests in one `mmu_update` (one exit).
   *
   * @param foreigndom - FD / PFD word (default `DOMID_SELF`)
   * @returns the result; {@link lastDone} holds how many were applied
   */
  flushUpdates(foreigndom = DOMID_SELF): number {
    const n = this.pending;
    this.pending = 0;
    if (n === 0) {
      this.lastDone = 0;
      return 0;
    }
    return this.mmuUpdate(this.batchBase, n, this.doneGpa, foreigndom);
  }

  /** Drops the queued requests without sending them. */
  discardUpdates(): void {
    this.pending = 0;
  }

  /**
   * One `mmuext_op` (one exit).
   *
   * @param cmd - `MMUEXT_*`
   * @param arg1 - mfn or linear address
   * @param arg2 - nr_ents / vcpumask pointer / src mfn
   * @returns the result
   */
  mmuext(cmd: number, arg1 = 0, arg2 = 0, foreigndom = DOMID_SELF): number {
    const at = this.prepareMmuext(cmd, arg1, arg2);
    if (at < 0) return at;
    return this.port.call(Hypercall.mmuext_op, at, 1, 0, foreigndom);
  }

  /**
   * Lays one `mmuext_op` out in scratch memory without calling (e.g. for a multicall entry).
   *
   * @returns its guest-physical address, or `-EFAULT`
   */
  prepareMmuext(cmd: number, arg1 = 0, arg2 = 0): number {
    const at = this.base + S_MMUEXT;
    const h1 = Math.floor(arg1 / 2 ** 32);
    const h2 = Math.floor(arg2 / 2 ** 32);
    if (
      this.phys.writeU64(at + MmuextOpLayout.cmd, cmd, 0) < 0 ||
      this.phys.writeU64(at + MmuextOpLayout.arg1, arg1 - h1 * 2 ** 32, h1 >>> 0) < 0 ||
      this.phys.writeU64(at + MmuextOpLayout.arg2, arg2 - h2 * 2 ** 32, h2 >>> 0) < 0
    ) {
      return EFAULT;
    }
    return at;
  }

  /** Guest-physical address of the `mmu_update` batch. */
  get batchGpa(): number {
    return this.batchBase;
  }

  /** `MMUEXT_PIN_Ln_TABLE`. @param level - 1..4 */
  pin(level: number, mfn: number): number {
    return this.mmuext(MMUEXT_PIN_L1_TABLE + level - 1, mfn);
  }

  /** `MMUEXT_UNPIN_TABLE`. */
  unpin(mfn: number): number {
    return this.mmuext(MMUEXT_UNPIN_TABLE, mfn);
  }

  /** `MMUEXT_NEW_BASEPTR` (load CR3). */
  newBaseptr(mfn: number): number {
    return this.mmuext(MMUEXT_NEW_BASEPTR, mfn);
  }

  /** `MMUEXT_TLB_FLUSH_LOCAL`. */
  flushTlb(): number {
    return this.mmuext(MMUEXT_TLB_FLUSH_LOCAL);
  }

  /** `MMUEXT_INVLPG_LOCAL`. */
  invlpg(va: number): number {
    return this.mmuext(MMUEXT_INVLPG_LOCAL, va);
  }

  /**
   * `HYPERVISOR_update_va_mapping(va, val, flags)`.
   *
   * @param va - virtual address (signed register model)
   * @param lo - low word of the new PTE
   * @param hi - high word of the new PTE
   * @param flags - `UVMF_*`
   */
  updateVaMapping(va: number, lo: number, hi: number, flags: number): number {
    this.port.setArg(0, va);
    this.port.setArgWords(1, lo, hi);
    this.port.setArg(2, flags);
    this.port.setArg(3, 0);
    this.port.setArg(4, 0);
    return this.port.invoke(Hypercall.update_va_mapping);
  }

  // ---------------------------------------------------------------------------------------
  // Timers and time

  /** `HYPERVISOR_set_timer_op(timeout)`: absolute ns, 0 cancels. */
  setTimerOp(timeoutNs: number): number {
    return this.port.call(Hypercall.set_timer_op, timeoutNs);
  }

  /** `VCPUOP_set_singleshot_timer` for this vCPU. */
  setSingleshotTimer(timeoutAbsNs: number, flags = 0, vcpu = this.port.vcpu.id): number {
    const at = this.base + S_STRUCT;
    const hi = Math.floor(timeoutAbsNs / 2 ** 32);
    if (
      this.phys.writeU64(at, timeoutAbsNs - hi * 2 ** 32, hi) < 0 ||
      this.phys.writeU64(at + 8, flags, 0) < 0
    ) {
      return EFAULT;
    }
    return this.port.call(Hypercall.vcpu_op, VCPUOP_set_singleshot_timer, vcpu, at);
  }

  /** `VCPUOP_stop_singleshot_timer`. */
  stopSingleshotTimer(vcpu = this.port.vcpu.id): number {
    return this.port.call(Hypercall.vcpu_op, VCPUOP_stop_singleshot_timer, vcpu, 0);
  }

  /** `VCPUOP_set_periodic_timer`. */
  setPeriodicTimer(periodNs: number, vcpu = this.port.vcpu.id): number {
    const at = this.base + S_STRUCT;
    const hi = Math.floor(periodNs / 2 ** 32);
    if (this.phys.writeU64(at, periodNs - hi * 2 ** 32, hi) < 0) return EFAULT;
    return this.port.call(Hypercall.vcpu_op, VCPUOP_set_periodic_timer, vcpu, at);
  }

  /** `VCPUOP_stop_periodic_timer`. */
  stopPeriodicTimer(vcpu = this.port.vcpu.id): number {
    return this.port.call(Hypercall.vcpu_op, VCPUOP_stop_periodic_timer, vcpu, 0);
  }

  /**
   * A pvclock reader over this vCPU's `vcpu_time_info` in the shared-info page: zero exits
   * per read (RDTSC does not exit for a PV guest with a stable TSC).
   */
  pvclock(): PvClockReader {
    const v = this.port.vcpu;
    const hv = this.port.hypervisor;
    return new PvClockReader(hv.machineWords, v.vcpuInfoMa + VcpuInfoLayout.time, () => hv.rdtsc());
  }

  // ---------------------------------------------------------------------------------------
  // Event channels

  private evtchn(cmd: number, words: readonly number[], resultWord: number): number {
    const at = this.base + S_STRUCT;
    for (let i = 0; i < words.length; i++) {
      if (this.phys.writeU32(at + i * 4, words[i]!) < 0) return EFAULT;
    }
    const rc = this.port.call(Hypercall.event_channel_op, cmd, at);
    if (rc < 0 || resultWord < 0) return rc;
    return this.phys.readU32(at + resultWord * 4);
  }

  /** `EVTCHNOP_bind_virq`. @returns the port or `-errno` */
  bindVirq(virq: number, vcpu = 0): number {
    return this.evtchn(EVTCHNOP_bind_virq, [virq, vcpu, 0], 2);
  }

  /** `EVTCHNOP_bind_ipi`. @returns the port or `-errno` */
  bindIpi(vcpu = 0): number {
    return this.evtchn(EVTCHNOP_bind_ipi, [vcpu, 0], 1);
  }

  /** `EVTCHNOP_alloc_unbound` for a remote domain. @returns the port or `-errno` */
  allocUnbound(remoteDom: number): number {
    return this.evtchn(EVTCHNOP_alloc_unbound, [DOMID_SELF | ((remoteDom & 0xffff) << 16), 0], 1);
  }

  /** `EVTCHNOP_bind_interdomain`. @returns the local port or `-errno` */
  bindInterdomain(remoteDom: number, remotePort: number): number {
    return this.evtchn(EVTCHNOP_bind_interdomain, [remoteDom & 0xffff, remotePort, 0], 2);
  }

  /** `EVTCHNOP_send`. */
  send(port: number): number {
    return this.evtchn(EVTCHNOP_send, [port], -1);
  }

  /** `EVTCHNOP_unmask`. */
  unmask(port: number): number {
    return this.evtchn(EVTCHNOP_unmask, [port], -1);
  }

  /** `EVTCHNOP_close`. */
  close(port: number): number {
    return this.evtchn(EVTCHNOP_close, [port], -1);
  }

  private get sharedInfo(): number {
    return this.port.vcpu.domain.sharedInfoMa;
  }

  private get vcpuInfo(): number {
    return this.port.vcpu.vcpuInfoMa;
  }

  /** Sets a port's mask bit in shared memory (no exit; `Atomics` when machine memory is shared). */
  maskPort(port: number): void {
    const hv = this.port.hypervisor;
    const at = this.sharedInfo + SharedInfoLayout.evtchn_mask;
    if (hv.machineShared) Atomics.or(hv.machineWords, (at >>> 2) + (port >>> 5), 1 << (port & 31));
    else hv.machineBytes[at + (port >>> 3)]! |= 1 << (port & 7);
  }

  /** Sets or clears `evtchn_upcall_mask` (the guest's "interrupts off" flag; no exit). */
  setUpcallMask(masked: boolean): void {
    const hv = this.port.hypervisor;
    const at = this.vcpuInfo + VcpuInfoLayout.evtchn_upcall_mask;
    if (hv.machineShared) Atomics.store(hv.machineBytes, at, masked ? 1 : 0);
    else hv.machineBytes[at] = masked ? 1 : 0;
  }

  /** Whether `evtchn_upcall_pending` is set. */
  get upcallPending(): boolean {
    const hv = this.port.hypervisor;
    const at = this.vcpuInfo + VcpuInfoLayout.evtchn_upcall_pending;
    return (hv.machineShared ? Atomics.load(hv.machineBytes, at) : hv.machineBytes[at]!) !== 0;
  }

  /** Whether a port's pending bit is set. */
  isPending(port: number): boolean {
    const hv = this.port.hypervisor;
    const at = this.sharedInfo + SharedInfoLayout.evtchn_pending;
    if (hv.machineShared)
      return (Atomics.load(hv.machineWords, (at >>> 2) + (port >>> 5)) & (1 << (port & 31))) !== 0;
    return (hv.machineBytes[at + (port >>> 3)]! & (1 << (port & 7))) !== 0;
  }

  /**
   * The guest's event loop (Linux `xen_evtchn_do_upcall` for the 2-level ABI): clear
   * `evtchn_upcall_pending`, take the selector, and for every pending unmasked port clear its
   * pending bit and call `handler`. Bounded by the ABI's 4096 ports. When machine memory is
   * shared (the hypervisor may set bits from another thread) every word is read and cleared
   * with `Atomics`, in 32-bit halves of Xen's 64-bit words, lowest port first; otherwise with
   * plain byte accesses, in the same order.
   *
   * @returns ports handled
   */
  scanEvents(handler: (port: number) => void): number {
    const hv = this.port.hypervisor;
    if (!hv.machineShared) return this.scanEventsPlain(handler);
    const w = hv.machineWords;
    const info = this.vcpuInfo;
    const si = this.sharedInfo;
    Atomics.store(hv.machineBytes, info + VcpuInfoLayout.evtchn_upcall_pending, 0);
    const selAt = (info + VcpuInfoLayout.evtchn_pending_sel) >>> 2;
    const pendAt = (si + SharedInfoLayout.evtchn_pending) >>> 2;
    const maskAt = (si + SharedInfoLayout.evtchn_mask) >>> 2;
    let handled = 0;
    for (let half = 0; half < 2; half++) {
      const sel = Atomics.exchange(w, selAt + half, 0);
      if (sel === 0) continue;
      for (let b = 0; b < 32; b++) {
        if ((sel & (1 << b)) === 0) continue;
        const word = half * 32 + b;
        for (let h = 0; h < 2; h++) {
          const pi = pendAt + word * 2 + h;
          const ready = Atomics.load(w, pi) & ~Atomics.load(w, maskAt + word * 2 + h);
          if (ready === 0) continue;
          Atomics.and(w, pi, ~ready);
          for (let bit = 0; bit < 32; bit++) {
            if ((ready & (1 << bit)) === 0) continue;
            handled++;
            handler(word * 64 + h * 32 + bit);
          }
        }
      }
    }
    return handled;
  }

  /** {@link scanEvents} over unshared memory: plain byte accesses. */
  private scanEventsPlain(handler: (port: number) => void): number {
    const b = this.port.hypervisor.machineBytes;
    const info = this.vcpuInfo;
    const si = this.sharedInfo;
    b[info + VcpuInfoLayout.evtchn_upcall_pending] = 0;
    let handled = 0;
    for (let word = 0; word < 64; word++) {
      const selByte = info + VcpuInfoLayout.evtchn_pending_sel + (word >>> 3);
      const selBit = 1 << (word & 7);
      if ((b[selByte]! & selBit) === 0) continue;
      b[selByte] = b[selByte]! & ~selBit;
      for (let byte = 0; byte < 8; byte++) {
        const pAt = si + SharedInfoLayout.evtchn_pending + word * 8 + byte;
        const ready = b[pAt]! & ~b[si + SharedInfoLayout.evtchn_mask + word * 8 + byte]!;
        if (ready === 0) continue;
        b[pAt] = b[pAt]! & ~ready;
        for (let bit = 0; bit < 8; bit++) {
          if ((ready & (1 << bit)) === 0) continue;
          handled++;
          handler(word * 64 + byte * 8 + bit);
        }
      }
    }
    return handled;
  }

  // ---------------------------------------------------------------------------------------
  // Multicall

  /**
   * Queues one multicall entry (no exit).
   *
   * @returns 0, or `-E2BIG` when the list page is full
   */
  mcQueue(op: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0): number {
    if (this.mcPending >= PAGE_SIZE / MulticallEntryLayout.size) return E2BIG;
    const at = this.mcBase + this.mcPending * MulticallEntryLayout.size;
    this.phys.writeU64(at + MulticallEntryLayout.op, op, 0);
    this.phys.writeU64(at + MulticallEntryLayout.result, 0, 0);
    this.writeArg(at, 0, a0);
    this.writeArg(at, 1, a1);
    this.writeArg(at, 2, a2);
    this.writeArg(at, 3, a3);
    this.writeArg(at, 4, a4);
    this.mcPending++;
    return 0;
  }

  private writeArg(entry: number, i: number, v: number): void {
    const hi = Math.floor(v / 2 ** 32);
    this.phys.writeU64(entry + MulticallEntryLayout.args + i * 8, v - hi * 2 ** 32, hi >>> 0);
  }

  /** Guest-physical address of multicall entry `i` (to fill its arguments by hand). */
  mcEntryGpa(i: number): number {
    return this.mcBase + i * MulticallEntryLayout.size;
  }

  /** Sends the queued entries as one `HYPERVISOR_multicall` (one exit). */
  mcFlush(): number {
    const n = this.mcPending;
    this.mcPending = 0;
    return this.port.call(Hypercall.multicall, this.mcBase, n);
  }

  /**
   * The `result` field of entry `i` of the last multicall.
   *
   * @returns the sub-call's result (signed)
   */
  mcResult(i: number): number {
    if (this.phys.readU64(this.mcEntryGpa(i) + MulticallEntryLayout.result, this.tmp) < 0) {
      return EFAULT;
    }
    const lo = this.tmp[0]!;
    const hi = this.tmp[1]!;
    return hi >= 0x8000_0000 ? (hi - 2 ** 32) * 2 ** 32 + lo : hi * 2 ** 32 + lo;
  }

  // ---------------------------------------------------------------------------------------
  // Console, scheduler, version

  /** `CONSOLEIO_write` (one exit per 2 KiB chunk). */
  consoleWrite(text: string): number {
    const bytes = this.enc.encode(text);
    for (let off = 0; off < bytes.length; off += CONSOLE_CHUNK) {
      const chunk = bytes.subarray(off, Math.min(bytes.length, off + CONSOLE_CHUNK));
      if (this.phys.writeBytes(this.base + S_CONSOLE, chunk) < 0) return EFAULT;
      const rc = this.port.call(
        Hypercall.console_io,
        CONSOLEIO_write,
        chunk.length,
        this.base + S_CONSOLE,
      );
      if (rc < 0) return rc;
    }
    return 0;
  }

  /** `SCHEDOP_yield`. */
  yield(): number {
    return this.port.call(Hypercall.sched_op, SCHEDOP_yield, 0);
  }

  /** `SCHEDOP_block`: sleep until an event (re-enables upcalls). */
  block(): number {
    return this.port.call(Hypercall.sched_op, SCHEDOP_block, 0);
  }

  /** `SCHEDOP_shutdown` with a `SHUTDOWN_*` reason. */
  shutdown(reason: number): number {
    const at = this.base + S_STRUCT;
    if (this.phys.writeU32(at, reason) < 0) return EFAULT;
    return this.port.call(Hypercall.sched_op, SCHEDOP_shutdown, at);
  }

  /** `HYPERVISOR_xen_version(cmd, arg)`. */
  xenVersion(cmd: number, arg = 0): number {
    return this.port.call(Hypercall.xen_version, cmd, arg);
  }
}
