/**
 * The registered benchmark suites, in the order `pnpm bench` runs them.
 *
 * @module
 */

import type { Suite } from "../suite.js";
import { splitQueueSuite } from "./split-queue.js";
import { virtioBlkSuite } from "./virtio-blk.js";

/** Every suite the runner knows, by run order. */
export const suites: readonly Suite[] = [splitQueueSuite, virtioBlkSuite];
