/**
 * `pv_ops.irq` (Linux's `pv_irq_ops` plus the interrupt controller driver): how device and
 * timer interrupts reach their handlers, how they are acknowledged, and how the CPU idles.
 *
 * - {@link EvtchnIrqOps}: Xen event channels (2-level ABI, xen/common/event_2l.c; Linux
 *   `xen_evtchn_do_upcall`). A device's interrupt is an interdomain channel bound with
 *   `EVTCHNOP_bind_interdomain` to its backend's port, the PV timer is `VIRQ_TIMER`
 *   (`EVTCHNOP_bind_virq`); pending ports are found in the shared-info page (no exit) and
 *   need no EOI. Idle is `SCHEDOP_block`.
 * - {@link PicIrqOps}: an emulated interrupt controller (an 8259A at 0x20, the LAPIC for
 *   its own timer). Each handled interrupt ends with one EOI — an exit (the cost of an
 *   APIC EOI; Linux's legacy `mask_and_ack_8259A` path would cost four port accesses).
 *   Idle is `HLT`.
 *
 * @module
 */

import { VIRQ_TIMER } from "@pvkit/hypercall";
import type { GuestMemory } from "@pvkit/platform";
import type { BootDevice } from "../../boot.js";
import type { IrqMode } from "../../config.js";
import { type Cpu, ExitOp, IrqLineNo } from "../../exit.js";
import type { CpuBus } from "../arch/cpu-bus.js";
import type { XenHypercalls } from "../arch/xen.js";
import { panic } from "../panic.js";

/** An interrupt handler. */
export type IrqHandler = () => void;

/** The kernel's interrupt operations. */
export interface IrqOps {
  /** Which mode. */
  readonly mode: IrqMode;
  /** `request_irq` for a device (at boot, before the device is probed). */
  bindDevice(dev: BootDevice, handler: IrqHandler): void;
  /**
   * The timer interrupt: `VIRQ_TIMER` for the PV timer, else the timer device's route.
   *
   * @param dev - the timer device (`base` 0 for the PV timer)
   * @param pv - the timer is Xen's
   * @param localEoi - the LAPIC's EOI, when the timer is the LAPIC's (a local interrupt)
   */
  bindTimer(dev: BootDevice, pv: boolean, handler: IrqHandler, localEoi?: () => void): void;
  /** Runs the handlers of the lines taken from the CPU, with their acknowledgements. @returns handlers run */
  dispatch(lines: number): number;
  /** The idle instruction (`HLT`, or `SCHEDOP_block`): one exit. */
  halt(): void;
}

/** The emulated interrupt controller. */
export class PicIrqOps implements IrqOps {
  readonly mode = "pic" as const;
  private readonly handlers: (IrqHandler | undefined)[] = [];
  private readonly localEoi: ((() => void) | undefined)[] = [];

  /**
   * Unmasks every input of the controller (one exit: OCW1).
   *
   * @param picBase - the command port (0x20)
   */
  constructor(
    private readonly cpu: Cpu,
    private readonly bus: CpuBus,
    private readonly picBase: number,
  ) {
    bus.write("pio", picBase + 1, 1, 0);
  }

  bindDevice(dev: BootDevice, handler: IrqHandler): void {
    this.handlers[dev.line] = handler;
  }

  bindTimer(dev: BootDevice, _pv: boolean, handler: IrqHandler, localEoi?: () => void): void {
    this.handlers[dev.line] = handler;
    this.localEoi[dev.line] = localEoi;
  }

  dispatch(lines: number): number {
    let n = 0;
    for (let line = 0; line < 8; line++) {
      if ((lines & (1 << line)) === 0) continue;
      this.handlers[line]?.();
      n++;
      const eoi = this.localEoi[line];
      if (eoi !== undefined) eoi();
      else this.bus.write("pio", this.picBase, 1, 0x60 | line); // OCW2: specific EOI
    }
    return n;
  }

