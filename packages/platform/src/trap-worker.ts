/**
 * Runs a guest in a Node `worker_threads` Worker over a {@link TrapChannel}: the host
 * thread serves its exits, a {@link TrapWatchdog} stops a guest that spins or overstays,
 * and however the guest ends — exit, panic, uncaught exception, stall, budget, a worker
 * that just vanished — the host thread keeps running, the worker is gone, and the result
 * says what happened.
 *
 * @module
 */

import { Worker, type WorkerOptions } from "node:worker_threads";
import {
  TrapChannel,
  type TrapChannelSnapshot,
  type TrapHandler,
  type TrapServeMode,
  type TrapServer,
  type TrapServerOptions,
  TrapWatchdog,
  type TrapWatchdogTrip,
} from "./trap-channel.js";

/** What the guest's worker finds in `workerData`. */
export interface TrapWorkerData<Data = unknown> {
  /** The channel's buffer: `TrapChannel.attach(workerData.channel).port()`. */
  readonly channel: SharedArrayBuffer;
  /** Guest RAM, when the host passed one (e.g. `GuestMemory.over(workerData.memory)`), else `null`. */
  readonly memory: SharedArrayBuffer | null;
  /** The host's `workerData` option. */
  readonly data: Data;
}

/** How a guest run ended. */
export type TrapWorkerOutcome =
  /** The guest called `exit()` (or `run()` returned). */
  | "exited"
  /** The guest called `panic()` (or `run()` caught an exception), or threw uncaught. */
  | "panicked"
  /** The watchdog saw no exit or heartbeat for `stallMs` while it ran; the worker was terminated. */
  | "stalled"
  /** The wall-clock budget ran out; the worker was terminated. */
  | "budget"
  /** The worker ended without the guest saying how (e.g. `process.exit`, a resource limit). */
  | "died";

/** Options of {@link runTrapWorker}. */
export interface RunTrapWorkerOptions {
  /**
   * The worker's entry: runnable JavaScript (a path or `file:` URL). Bundle a TypeScript
   * guest first (pvkit's tests use `test-utils/bundle-worker.ts`).
   */
  readonly script: string | URL;
  /** Runs each exit on this thread. */
  readonly handler: TrapHandler;
  /** How the host waits for exits (default `"async"`; see {@link TrapServeMode}). */
  readonly mode?: TrapServeMode;
  /** The channel (default: a fresh one). */
  readonly channel?: TrapChannel;
  /** Guest RAM to hand the worker (see {@link TrapWorkerData.memory}). */
  readonly memory?: SharedArrayBuffer;
  /** Anything structured-cloneable for the guest ({@link TrapWorkerData.data}). */
  readonly workerData?: unknown;
  /** Trip when the running guest makes no exit or heartbeat for this long, ms (default 2000). */
  readonly stallMs?: number;
  /** Trip when the whole run takes longer, ms (default 60 000). */
  readonly budgetMs?: number;
  /** How long a guest that said it finished may take to end its worker before it is terminated, ms (default 1000). */
  readonly exitGraceMs?: number;
  /** Options of the host's {@link TrapServer}. */
  readonly server?: TrapServerOptions;
  /** More `Worker` options (`resourceLimits`, `env`, `execArgv`…); `workerData` is set by this function. */
  readonly workerOptions?: Omit<WorkerOptions, "workerData">;
  /** Called once the worker exists, before serving starts (schedule interrupts, keep the server). */
  readonly onStart?: (server: TrapServer, worker: Worker) => void;
  /** Receives every message the guest posts with `parentPort.postMessage`. */
  readonly onMessage?: (message: unknown) => void;
}

/** A guest run that did not end with `exit()`: what happened, with the channel's last state. */
export class TrapGuestError extends Error {
  /** How the run ended. */
  readonly outcome: Exclude<TrapWorkerOutcome, "exited">;
  /** The channel when the run ended. */
  readonly snapshot: TrapChannelSnapshot;
  /** The guest's panic message or the uncaught error's stack, when there is one. */
  readonly guestMessage: string | null;

  /**
   * @param outcome - how the run ended
   * @param message - one line for the host
   * @param snapshot - the channel at the end
   * @param guestMessage - the guest's own words, if any
   */
  constructor(
    outcome: Exclude<TrapWorkerOutcome, "exited">,
    message: string,
    snapshot: TrapChannelSnapshot,
    guestMessage: string | null,
  ) {
    super(message);
    this.name = "TrapGuestError";
    this.outcome = outcome;
    this.snapshot = snapshot;
    this.guestMessage = guestMessage;
  }
}

