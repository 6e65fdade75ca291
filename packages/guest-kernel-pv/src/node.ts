/**
 * `@pvkit/guest-kernel-pv/node`: the threaded runtime's host side, which needs Node's
 * `worker_threads` (the rest of the package runs anywhere). The guest side
 * (`startThreadedGuest`, `ThreadedCpu`) is `@pvkit/guest-kernel-pv/threaded`, `SharedClock` is
 * in the main entry; the Node worker entry ships as `dist/worker.js`.
 *
 * ```ts
 * import { bootThreaded } from "@pvkit/guest-kernel-pv/node";
 * const vm = await bootThreaded({ config: "full-pv" });
 * const r = await vm.run("fork-exit", { iterations: 10 });
 * await vm.close();
 * ```
 *
 * @module @pvkit/guest-kernel-pv/node
 */

export {
  bootThreaded,
  type ThreadedBootOptions,
  type ThreadedStats,
  type ThreadedVm,
} from "./runtime/threaded.js";
