/**
 * The registry of fuzz targets: every target `pnpm fuzz` knows, in the order it runs them.
 * Add a target with one import and one entry in {@link targets}.
 *
 * @module
 */

import type { FuzzTarget } from "../target.js";
import { blkInflightTarget } from "./blk-inflight.js";
import { hypercallTreeTarget } from "./hypercall-tree.js";
import { netCtrlTarget } from "./net-ctrl.js";
import { pciConfigTarget } from "./pci-config.js";
import { ringPackedTarget, ringTarget } from "./ring.js";
import { rtl8139Target } from "./rtl8139.js";
import { sabCrossThreadTarget } from "./sab-cross-thread.js";
import { v86DispatchTarget } from "./v86-dispatch.js";

/** Every registered target (names are unique, kebab-case). */
export const targets: readonly FuzzTarget<never>[] = [
  ringTarget,
  ringPackedTarget,
  blkInflightTarget,
  pciConfigTarget,
  v86DispatchTarget,
  netCtrlTarget,
  rtl8139Target,
  hypercallTreeTarget,
  sabCrossThreadTarget,
] as unknown as readonly FuzzTarget<never>[];

/** The target named `name`, or `undefined`. */
export function findTarget(name: string): FuzzTarget<unknown> | undefined {
  return targets.find((t) => t.name === name) as FuzzTarget<unknown> | undefined;
}
