/**
 * Shared pieces of the guest-kernel tests: small workload parameters and a booter.
 */

import {
  type BootOptions,
  bootInProcess,
  type GuestKernelVm,
  type KernelConfig,
} from "../src/index.js";

/** Parameters small enough for unit tests, large enough to exercise every path. */
export const SMALL: Readonly<Record<string, Record<string, number>>> = {
  "fork-exit": { iterations: 4, pages: 12, writes: 3, parentWrites: 2 },
  exec: { iterations: 3, textPages: 4, dataPages: 2 },
  mmap: { iterations: 3, pages: 40 },
  pagefault: { pages: 48 },
  pipe: { roundTrips: 6, bytes: 100 },
  gettimeofday: { iterations: 20 },
  sleep: { iterations: 5, ns: 30_000 },
  "net-rr": { iterations: 5, bytes: 64 },
  "net-stream": { frames: 70, batch: 16 },
  "disk-rand": { requests: 12 },
  "disk-seq": { blocks: 3 },
};

/** Configurations beyond the presets: every pv_op mixed across modes. */
export const MIXED: readonly KernelConfig[] = [
  { mmu: "hap", time: "pv", irq: "evtchn", net: "rtl8139", blk: "virtio" },
  { mmu: "pv", time: "pit", irq: "pic", net: "virtio", blk: "virtio" },
  { mmu: "shadow", time: "lapic", irq: "evtchn", net: "rtl8139", blk: "virtio" },
  { mmu: "pv", time: "hpet", irq: "evtchn", net: "virtio", blk: "virtio" },
  { mmu: "shadow", time: "pv", irq: "evtchn", net: "virtio", blk: "virtio" },
];

/** Boots in-process with a manual clock (deterministic). */
export function boot(
  config: BootOptions["config"],
  extra: Partial<BootOptions> = {},
): Promise<GuestKernelVm> {
  return bootInProcess({ config, ramBytes: 16 << 20, diskBytes: 2 << 20, ...extra });
}
