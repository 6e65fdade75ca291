/**
 * The registered benchmark suites, in the order `pnpm bench` runs them.
 *
 * @module
 */

import type { Suite } from "../suite.js";
import { diskImagesSuite } from "./disk-images.js";
import { guestKernelSuite } from "./guest-kernel.js";
import { hypercallMmuSuite } from "./hypercall-mmu.js";
import { nicCompareSuite } from "./nic-compare.js";
import { splitQueueSuite } from "./split-queue.js";
import { timersSuite } from "./timers.js";
import { trapChannelSuite } from "./trap-channel.js";
import { v86GuestSuite } from "./v86-guest.js";
import { virtioBlkSuite } from "./virtio-blk.js";
import { virtioNetSuite } from "./virtio-net.js";

/** Every suite the runner knows, by run order. */
export const suites: readonly Suite[] = [
  nicCompareSuite,
  splitQueueSuite,
  virtioBlkSuite,
  diskImagesSuite,
  virtioNetSuite,
  hypercallMmuSuite,
  timersSuite,
  guestKernelSuite,
  v86GuestSuite,
  trapChannelSuite,
];
