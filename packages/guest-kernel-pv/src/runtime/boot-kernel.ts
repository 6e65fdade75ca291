/**
 * Booting the guest kernel on a `Cpu`: the one place both runtimes build it. In-process the
 * `Cpu` calls the host directly; in the threaded runtime it is a trap-channel port in a
 * worker and `backing` is the `SharedArrayBuffer` of machine memory. Guest-side code only:
 * no host module and no Node built-in is imported here, so a worker bundle stays small.
 *
 * @module
 */

import type { MemoryBacking } from "@pvkit/platform";
import { type BootInfo, guestMemoryViews } from "../boot.js";
import type { Cpu } from "../exit.js";
import { Kernel, type KernelOptions } from "../guest/kernel.js";

/**
 * The kernel options of a larger options object (budgets and tunables only: plain data
 * that can be sent to a worker).
 *
 * @param options - e.g. `BootOptions`
 * @returns `maxExits`, `maxSteps`, `pvBatch`, `quantumNs` where given
 */
export function kernelOptionsOf(options: KernelOptions): KernelOptions {
  const out: { -readonly [K in keyof KernelOptions]: KernelOptions[K] } = {};
  if (options.maxExits !== undefined) out.maxExits = options.maxExits;
  if (options.maxSteps !== undefined) out.maxSteps = options.maxSteps;
  if (options.pvBatch !== undefined) out.pvBatch = options.pvBatch;
  if (options.quantumNs !== undefined) out.quantumNs = options.quantumNs;
  return out;
}

/**
 * Boots the guest kernel: builds its memory views over machine memory and runs the
 * kernel's boot (page allocator, `pv_ops`, interrupt routes, device probes).
 *
 * @param cpu - the guest's CPU
 * @param boot - what the host handed over
 * @param backing - the buffer holding machine memory
 * @param options - budgets and tunables
 * @returns the booted kernel
 * @throws GuestPanic when the guest cannot boot
 */
export function bootKernel(
  cpu: Cpu,
  boot: BootInfo,
  backing: MemoryBacking,
  options: KernelOptions,
): Kernel {
  return new Kernel(cpu, boot, guestMemoryViews(backing, boot.memory), kernelOptionsOf(options));
}
