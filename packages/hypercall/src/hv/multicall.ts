/**
 * `multicall` (xen/common/multicall.c `do_multicall`, with the PV entry disposition of
 * xen/arch/x86/pv/hypercall.c `pv_do_multicall_call`; reference §5.1). Each entry runs through
 * the dispatcher's table like a hypercall of its own, minus the exit.
 *
 * Guest kernel counterpart: the batching layer (Linux arch/x86/xen/multicalls.c;
 * `HypercallClient`'s queued requests).
 *
 * @module
 */

import { Hypercall, MulticallEntryLayout } from "../abi.js";
import type { Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypercallContext } from "./hypercall.js";

const EINVAL = -XenErrno.EINVAL;
const EFAULT = -XenErrno.EFAULT;
const ERESTART = -XenErrno.ERESTART;

/** Scratch for 64-bit guest reads (single-threaded; its values are copied out before a call). */
const tmp = new Uint32Array(2);

/**
 * `HYPERVISOR_multicall(call_list, nr_calls)`: each entry's result goes into its own `result`
 * field, a failing entry does not stop the batch, nested multicall is refused (`-EINVAL`), an
 * `iret` entry or a return to user mode ends it (XSA-213). Preemptible between entries; a
 * preempted sub-call has its continuation arguments copied back into its entry (§1.4).
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `call_list` (guest address), `nr_calls`
 * @returns 0, the ending `iret` entry's result, `-EFAULT`/`-EINVAL`, or `-ERESTART`
 */
export function doMulticall(hv: HypercallContext, v: Vcpu): number {
  const list = hv.regNum(v, 0);
  const nr = hv.regNum(v, 1);
  const d = v.domain;
  if (v.inMulticall) return hv.fail(EINVAL, "multicall reentry is disallowed");
  if (!(nr >= 0) || !hv.guestRangeOk(d, list, nr * MulticallEntryLayout.size)) {
    return hv.fail(EFAULT, `multicall list 0x${list.toString(16)} × ${nr} is not guest memory`);
  }
  v.inMulticall = true;
  let rc = 0;
  for (let i = 0; i < nr; i++) {
    const at = list + i * MulticallEntryLayout.size;
    if (i > 0 && hv.preemptCheck(v)) {
      hv.setRegNum(v, 0, at);
      hv.setRegNum(v, 1, nr - i);
      v.inMulticall = false;
      return ERESTART;
    }
    if (hv.readGuestU64(d, at + MulticallEntryLayout.op, tmp) < 0) {
      rc = EFAULT;
      break;
    }
    const op = tmp[1] === 0 ? tmp[0]! : -1;
    for (let a = 0; a < 5; a++) {
      hv.readGuestU64(d, at + MulticallEntryLayout.args + a * 8, tmp);
      v.regs[2 * a] = tmp[0]!;
      v.regs[2 * a + 1] = tmp[1]!;
    }
    const saved = v.work;
    const result = hv.dispatch(v, op);
    v.work = saved + 1;
    if (result === ERESTART) {
      // A preempted sub-call: its continuation arguments go back into the entry.
      for (let a = 0; a < 5; a++) {
        hv.writeGuestU64(
          d,
          at + MulticallEntryLayout.args + a * 8,
          v.regs[2 * a]!,
          v.regs[2 * a + 1]!,
        );
      }
      hv.setRegNum(v, 0, at);
      hv.setRegNum(v, 1, nr - i);
      v.inMulticall = false;
      return ERESTART;
    }
    hv.writeGuestU64(
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
