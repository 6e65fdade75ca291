/**
 * Event channels, 2-level ABI (reference §5.2): `event_channel_op` (xen/common/event_channel.c
 * `do_event_channel_op`), setting a port pending and marking the vCPU's upcall
 * (xen/common/event_2l.c `evtchn_2l_set_pending`, `evtchn_2l_unmask`), VIRQ delivery
 * (`send_guest_vcpu_virq`) and the upcall itself (the guest's event callback, run with
 * upcalls masked as Xen's entry code does).
 *
 * The pending, mask and selector bits live in the shared-info page and `vcpu_info`, in machine
 * memory the guest maps: the guest reads them with no exit.
 *
 * Guest kernel counterpart: the event pv_ops (`HypercallClient.bindVirq`, `scanEvents`,
 * `setUpcallMask`).
 *
 * @module
 */

import {
  DOMID_SELF,
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
  NR_VIRQS,
  SharedInfoLayout,
  VcpuInfoLayout,
  VIRQ_DEBUG,
  VIRQ_TIMER,
  VIRQ_XENOPROF,
  VIRQ_XENPMU,
} from "../abi.js";
import {
  type Domain,
  ECS_FREE,
  ECS_INTERDOMAIN,
  ECS_IPI,
  ECS_UNBOUND,
  ECS_VIRQ,
  type Vcpu,
} from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypervisorCore } from "./core.js";
import type { HypercallContext } from "./hypercall.js";

const EINVAL = -XenErrno.EINVAL;
const EPERM = -XenErrno.EPERM;
const EFAULT = -XenErrno.EFAULT;
const ESRCH = -XenErrno.ESRCH;
const ENOSYS = -XenErrno.ENOSYS;
const ENOENT = -XenErrno.ENOENT;
const EEXIST = -XenErrno.EEXIST;
const ENOSPC = -XenErrno.ENOSPC;

/*
 * Bit operations on the shared-info page and `vcpu_info`. The guest scans and clears these
 * bits without an exit — from another thread in the threaded runtime (machine memory in a
 * `SharedArrayBuffer`, `HypervisorCore.machineShared`) — so there every read-modify-write
 * is one `Atomics` operation on the aligned little-endian 32-bit word holding the bit
 * (`Atomics.or` / `Atomics.and` return the old word, as Xen's `test_and_set_bit` /
 * `test_and_clear_bit` are `lock bts` / `lock btr`): bit `n` of a bitmap at byte `ma` is
 * bit `n & 31` of word `(ma >> 2) + (n >> 5)` on a little-endian host (the byte order the
 * pvclock words already assume; the guest kernel's scan reads the same words). The
 * one-byte flags (`evtchn_upcall_pending`, `evtchn_upcall_mask`) are single-byte `Atomics`
 * loads and stores, as the guest writes them. On an `ArrayBuffer` (in-process, one thread)
 * the same bits are plain byte accesses: `Atomics` on unshared memory costs about ten
 * times a plain access in V8 and buys nothing there.
 */

/** `test_and_set_bit` on machine memory: sets bit `bit` of the bitmap at `ma` (4-aligned), returns the old bit. */
function bitTestSet(hv: HypervisorCore, ma: number, bit: number): boolean {
  if (hv.machineShared) {
    const m = 1 << (bit & 31);
    return (Atomics.or(hv.machineWords, (ma >>> 2) + (bit >>> 5), m) & m) !== 0;
  }
  const bytes = hv.machineBytes;
  const at = ma + (bit >>> 3);
  const m = 1 << (bit & 7);
  const old = bytes[at]!;
  bytes[at] = old | m;
  return (old & m) !== 0;
}

/** `test_bit` on machine memory. */
function bitTest(hv: HypervisorCore, ma: number, bit: number): boolean {
  if (hv.machineShared)
    return (Atomics.load(hv.machineWords, (ma >>> 2) + (bit >>> 5)) & (1 << (bit & 31))) !== 0;
  return (hv.machineBytes[ma + (bit >>> 3)]! & (1 << (bit & 7))) !== 0;
}

