/**
 * Time: the PV timer hypercalls and what drives them (reference §4.1).
 *
 * - `set_timer_op` — xen/common/sched/core.c `do_set_timer_op`;
 * - `vcpu_op` timer sub-commands — xen/common/domain.c `do_vcpu_op` (xen/include/public/vcpu.h);
 * - pvclock publication — xen/arch/x86/time.c `__update_vcpu_system_time`, with the
 *   odd/even version protocol of xen/include/xen/time.h;
 * - timer expiry — xen/common/timer.c and `send_timer_event` (VIRQ_TIMER on the vCPU).
 *
 * Guest kernel counterpart: the `timer` pv_ops (`HypercallClient.setTimerOp`,
 * `setSingleshotTimer`, `setPeriodicTimer`, `pvclock`).
 *
 * @module
 */

import {
  PERIODIC_TIMER_MIN_NS,
  SET_TIMER_OP_FALLBACK_NS,
  SET_TIMER_OP_MAX_AHEAD_NS,
  VCPUOP_is_up,
  VCPUOP_set_periodic_timer,
  VCPUOP_set_singleshot_timer,
  VCPUOP_stop_periodic_timer,
  VCPUOP_stop_singleshot_timer,
  VcpuSetSingleshotTimerLayout,
  VIRQ_TIMER,
  XEN_PVCLOCK_TSC_STABLE_BIT,
} from "../abi.js";
import { ManualClock, nsToTsc } from "../clock.js";
import type { Domain, Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import { sendGuestVcpuVirq } from "./event-channel.js";
import type { HypercallContext } from "./hypercall.js";

const EINVAL = -XenErrno.EINVAL;
const EFAULT = -XenErrno.EFAULT;
const ENOENT = -XenErrno.ENOENT;
const ENOSYS = -XenErrno.ENOSYS;

/**
 * Xen re-publishes `vcpu_time_info` at least this often (time calibration `EPOCH`, 1 s in
 * xen/arch/x86/time.c), bounding the drift of the 32-bit TSC scale.
 */
export const TIME_CALIBRATION_NS = 1_000_000_000;

/** Scratch for 64-bit guest reads (single-threaded; never held across a call out). */
const tmp = new Uint32Array(2);

/**
 * The TSC the guest reads with RDTSC (no exit for a PV guest with a stable TSC).
 *
 * @param hv - the hypervisor
 * @returns TSC ticks at the clock's current time
 */
export function readTsc(hv: HypercallContext): number {
  return nsToTsc(hv.clock.nowNs(), hv.options.tscKhz);
}

/**
 * Publishes `vcpu_time_info` for every vCPU of a domain (`__update_vcpu_system_time`,
 * version protocol; reference §4.1).
 *
 * @param hv - the hypervisor
 * @param d - the domain
 */
export function publishDomainTime(hv: HypercallContext, d: Domain): void {
  const now = hv.clock.nowNs();
  hv.lastTimePublish = now;
  const tsc = nsToTsc(now, hv.options.tscKhz);
  for (const v of d.vcpus) {
    hv.clockWriters.get(v)?.publish(tsc, now, hv.timeScale, XEN_PVCLOCK_TSC_STABLE_BIT);
  }
}

/**
 * `HYPERVISOR_set_timer_op(timeout)` (xen/common/sched/core.c `do_set_timer_op`;
 * reference §4.1): absolute ns; 0 cancels; negative or ≥ 2^50 ns ahead is a guest bug and
 * becomes NOW() + 100 ms.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; argument 0 is the timeout
 * @returns 0
 */
export function doSetTimerOp(hv: HypercallContext, v: Vcpu): number {
  const timeout = hv.regNum(v, 0);
  if (timeout === 0) {
    v.singleshotDeadline = -1;
    return 0;
  }
  const now = hv.clock.nowNs();
  if (!(timeout > 0) || timeout - now >= SET_TIMER_OP_MAX_AHEAD_NS) {
    v.singleshotDeadline = now + SET_TIMER_OP_FALLBACK_NS;
  } else {
    v.singleshotDeadline = timeout;
  }
  return 0;
}

/**
 * `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)` (xen/common/domain.c `do_vcpu_op`;
 * xen/include/public/vcpu.h; reference §4.1): the timer sub-commands and `VCPUOP_is_up`.
 * A periodic timer under 1 ms or beyond `STIME_DELTA_MAX` is `-EINVAL`; single-shot timers
 * only for the calling vCPU; `VCPU_SSHOTTMR_future` is ignored (commit 19c6cbd909).
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `cmd` (int), `vcpuid` (u32), `arg` (guest address)
 * @returns 0, 1 for `VCPUOP_is_up`, or `-errno`
 */
export function doVcpuOp(hv: HypercallContext, v: Vcpu): number {
  const cmd = v.regs[0]! | 0;
  const vcpuid = v.regs[2]!;
  const arg = hv.regNum(v, 2);
  const d = v.domain;
  const target = d.vcpus[vcpuid];
  if (target === undefined) return hv.fail(ENOENT, `vcpu_op on missing vCPU ${vcpuid}`);
  switch (cmd) {
    case VCPUOP_set_periodic_timer: {
      if (hv.readGuestU64(d, arg, tmp) < 0) return EFAULT;
      if (tmp[1]! >= 0x8000_0000) return hv.fail(EINVAL, "period > STIME_DELTA_MAX");
      const period = Math.min(tmp[1]! * 2 ** 32 + tmp[0]!, Number.MAX_SAFE_INTEGER);
      if (period < PERIODIC_TIMER_MIN_NS) return hv.fail(EINVAL, `period ${period} ns < 1 ms`);
      target.periodicPeriod = period;
      target.periodicNext = Math.min(hv.clock.nowNs() + period, Number.MAX_SAFE_INTEGER);
      return 0;
    }
    case VCPUOP_stop_periodic_timer:
      target.periodicPeriod = 0;
      target.periodicNext = -1;
      return 0;
    case VCPUOP_set_singleshot_timer: {
      if (target !== v) return hv.fail(EINVAL, "single-shot timer of another vCPU");
      if (
        hv.readGuestU64(d, arg + VcpuSetSingleshotTimerLayout.timeout_abs_ns, tmp) < 0 ||
        hv.readGuestU32(d, arg + VcpuSetSingleshotTimerLayout.flags) < 0
      ) {
        return EFAULT;
      }
      // VCPU_SSHOTTMR_future is ignored (commit 19c6cbd909): a past deadline fires at once.
      const at = Math.min(tmp[1]! * 2 ** 32 + tmp[0]!, Number.MAX_SAFE_INTEGER);
      v.singleshotDeadline = Math.max(at, 1);
      return 0;
    }
    case VCPUOP_stop_singleshot_timer:
      if (target !== v) return hv.fail(EINVAL, "single-shot timer of another vCPU");
      v.singleshotDeadline = -1;
      return 0;
    case VCPUOP_is_up:
      return 1;
    default:
      return hv.fail(ENOSYS, `vcpu_op ${cmd} is not implemented`);
  }
}

/**
 * Earliest pending timer deadline of any vCPU.
 *
 * @param hv - the hypervisor
 * @returns ns, or -1 when no timer is armed
 */
export function nextTimerDeadline(hv: HypercallContext): number {
  let best = -1;
  for (const d of hv.domains) {
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
 * VIRQ_TIMER on its vCPU (`send_timer_event`); re-publishes pvclock once per
 * {@link TIME_CALIBRATION_NS}. Bounded: at most 1 + 2 × (number of vCPUs) expiries per call.
 *
 * @param hv - the hypervisor
 * @returns timers fired
 */
export function fireDueTimers(hv: HypercallContext): number {
  const now = hv.clock.nowNs();
  const domains = hv.domains;
  if (now - hv.lastTimePublish >= TIME_CALIBRATION_NS) {
    for (const d of domains) if (d) publishDomainTime(hv, d);
  }
  let fired = 0;
  let bound = 1;
  for (const d of domains) if (d) bound += 2 * d.vcpus.length;
  for (let n = 0; n < bound; n++) {
    let best: Vcpu | null = null;
    let bestAt = Number.POSITIVE_INFINITY;
    let periodic = false;
    for (const d of domains) {
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
    sendGuestVcpuVirq(hv, best, VIRQ_TIMER);
    fired++;
  }
  return fired;
}

/**
 * Advances a {@link ManualClock} to `targetNs`, stopping at every timer deadline on the way
 * so timers fire at their exact time and in order.
 *
 * @param hv - the hypervisor
 * @param targetNs - time to stop at
 * @returns timers fired
 * @throws Error when the clock is not a ManualClock (use {@link fireDueTimers} with a real
 *   clock)
 */
export function runTimersUntil(hv: HypercallContext, targetNs: number): number {
  const clock = hv.clock;
  if (!(clock instanceof ManualClock)) throw new Error("runUntil needs a ManualClock");
  let fired = 0;
  for (let guard = 0; guard < 10_000_000; guard++) {
    const next = nextTimerDeadline(hv);
    if (next < 0 || next > targetNs) break;
    clock.set(next);
    fired += fireDueTimers(hv);
  }
  clock.set(targetNs);
  fired += fireDueTimers(hv);
  return fired;
}
