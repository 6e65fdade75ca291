/**
 * `sched_op` (xen/common/sched/core.c `do_sched_op`; xen/include/public/sched.h): yield,
 * block until an event arrives (which re-enables upcalls, reference §5.2: "the mask is cleared
 * when the vCPU blocks"), and shutdown with a reason.
 *
 * Guest kernel counterpart: the idle loop (`xen_safe_halt` → `SCHEDOP_block`) and power-off.
 *
 * @module
 */

import { SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_yield, VcpuInfoLayout } from "../abi.js";
import type { Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypercallContext } from "./hypercall.js";

const EFAULT = -XenErrno.EFAULT;
const ENOSYS = -XenErrno.ENOSYS;

/**
 * `HYPERVISOR_sched_op(cmd, arg)`: `SCHEDOP_yield` (nothing to do in this model),
 * `SCHEDOP_block` (unmasks upcalls; the vCPU stays runnable when an event is already pending),
 * `SCHEDOP_shutdown` (`arg` points at the `SHUTDOWN_*` reason).
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `cmd` (int), `arg` (guest address)
 * @returns 0 or `-errno`
 */
export function doSchedOp(hv: HypercallContext, v: Vcpu): number {
  const cmd = v.regs[0]! | 0;
  switch (cmd) {
    case SCHEDOP_yield:
      return 0;
    case SCHEDOP_block: {
      // Blocking re-enables event delivery; pending work means no sleep.
      const bytes = hv.machineBytes;
      const info = v.vcpuInfoMa;
      if (hv.machineShared) {
        // Single-byte atomics: the guest writes these flags from its own thread.
        Atomics.store(bytes, info + VcpuInfoLayout.evtchn_upcall_mask, 0);
        v.blocked = Atomics.load(bytes, info + VcpuInfoLayout.evtchn_upcall_pending) === 0;
      } else {
        bytes[info + VcpuInfoLayout.evtchn_upcall_mask] = 0;
        v.blocked = bytes[info + VcpuInfoLayout.evtchn_upcall_pending] === 0;
      }
      return 0;
    }
    case SCHEDOP_shutdown: {
      const reason = hv.readGuestU32(v.domain, hv.regNum(v, 1));
      if (reason < 0) return EFAULT;
      v.domain.shutdownReason = reason;
      return 0;
    }
    default:
      return hv.fail(ENOSYS, `sched_op ${cmd}`);
  }
}