  halt(): void {
    this.cpu.exit(ExitOp.HALT, 0, 0, 0, 0, 0, 0);
  }
}

const SI_PENDING = 2048;
const SI_MASK = 2560;

/** Event channels. */
export class EvtchnIrqOps implements IrqOps {
  readonly mode = "evtchn" as const;
  private readonly handlers = new Map<number, IrqHandler>();
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  /** Ports handled. */
  events = 0;

  /**
   * Enables upcalls (`evtchn_upcall_mask` = 0 in `vcpu_info`: the guest's "sti"; no exit).
   *
   * @param sharedInfo - the shared-info page
   * @param vcpuInfoOffset - this vCPU's `vcpu_info` in it
   * @param backendDomid - the domain whose ports the devices' channels connect to
   */
  constructor(
    private readonly xen: XenHypercalls,
    sharedInfo: GuestMemory,
    private readonly vcpuInfoOffset: number,
    private readonly backendDomid: number,
  ) {
    const b = sharedInfo.regions[0]!.bytes;
    this.bytes = b;
    this.words = new Int32Array(b.buffer, b.byteOffset, 1024);
    Atomics.store(b, vcpuInfoOffset + 1, 0);
  }

  bindDevice(dev: BootDevice, handler: IrqHandler): void {
    const port = this.xen.bindInterdomain(this.backendDomid, dev.backendPort);
    if (port < 0)
      panic("irq/bind_evtchn", `EVTCHNOP_bind_interdomain(${dev.backendPort}) failed (${port})`);
    this.handlers.set(port, handler);
  }

  bindTimer(dev: BootDevice, pv: boolean, handler: IrqHandler): void {
    if (!pv) {
      this.bindDevice(dev, handler);
      return;
    }
    const port = this.xen.bindVirq(VIRQ_TIMER);
    if (port < 0) panic("irq/bind_virq", `EVTCHNOP_bind_virq(VIRQ_TIMER) failed (${port})`);
    this.handlers.set(port, handler);
  }

  /** Linux `__xen_evtchn_do_upcall` for the 2-level ABI: clear the flag, take the selector, scan. */
  dispatch(lines: number): number {
    if ((lines & (1 << IrqLineNo.EVTCHN)) === 0) return 0;
    const w = this.words;
    const vi = this.vcpuInfoOffset;
    Atomics.store(this.bytes, vi, 0); // evtchn_upcall_pending
    const selLo = Atomics.exchange(w, (vi + 8) >> 2, 0);
    const selHi = Atomics.exchange(w, (vi + 12) >> 2, 0);
    let n = 0;
    for (let j = 0; j < 64; j++) {
      const sel = j < 32 ? selLo : selHi;
      if ((sel & (1 << (j & 31))) === 0) continue;
      for (let h = 0; h < 2; h++) {
        const pi = ((SI_PENDING + j * 8) >> 2) + h;
        const ready = Atomics.load(w, pi) & ~Atomics.load(w, ((SI_MASK + j * 8) >> 2) + h);
        if (ready === 0) continue;
        Atomics.and(w, pi, ~ready);
        for (let bit = 0; bit < 32; bit++) {
          if ((ready & (1 << bit)) === 0) continue;
          const port = j * 64 + h * 32 + bit;
          this.events++;
          n++;
          this.handlers.get(port)?.();
        }
      }
    }
    return n;
  }

  halt(): void {
    if (this.xen.block() < 0) panic("irq/safe_halt", "SCHEDOP_block failed");
  }
}

/** Picks `pv_ops.irq` for the configuration. */
export function createIrqOps(
  mode: IrqMode,
  cpu: Cpu,
  bus: CpuBus,
  xen: XenHypercalls,
  sharedInfo: GuestMemory,
  vcpuInfoOffset: number,
  backendDomid: number,
  picBase: number,
): IrqOps {
  return mode === "evtchn"
    ? new EvtchnIrqOps(xen, sharedInfo, vcpuInfoOffset, backendDomid)
    : new PicIrqOps(cpu, bus, picBase);
}
