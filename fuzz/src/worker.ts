/**
 * A fuzz worker thread: plays the cases of one target from `workerData` ({@link WorkerJob})
 * and reports findings and totals to the runner; publishes its progress in shared memory
 * for the runner's watchdog.
 *
 * @module
 */

import { parentPort, workerData } from "node:worker_threads";
import { playCase, type WorkerJob, type WorkerMessage } from "./runner.js";
import type { FuzzTarget } from "./target.js";

const job = workerData as WorkerJob;
const progress = new Int32Array(job.progress);
const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

async function main(): Promise<void> {
  const mod = (await import(job.registry)) as { targets?: readonly FuzzTarget<unknown>[] };
  const target = mod.targets?.find((t) => t.name === job.target);
  if (target === undefined) {
    post({ type: "error", message: `no target named ${job.target} in ${job.registry}` });
    return;
  }
  const onRun = (): void => {
    Atomics.add(progress, 1, 1);
  };
  const t0 = performance.now();
  // The budget starts once the target is loaded (loading takes seconds under tsx).
  const deadline = Date.now() + job.budgetMs;
  let findings = 0;
  let n = 0;
  for (; n < job.maxCases; n++) {
    // Checking the clock every case costs little next to a case.
    if (Date.now() >= deadline) break;
    const index = job.first + n;
    Atomics.store(progress, 0, index);
    const f = await playCase(target, job.seed, index, { onRun, shrinkMs: job.shrinkMs });
    if (f !== null) {
      post({ type: "finding", finding: f });
      if (++findings >= job.maxFindings) {
        n++;
        break;
      }
    }
  }
  Atomics.store(progress, 0, job.first + n);
  post({ type: "done", cases: n, seconds: (performance.now() - t0) / 1000, kind: target.kind });
}

main().catch((e: unknown) => {
  post({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
});
