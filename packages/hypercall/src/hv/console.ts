/**
 * `console_io` (xen/drivers/char/console.c `do_console_io`; xen.h `CONSOLEIO_*`): the guest's
 * early console. Writes are kept per domain (bounded by `consoleLimit`); reads need privilege.
 *
 * Guest kernel counterpart: the early printk / hvc console.
 *
 * @module
 */

import { CONSOLEIO_read, CONSOLEIO_write } from "../abi.js";
import type { Vcpu } from "../domain.js";
import { XenErrno } from "../errors.js";
import type { HypercallContext } from "./hypercall.js";

const EFAULT = -XenErrno.EFAULT;
const EPERM = -XenErrno.EPERM;
const ENOSYS = -XenErrno.ENOSYS;

/**
 * `HYPERVISOR_console_io(cmd, count, buffer)`: `CONSOLEIO_write` appends `count` bytes of
 * guest memory to the domain's console (`-EFAULT` when the buffer is not the guest's);
 * `CONSOLEIO_read` is `-EPERM` for an unprivileged domain and reads nothing otherwise.
 *
 * @param hv - the hypervisor
 * @param v - the calling vCPU; arguments: `cmd` (int), `count` (u32), `buffer` (guest address)
 * @returns 0 or `-errno`
 */
export function doConsoleIo(hv: HypercallContext, v: Vcpu): number {
  const cmd = v.regs[0]! | 0;
  const count = v.regs[2]!;
  const buffer = hv.regNum(v, 2);
  const d = v.domain;
  if (cmd === CONSOLEIO_write) {
    if (!hv.guestRangeOk(d, buffer, count)) {
      return hv.fail(EFAULT, "console buffer is not guest memory");
    }
    const bytes = hv.machineBytes;
    let text = "";
    for (let i = 0; i < count; i++) text += String.fromCharCode(bytes[d.gpaToMa(buffer + i)]!);
    d.console = (d.console + text).slice(-hv.options.consoleLimit);
    return 0;
  }
  if (cmd === CONSOLEIO_read) {
    if (!d.privileged) return hv.fail(EPERM, "CONSOLEIO_read needs privilege");
    return 0;
  }
  return hv.fail(ENOSYS, `console_io ${cmd}`);
}
