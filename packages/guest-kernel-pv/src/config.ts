/**
 * Configurations: which `pv_ops` the guest kernel boots with (Linux's `pv_ops`, chosen
 * once at boot) and which devices the host gives it. The three presets follow the
 * lecture's taxonomy; any valid combination may be given as an object.
 *
 * | preset | mmu | time | irq | net | blk |
 * |---|---|---|---|---|---|
 * | `full-emulation` | shadow (trapping page-table writes) | HPET | emulated 8259 PIC with EOI | RTL8139 | — (no emulated disk) |
 * | `hw-assist+pv-io` | hap (EPT-like, no page-table exits) | LAPIC timer | emulated PIC with EOI | virtio-net | virtio-blk |
 * | `full-pv` | pv (`mmu_update` batches) | pvclock + `set_timer_op` | event channels | virtio-net | virtio-blk |
 *
 * @module
 */

import { GuestKernelError, GuestKernelErrorCode } from "./errors.js";

/** MMU virtualization: Xen PV MMU, shadow paging (trapping), hardware-assisted (EPT/NPT). */
export type MmuMode = "pv" | "shadow" | "hap";
/** Time source and clock event: pvclock + `set_timer_op`, LAPIC timer, HPET, i8254 PIT. */
export type TimeMode = "pv" | "lapic" | "hpet" | "pit";
/** Interrupt delivery: event channels with an upcall, or an emulated controller with EOI. */
export type IrqMode = "evtchn" | "pic";
/** The NIC: virtio-net, or the emulated RTL8139. */
export type NetMode = "virtio" | "rtl8139";
/** The disk: virtio-blk (there is no emulated disk yet). */
export type BlkMode = "virtio";

/** A configuration: one choice per `pv_op`, and the devices. */
export interface KernelConfig {
  /** `pv_ops.mmu`. */
  readonly mmu: MmuMode;
  /** `pv_ops.time` (clocksource and clock event device). */
  readonly time: TimeMode;
  /** `pv_ops.irq`. */
  readonly irq: IrqMode;
  /** The NIC, if any. */
  readonly net?: NetMode;
  /** The disk, if any. */
  readonly blk?: BlkMode;
}

/** The three named configurations. */
export const CONFIG_PRESETS = {
  "full-emulation": { mmu: "shadow", time: "hpet", irq: "pic", net: "rtl8139" },
  "hw-assist+pv-io": { mmu: "hap", time: "lapic", irq: "pic", net: "virtio", blk: "virtio" },
  "full-pv": { mmu: "pv", time: "pv", irq: "evtchn", net: "virtio", blk: "virtio" },
} as const satisfies Record<string, KernelConfig>;

/** A preset name. */
export type ConfigName = keyof typeof CONFIG_PRESETS;

/** The preset names, in the order of the taxonomy. */
export const CONFIG_NAMES: readonly ConfigName[] = ["full-emulation", "hw-assist+pv-io", "full-pv"];

/** A configuration with its name (the preset's, or one made from the fields). */
export interface ResolvedConfig extends KernelConfig {
  /** The preset name, or e.g. `"mmu=hap,time=pv,irq=evtchn,net=virtio"`. */
  readonly name: string;
}

const MMU: readonly MmuMode[] = ["pv", "shadow", "hap"];
const TIME: readonly TimeMode[] = ["pv", "lapic", "hpet", "pit"];
const IRQ: readonly IrqMode[] = ["evtchn", "pic"];
const NET: readonly NetMode[] = ["virtio", "rtl8139"];
const BLK: readonly BlkMode[] = ["virtio"];

function pick<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value === "string" && (allowed as readonly string[]).includes(value))
    return value as T;
  throw new GuestKernelError(
    GuestKernelErrorCode.BAD_CONFIG,
    `configuration field ${field} must be one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${JSON.stringify(value)}`,
  );
}

/**
 * Checks a configuration and names it.
 *
 * @param config - a preset name or a configuration object
 * @returns the configuration with its name
 * @throws GuestKernelError `UNKNOWN_CONFIG` for a name that is not a preset; `BAD_CONFIG`
 *   for a field out of range or an impossible combination (PV time needs event channels:
 *   `VIRQ_TIMER` is an event-channel port)
 */
export function resolveConfig(config: ConfigName | KernelConfig | string): ResolvedConfig {
  if (typeof config === "string") {
    const preset = (CONFIG_PRESETS as Record<string, KernelConfig>)[config];
    if (preset === undefined) {
      throw new GuestKernelError(
        GuestKernelErrorCode.UNKNOWN_CONFIG,
        `unknown configuration "${config}": the presets are ${CONFIG_NAMES.map((n) => `"${n}"`).join(", ")}, or pass an object { mmu, time, irq, net?, blk? }`,
      );
    }
    return { name: config, ...preset };
  }
  if (config === null || typeof config !== "object") {
    throw new GuestKernelError(
      GuestKernelErrorCode.BAD_CONFIG,
      `a configuration is a preset name or an object { mmu, time, irq, net?, blk? }, got ${String(config)}`,
    );
  }
  const mmu = pick("mmu", config.mmu, MMU);
  const time = pick("time", config.time, TIME);
  const irq = pick("irq", config.irq, IRQ);
  const net = config.net === undefined ? undefined : pick("net", config.net, NET);
  const blk = config.blk === undefined ? undefined : pick("blk", config.blk, BLK);
  if (time === "pv" && irq !== "evtchn") {
    throw new GuestKernelError(
      GuestKernelErrorCode.BAD_CONFIG,
      'time "pv" needs irq "evtchn": the PV timer fires VIRQ_TIMER, an event-channel port (xen.h), which an emulated interrupt controller cannot deliver',
    );
  }
  for (const [name, preset] of Object.entries(CONFIG_PRESETS) as [string, KernelConfig][]) {
    if (
      preset.mmu === mmu &&
      preset.time === time &&
      preset.irq === irq &&
      preset.net === net &&
      preset.blk === blk
    ) {
      return { name, mmu, time, irq, ...(net ? { net } : {}), ...(blk ? { blk } : {}) };
    }
  }
  const name = [`mmu=${mmu}`, `time=${time}`, `irq=${irq}`]
    .concat(net ? [`net=${net}`] : [], blk ? [`blk=${blk}`] : [])
    .join(",");
  return { name, mmu, time, irq, ...(net ? { net } : {}), ...(blk ? { blk } : {}) };
}
