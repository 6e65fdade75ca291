/**
 * `@pvkit/guest-kernel-pv/threaded`: the guest side of the threaded runtime — what a worker
 * runs. `startThreadedGuest` boots the kernel on a `ThreadedCpu` (every exit a trap-channel
 * round trip) and serves the host's commands. No Node built-in is used, so a Web Worker
 * entry can call it as well as the package's Node entry (`dist/worker.js`); a worker entry
 * of your own can register programs for `runProgram(name)`.
 *
 * ```ts
 * // my-worker.ts (Node): bundle it and pass it as bootThreaded's workerScript
 * import { parentPort, workerData } from "node:worker_threads";
 * import { startThreadedGuest } from "@pvkit/guest-kernel-pv/threaded";
 * void startThreadedGuest(workerData, (m) => parentPort!.postMessage(m), { programs: { myProgram } });
 * ```
 *
 * @module @pvkit/guest-kernel-pv/threaded
 */

export {
  COMMAND_LINE,
  deserializeGuestError,
  MAILBOX_BYTES,
  type SerializedGuestError,
  type SharedCpuControls,
  serializeGuestError,
  startThreadedGuest,
  type ThreadedCommand,
  ThreadedCpu,
  type ThreadedGuestData,
  type ThreadedGuestMessage,
  type ThreadedGuestOptions,
  type ThreadedWorkerData,
  writeCommand,
} from "./runtime/threaded-guest.js";