/** `test_and_clear_bit` on machine memory: clears the bit, returns the old bit. */
function bitTestClear(hv: HypervisorCore, ma: number, bit: number): boolean {
  if (hv.machineShared) {
    const m = 1 << (bit & 31);
    return (Atomics.and(hv.machineWords, (ma >>> 2) + (bit >>> 5), ~m) & m) !== 0;
  }
  const bytes = hv.machineBytes;
  const at = ma + (bit >>> 3);
  const m = 1 << (bit & 7);
  const old = bytes[at]!;
  bytes[at] = old & ~m;
  return (old & m) !== 0;
}

/** Reads a one-byte flag of `vcpu_info` (atomically when shared). */
function flagGet(hv: HypervisorCore, at: number): number {
  return hv.machineShared ? Atomics.load(hv.machineBytes, at) : hv.machineBytes[at]!;
}

/** Writes a one-byte flag of `vcpu_info` (atomically when shared). */
function flagSet(hv: HypervisorCore, at: number, value: number): void {
  if (hv.machineShared) Atomics.store(hv.machineBytes, at, value);
  else hv.machineBytes[at] = value;
}

/** `vcpu_mark_events_pending`: sets `evtchn_upcall_pending` and wakes a blocked vCPU. */
function markEventsPending(hv: HypervisorCore, v: Vcpu): void {
  flagSet(hv, v.vcpuInfoMa + VcpuInfoLayout.evtchn_upcall_pending, 1);
  v.blocked = false;
}

/** `get_free_port`: the lowest free port above 0, or -1. */
function allocPort(d: Domain): number {
  for (let p = 1; p < d.portState.length; p++) if (d.portState[p] === ECS_FREE) return p;
  return -1;
}

/** `port_is_valid` and allocated. */
function portValid(d: Domain, port: number): boolean {
  return port > 0 && port < d.portState.length && d.portState[port] !== ECS_FREE;
}

/**
 * `evtchn_2l_set_pending` (xen/common/event_2l.c): sets the pending bit; unless it was
 * already set or the port is masked, sets the selector bit and marks the notified vCPU's
 * upcall pending.
 *
 * @param hv - the hypervisor
 * @param d - the domain owning the port
 * @param port - the port
 */
export function evtchnSetPending(hv: HypervisorCore, d: Domain, port: number): void {
  const si = d.sharedInfoMa;
  if (bitTestSet(hv, si + SharedInfoLayout.evtchn_pending, port)) return;
  if (bitTest(hv, si + SharedInfoLayout.evtchn_mask, port)) return;
  const v = d.vcpus[d.portVcpu[port]!] ?? d.vcpus[0]!;
  if (!bitTestSet(hv, v.vcpuInfoMa + VcpuInfoLayout.evtchn_pending_sel, port >>> 6)) {
    markEventsPending(hv, v);
  }
}

/**
 * Delivers the event upcall if `evtchn_upcall_pending` is set and the vCPU has not masked
 * upcalls; like Xen, masks upcalls while the callback runs. Bounded re-delivery (16 rounds),
 * no re-entry.
 *
 * @param hv - the hypervisor
 * @param v - the vCPU
 */
export function deliverEventUpcall(hv: HypervisorCore, v: Vcpu): void {
  if (v.inUpcall) return;
  const info = v.vcpuInfoMa;
  v.inUpcall = true;
  for (let round = 0; round < 16; round++) {
    if (flagGet(hv, info + VcpuInfoLayout.evtchn_upcall_pending) === 0) break;
    if (flagGet(hv, info + VcpuInfoLayout.evtchn_upcall_mask) !== 0) break;
    flagSet(hv, info + VcpuInfoLayout.evtchn_upcall_mask, 1);
    v.upcalls++;
    const handler = v.onUpcall;
    if (handler !== null) handler(v);
    flagSet(hv, info + VcpuInfoLayout.evtchn_upcall_mask, 0);
    if (handler === null) break;
  }
  v.inUpcall = false;
}

/**
 * `send_guest_vcpu_virq` (xen/common/event_channel.c): sends a virtual IRQ to a vCPU if it is
 * bound, and delivers the upcall right away when the vCPU accepts it.
 *
 * @param hv - the hypervisor
 * @param v - the vCPU
 * @param virq - `VIRQ_*`
 */
export function sendGuestVcpuVirq(hv: HypervisorCore, v: Vcpu, virq: number): void {
  const port = v.virqToPort[virq] ?? 0;
  if (port === 0) return;
  evtchnSetPending(hv, v.domain, port);
  deliverEventUpcall(hv, v.domain.vcpus[v.domain.portVcpu[port]!] ?? v);
}