/** The end of a guest run. */
export interface TrapWorkerResult {
  /** How it ended. */
  readonly outcome: TrapWorkerOutcome;
  /** `outcome === "exited"` with exit code 0. */
  readonly ok: boolean;
  /** The guest's exit code when it exited, else `null`. */
  readonly exitCode: number | null;
  /** Why it did not exit (`null` when it did). */
  readonly error: TrapGuestError | null;
  /** The watchdog's trip, if it tripped. */
  readonly trip: TrapWatchdogTrip | null;
  /** True when the host had to terminate the worker. */
  readonly terminated: boolean;
  /** The worker thread's own exit code (1 after an uncaught exception or termination). */
  readonly workerExitCode: number;
  /** Exits answered. */
  readonly served: number;
  /** Handler exceptions answered with `HANDLER_FAULT`. */
  readonly faults: number;
  /** The channel at the end. */
  readonly snapshot: TrapChannelSnapshot;
  /** The channel. */
  readonly channel: TrapChannel;
}

function firstLine(text: string): string {
  const nl = text.indexOf("\n");
  return nl < 0 ? text : text.slice(0, nl);
}

/**
 * Spawns a worker running a guest, serves its exits on this thread until it ends, and
 * reports how it ended. Never rejects because of the guest: a panic, an uncaught
 * exception, a stall or a worker that died come back as {@link TrapWorkerResult.error};
 * the worker is terminated whenever it does not end by itself.
 *
 * @example
 * ```ts
 * const r = await runTrapWorker({ script: bundled, handler: (op, a) => bus.read("pio", a[0], 1) });
 * if (r.error) throw r.error; // "guest stalled: no exit or heartbeat for 2004 ms (guest running, …)"
 * ```
 *
 * @param options - see {@link RunTrapWorkerOptions}
 * @returns the run's result
 */
export async function runTrapWorker(options: RunTrapWorkerOptions): Promise<TrapWorkerResult> {
  const channel = options.channel ?? TrapChannel.create();
  const server = channel.server(options.server ?? {});
  const workerData: TrapWorkerData = {
    channel: channel.buffer,
    memory: options.memory ?? null,
    data: options.workerData,
  };
  const worker = new Worker(options.script, { ...options.workerOptions, workerData });
  let uncaught: Error | null = null;
  let trip: TrapWatchdogTrip | null = null;
  let terminated = false;
  const workerExit = new Promise<number>((resolve) => {
    worker.once("exit", (code) => {
      server.close(); // nobody is left to make exits: stop waiting for them
      resolve(code);
    });
  });
  worker.on("error", (error: Error) => {
    uncaught ??= error;
  });
  if (options.onMessage !== undefined) worker.on("message", options.onMessage);
  const terminate = (): void => {
    if (terminated) return;
    terminated = true;
    server.close();
    void worker.terminate();
  };
  const watchdog = new TrapWatchdog(channel, {
    stallMs: options.stallMs ?? 2000,
    budgetMs: options.budgetMs ?? 60_000,
    onTrip: (t) => {
      trip = t;
      terminate();
    },
  });
  watchdog.start();
  let served = { served: 0, faults: 0 };
  try {
    options.onStart?.(server, worker);
    served = await server.serve(options.handler, { mode: options.mode ?? "async" });
  } finally {
    watchdog.stop();
    // The guest said it is done (or serving ended): give its worker a moment to end.
    const grace = options.exitGraceMs ?? 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = await Promise.race([
      workerExit.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), grace);
      }),
    ]);
    clearTimeout(timer);
    if (late) terminate();
  }
  const workerExitCode = await workerExit;
  const snapshot = channel.snapshot();
  let outcome: TrapWorkerOutcome;
  let message: string;
  let guestMessage: string | null = null;
  const t = trip as TrapWatchdogTrip | null;
  const error = uncaught as Error | null;
  if (t !== null) {
    outcome = t.reason === "budget" ? "budget" : "stalled";
    message = `${t.message}; worker terminated`;
  } else if (snapshot.panicMessage !== null) {
    outcome = "panicked";
    guestMessage = snapshot.panicMessage;
    message = `guest panicked: ${firstLine(snapshot.panicMessage)} (${channel.describe()})`;
  } else if (error !== null) {
    outcome = "panicked";
    guestMessage = error.stack ?? error.message;
    message = `guest threw: ${error.name}: ${error.message} (${channel.describe()})`;
  } else if (snapshot.stateName === "exited") {
    outcome = "exited";
    message = "";
  } else {
    outcome = "died";
    message = `guest worker ended (code ${workerExitCode}) without exit() or panic() (${channel.describe()})`;
  }
  const exited = outcome === "exited";
  return {
    outcome,
    ok: exited && snapshot.exitCode === 0,
    exitCode: exited ? snapshot.exitCode : null,
    error:
      outcome === "exited" ? null : new TrapGuestError(outcome, message, snapshot, guestMessage),
    trip: t,
    terminated,
    workerExitCode,
    served: served.served,
    faults: served.faults,
    snapshot,
    channel,
  };
}
