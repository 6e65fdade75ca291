/**
 * The Node entry of the threaded runtime's guest: `bootThreaded` starts this file in a
 * `worker_threads` Worker (the package ships it built as `dist/worker.js` / `worker.cjs`).
 * It only wires {@link startThreadedGuest} to `parentPort`; a Web Worker entry does the
 * same with `self.postMessage` and the start data it receives in its first message.
 *
 * @module
 */

import { parentPort, workerData } from "node:worker_threads";
import { startThreadedGuest, type ThreadedWorkerData } from "./threaded.js";

if (parentPort !== null) {
  const port = parentPort;
  void startThreadedGuest(workerData as ThreadedWorkerData, (message) => port.postMessage(message));
}