/**
 * `HYPERVISOR_event_channel_op(cmd, arg)` (xen/common/event_channel.c
 * `do_event_channel_op`; reference §5.2): `bind_virq`, `bind_ipi`, `alloc_unbound`,
 * `bind_interdomain`, `send`, `unmask`, `close`, with Xen's errors (`-EINVAL` bad port or
 * VIRQ, `-ENOENT` bad vCPU, `-EEXIST` VIRQ already bound, `-ESRCH` no such domain,
 * `-ENOSPC` no free port). Sending on an unbound port is silently dropped.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `cmd` (int), `arg` (guest address of the struct)
 * @returns 0 or `-errno`
 */
export function doEventChannelOp(hv: HypercallContext, v: Vcpu): number {
  const cmd = v.regs[0]! | 0;
  const arg = hv.regNum(v, 1);
  const d = v.domain;
  switch (cmd) {
    case EVTCHNOP_bind_virq: {
      if (!hv.guestRangeOk(d, arg, EvtchnBindVirqLayout.size)) return EFAULT;
      const virq = hv.readGuestU32(d, arg + EvtchnBindVirqLayout.virq);
      const vcpu = hv.readGuestU32(d, arg + EvtchnBindVirqLayout.vcpu);
      if (virq >= NR_VIRQS) return hv.fail(EINVAL, `VIRQ ${virq} out of range`);
      const perVcpu =
        virq === VIRQ_TIMER ||
        virq === VIRQ_DEBUG ||
        virq === VIRQ_XENOPROF ||
        virq === VIRQ_XENPMU;
      if (!perVcpu && vcpu !== 0) return hv.fail(EINVAL, `global VIRQ ${virq} on vCPU ${vcpu}`);
      const target = d.vcpus[vcpu];
      if (target === undefined) return hv.fail(ENOENT, `no vCPU ${vcpu}`);
      if (target.virqToPort[virq] !== 0) return hv.fail(EEXIST, `VIRQ ${virq} already bound`);
      const port = allocPort(d);
      if (port < 0) return hv.fail(ENOSPC, "no free event-channel port");
      d.portState[port] = ECS_VIRQ;
      d.portVcpu[port] = vcpu;
      d.portVirq[port] = virq;
      target.virqToPort[virq] = port;
      hv.writeGuestU32(d, arg + EvtchnBindVirqLayout.port, port);
      return 0;
    }
    case EVTCHNOP_bind_ipi: {
      if (!hv.guestRangeOk(d, arg, EvtchnBindIpiLayout.size)) return EFAULT;
      const vcpu = hv.readGuestU32(d, arg + EvtchnBindIpiLayout.vcpu);
      if (d.vcpus[vcpu] === undefined) return hv.fail(ENOENT, `no vCPU ${vcpu}`);
      const port = allocPort(d);
      if (port < 0) return hv.fail(ENOSPC, "no free event-channel port");
      d.portState[port] = ECS_IPI;
      d.portVcpu[port] = vcpu;
      hv.writeGuestU32(d, arg + EvtchnBindIpiLayout.port, port);
      return 0;
    }
    case EVTCHNOP_alloc_unbound: {
      if (!hv.guestRangeOk(d, arg, EvtchnAllocUnboundLayout.size)) return EFAULT;
      const word = hv.readGuestU32(d, arg);
      const dom = word & 0xffff;
      const remote = word >>> 16;
      if (dom !== DOMID_SELF && dom !== d.id) {
        return hv.fail(EPERM, "alloc_unbound for another domain");
      }
      const rd = remote === DOMID_SELF ? d : hv.domainById(remote);
      if (rd === null) return hv.fail(ESRCH, `remote domain ${remote} does not exist`);
      const port = allocPort(d);
      if (port < 0) return hv.fail(ENOSPC, "no free event-channel port");
      d.portState[port] = ECS_UNBOUND;
      d.portVcpu[port] = 0;
      d.portRemoteDom[port] = rd.id;
      hv.writeGuestU32(d, arg + EvtchnAllocUnboundLayout.port, port);
      return 0;
    }
    case EVTCHNOP_bind_interdomain: {
      if (!hv.guestRangeOk(d, arg, EvtchnBindInterdomainLayout.size)) return EFAULT;
      const remote = hv.readGuestU32(d, arg) & 0xffff;
      const rport = hv.readGuestU32(d, arg + EvtchnBindInterdomainLayout.remote_port);
      const rd = remote === DOMID_SELF ? d : hv.domainById(remote);
      if (rd === null) return hv.fail(ESRCH, `remote domain ${remote} does not exist`);
      if (
        !portValid(rd, rport) ||
        rd.portState[rport] !== ECS_UNBOUND ||
        rd.portRemoteDom[rport] !== d.id
      ) {
        return hv.fail(EINVAL, `remote port ${rport} of d${rd.id} is not unbound for d${d.id}`);
      }
      const port = allocPort(d);
      if (port < 0) return hv.fail(ENOSPC, "no free event-channel port");
      d.portState[port] = ECS_INTERDOMAIN;
      d.portVcpu[port] = 0;
      d.portRemoteDom[port] = rd.id;
      d.portRemotePort[port] = rport;
      rd.portState[rport] = ECS_INTERDOMAIN;
      rd.portRemoteDom[rport] = d.id;
      rd.portRemotePort[rport] = port;
      hv.writeGuestU32(d, arg + EvtchnBindInterdomainLayout.local_port, port);
      return 0;
    }
    case EVTCHNOP_send: {
      const port = hv.readGuestU32(d, arg);
      if (port < 0) return EFAULT;
      if (!portValid(d, port)) return hv.fail(EINVAL, `send on invalid port ${port}`);
      switch (d.portState[port]) {
        case ECS_INTERDOMAIN: {
          const rd = hv.domainById(d.portRemoteDom[port]!);
          if (rd !== null) {
            const rport = d.portRemotePort[port]!;
            evtchnSetPending(hv, rd, rport);
            deliverEventUpcall(hv, rd.vcpus[rd.portVcpu[rport]!] ?? rd.vcpus[0]!);
          }
          return 0;
        }
        case ECS_IPI:
          evtchnSetPending(hv, d, port);
          deliverEventUpcall(hv, d.vcpus[d.portVcpu[port]!] ?? v);
          return 0;
        case ECS_UNBOUND:
          return 0;
        default:
          return hv.fail(EINVAL, `send on Xen-attached port ${port}`);
      }
    }
    case EVTCHNOP_unmask: {
      const port = hv.readGuestU32(d, arg);
      if (port < 0) return EFAULT;
      if (!portValid(d, port)) return hv.fail(EINVAL, `unmask of invalid port ${port}`);
      const si = d.sharedInfoMa;
      const target = d.vcpus[d.portVcpu[port]!] ?? v;
      if (
        bitTestClear(hv, si + SharedInfoLayout.evtchn_mask, port) &&
        bitTest(hv, si + SharedInfoLayout.evtchn_pending, port) &&
        !bitTestSet(hv, target.vcpuInfoMa + VcpuInfoLayout.evtchn_pending_sel, port >>> 6)
      ) {
        markEventsPending(hv, target);
      }
      return 0;
    }
    case EVTCHNOP_close: {
      const port = hv.readGuestU32(d, arg);
      if (port < 0) return EFAULT;
      if (!portValid(d, port)) return hv.fail(EINVAL, `close of invalid port ${port}`);
      if (d.portState[port] === ECS_VIRQ) {
        const owner = d.vcpus[d.portVcpu[port]!];
        if (owner) owner.virqToPort[d.portVirq[port]!] = 0;
      } else if (d.portState[port] === ECS_INTERDOMAIN) {
        const rd = hv.domainById(d.portRemoteDom[port]!);
        const rport = d.portRemotePort[port]!;
        if (rd !== null && rd.portState[rport] === ECS_INTERDOMAIN) {
          rd.portState[rport] = ECS_UNBOUND;
          rd.portRemoteDom[rport] = d.id;
        }
      }
      d.portState[port] = ECS_FREE;
      d.portRemoteDom[port] = -1;
      bitTestClear(hv, d.sharedInfoMa + SharedInfoLayout.evtchn_pending, port);
      return 0;
    }
    default:
      return hv.fail(ENOSYS, `event_channel_op ${cmd} is not implemented`);
  }
}
