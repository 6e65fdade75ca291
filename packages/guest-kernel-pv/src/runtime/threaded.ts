/**
 * The threaded runtime, host side (Node): the guest kernel runs in a `worker_threads`
 * Worker with machine memory in a `SharedArrayBuffer`; the `HostMachine` — hypervisor,
 * devices, back-ends, timers — stays on the calling thread and answers every exit through
 * `@pvkit/platform`'s trap channel, so an exit is a real synchronous cross-thread round trip
 * (the guest blocks in `Atomics.wait` until the host answers), the analogue of a VM exit to
 * a user-space VMM.
 *
 * - **Serving**: `runTrapWorker` with `mode: "async"`. The host thread is the caller's main
 *   thread, whose event loop also runs the devices' asynchronous back-ends (virtio-blk
 *   completes in a microtask, a socket or file back-end in I/O callbacks), the watchdog's
 *   timer and the idle loop below. `"async"` spins for the next exit and then parks in
 *   `Atomics.waitAsync`, so the event loop turns whenever the guest computes; `"blocking"`
 *   would sit in `Atomics.wait` and let the loop run only every `yieldMs`, delaying every
 *   completion the guest waits for.
 * - **Interrupts**: the host's pending lines *are* word 0 of the channel's pending bitmap
 *   (`HostMachine`'s `pendingWord`, updated with `Atomics`); `host.onInterrupt` forwards
 *   each newly raised line to `TrapServer.raise`, which publishes the summary and wakes a
 *   halted guest with `Atomics.notify`.
 * - **Idle**: when the guest idles (its `HLT` or `SCHEDOP_block` exit, then a halt on the
 *   channel) the host runs what `InProcessCpu.waitForInterrupt` runs in-process: re-signal
 *   level lines and fire due timers (`host.idle()`), let the event loop run, move a manual
 *   or warp clock to the next deadline, and declare a guest that nothing can wake
 *   deadlocked after {@link IDLE_WATCHDOG_MS}.
 * - **Time**: a {@link SharedClock} both threads read (`RDTSC` in the worker). A warp or
 *   real clock moves while the guest runs, so the host also fires due timers every
 *   millisecond while it runs (in-process that happens at every kernel entry).
 * - **Counts**: exits, interrupts and notifications equal the in-process ones for the same
 *   workload and a manual clock (the tests check every workload and preset). One timing
 *   dependence remains by design: a completion a back-end defers (virtio-blk signals its
 *   used ring from a microtask) reaches the guest when this thread's event loop next turns;
 *   in-process that is always the guest's next idle, here it may come earlier — then the
 *   guest finds the interrupt before idling and makes one `HLT`/`SCHEDOP_block` fewer.
 * - **Failures**: a guest that spins without exits or heartbeat is stopped by the trap
 *   watchdog (`GUEST_STALLED`); a panic comes back as a `GuestPanic` with its location; a
 *   worker that vanishes is `GUEST_DIED`. The worker is terminated whenever it does not end
 *   by itself and the host thread carries on.
 *
 * @module
 */

import { pathToFileURL } from "node:url";
import type { Worker } from "node:worker_threads";
import { Hypercall, SCHEDOP_block } from "@pvkit/hypercall";
import {
  TrapChannel,
  TrapGuestState,
  type TrapHandler,
  type TrapServer,
  type TrapServerOptions,
  TrapWord,
  yieldToEventLoop,
} from "@pvkit/platform";
import { runTrapWorker, type TrapWorkerResult } from "@pvkit/platform/node";
import type { ResolvedConfig } from "../config.js";
import { GuestKernelError, GuestKernelErrorCode } from "../errors.js";
import { ExitOp } from "../exit.js";
import type { GuestRunResult } from "../guest/kernel.js";
import type { Program } from "../guest/user.js";
import type { WorkloadParams } from "../guest/workloads/index.js";
import { SharedClock } from "../host/clock.js";
import type { HostMachine } from "../host/machine.js";
import { kernelOptionsOf } from "./boot-kernel.js";
import { IDLE_WATCHDOG_MS } from "./in-process.js";
import {
  COMMAND_LINE,
  deserializeGuestError,
  MAILBOX_BYTES,
  type ThreadedCommand,
  type ThreadedGuestData,
  type ThreadedGuestMessage,
  writeCommand,
} from "./threaded-guest.js";
import {
  type BootOptions,
  checkRun,
  createHost,
  type GuestVm,
  measureRun,
  type WorkloadResult,
} from "./vm.js";

/** Options of {@link bootThreaded}. */
export interface ThreadedBootOptions extends BootOptions {
  /**
   * The worker's entry, runnable JavaScript (default: the package's built `worker.js` /
   * `worker.cjs` next to this module). From the TypeScript sources pass a bundle of
   * `src/worker.ts` (esbuild with the `@pvkit/source` condition, as pvkit's
   * `test-utils/bundle-worker.ts` does), or of your own entry that calls
   * `startThreadedGuest` with extra programs.
   */
  readonly workerScript?: string | URL;
  /** Stop a guest that runs this long without an exit or a heartbeat, ms (default 2000). */
  readonly stallMs?: number;
  /** Options of the host's trap server (spin, yields). */
  readonly server?: TrapServerOptions;
}

/** Figures of the threaded transport (cumulative since boot). */
export interface ThreadedStats {
  /** Exits answered through the channel (boot included). */
  readonly served: number;
  /** Times the host's serve loop parked waiting for an exit. */
  readonly hostSleeps: number;
  /** Times the host's idle loop ran (the guest halted). */
  readonly idles: number;
}

/** A guest booted in the threaded runtime. */
export interface ThreadedVm extends GuestVm {
  /** The runtime. */
  readonly runtime: "threaded";
  /** The trap channel. */
  readonly channel: TrapChannel;
  /** The shared clock. */
  readonly clock: SharedClock;
  /** Transport figures. */
  stats(): ThreadedStats;
  /** How the worker ended, once it has (`null` while it runs). */
  readonly ended: TrapWorkerResult | null;
}

function defaultWorkerScript(): URL {
  const here =
    (import.meta as { url?: string }).url ??
    (typeof __filename === "string" ? pathToFileURL(__filename).href : undefined);
  if (here === undefined || /\.[cm]?tsx?$/.test(here)) {
    throw new GuestKernelError(
      GuestKernelErrorCode.BAD_CONFIG,
      "the threaded runtime runs from the TypeScript sources here: pass workerScript, a JavaScript bundle of src/worker.ts (esbuild with the @pvkit/source condition, e.g. test-utils/bundle-worker.ts)",
    );
  }
  return new URL(here.endsWith(".cjs") ? "./worker.cjs" : "./worker.js", here);
}

interface Waiter {
  readonly resolve: (r: GuestRunResult) => void;
  readonly reject: (e: Error) => void;
}

/** The host's side of one threaded guest. */
class ThreadedHost implements ThreadedVm {
  readonly runtime = "threaded" as const;
  readonly config: ResolvedConfig;
  ended: TrapWorkerResult | null = null;
  private server: TrapServer | null = null;
  private worker: Worker | null = null;
  private readonly ctrl: Int32Array;
  private waiter: Waiter | null = null;
  private bootWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private dead: Error | null = null;
  private idling = false;
  private kickBeat = 0;
  private idles = 0;
  private deadlocked = false;
  private closing = false;
  private done: Promise<TrapWorkerResult> | null = null;
  private timerPoll: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly host: HostMachine,
    readonly channel: TrapChannel,
    readonly clock: SharedClock,
    private readonly mailbox: SharedArrayBuffer,
  ) {
    this.config = host.config;
    this.ctrl = channel.ctrl;
  }

  /** Spawns the worker and waits for the guest's boot. */
  async start(options: ThreadedBootOptions, script: string | URL): Promise<void> {
    const host = this.host;
    const data: ThreadedGuestData = {
      bootInfo: host.bootInfo,
      kernelOptions: kernelOptionsOf(options),
      controls: {
        cr3LoadExits: host.controls.cr3LoadExits,
        tlbFlushExits: host.controls.tlbFlushExits,
        pageFaultExits: host.controls.pageFaultExits,
        nestedPaging: host.controls.nestedPaging,
        writeProtect:
          host.controls.writeProtect === null
            ? null
            : (host.controls.writeProtect.buffer as SharedArrayBuffer),
      },
      clock: this.clock.buffer,
      mailbox: this.mailbox,
    };
    const booted = new Promise<void>((resolve, reject) => {
      this.bootWaiter = { resolve, reject };
    });
    const sched = Hypercall.sched_op;
    const handler: TrapHandler = (op, a) => {
      const r = host.exit(op, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
      if (
        op === ExitOp.HALT ||
        (op === ExitOp.HYPERCALL && a[0] === sched && a[1] === SCHEDOP_block)
      )
        this.kickIdle();
      return r;
    };
    this.done = runTrapWorker({
      script,
      handler,
      mode: "async",
      channel: this.channel,
      memory: host.backing as SharedArrayBuffer,
      workerData: data,
      stallMs: options.stallMs ?? 2000,
      budgetMs: Number.POSITIVE_INFINITY,
      ...(options.server === undefined ? {} : { server: options.server }),
      onStart: (server, worker) => {
        this.server = server;
        this.worker = worker;
        host.onInterrupt = (line) => server.raise(line);
      },
      onMessage: (m) => this.onMessage(m as ThreadedGuestMessage),
    });
    // A real or warp clock moves while the guest runs: fire its due timers (a time slice's
    // end) as InProcessCpu does at every kernel entry, here every millisecond of the event
    // loop. A manual clock moves only in the idle loop.
    if (this.clock.mode !== "manual") {
      const c = this.ctrl;
      this.timerPoll = setInterval(() => {
        if (this.dead === null && Atomics.load(c, TrapWord.STATE) === TrapGuestState.RUNNING)
          host.pollTimers();
      }, 1);
    }
    void this.done.then((r) => this.onEnded(r));
    await booted;
  }

  private onMessage(m: ThreadedGuestMessage): void {
    if (m.type === "ready") {
      this.bootWaiter?.resolve();
      this.bootWaiter = null;
      return;
    }
    if (m.type === "result") {
      const w = this.waiter;
      this.waiter = null;
      w?.resolve(m.result);
      return;
    }
    let error = deserializeGuestError(m.error);
    if (
      this.deadlocked &&
      error instanceof GuestKernelError &&
      error.code === GuestKernelErrorCode.GUEST_DEADLOCK
    ) {
      error = new GuestKernelError(
        GuestKernelErrorCode.GUEST_DEADLOCK,
        `the guest idled for ${IDLE_WATCHDOG_MS} ms with no timer armed and no device activity: it would sleep forever`,
      );
    }
    if (m.boot) {
      this.bootWaiter?.reject(error);
      this.bootWaiter = null;
      return;
    }
    const w = this.waiter;
    this.waiter = null;
    w?.reject(error);
  }

  private onEnded(r: TrapWorkerResult): void {
    this.ended = r;
    if (this.timerPoll !== null) clearInterval(this.timerPoll);
    this.timerPoll = null;
    this.host.onInterrupt = null;
    let error: Error;
    if (r.outcome === "stalled" || r.outcome === "budget") {
      error = new GuestKernelError(
        GuestKernelErrorCode.GUEST_STALLED,
        r.error?.message ?? "the guest stalled; its worker was terminated",
      );
    } else if (r.outcome === "exited" && this.closing) {
      error = new GuestKernelError(GuestKernelErrorCode.BUSY, "the guest was closed");
    } else if (r.outcome === "exited") {
      error = new GuestKernelError(
        GuestKernelErrorCode.BUSY,
        "the guest kernel stopped earlier and its worker has ended",
      );
    } else {
      error = new GuestKernelError(
        GuestKernelErrorCode.GUEST_DIED,
        r.error?.message ?? `the guest's worker ended (${r.outcome})`,
      );
    }
    this.dead = error;
    this.bootWaiter?.reject(error);
    this.bootWaiter = null;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(error);
  }

  // ---------------------------------------------------------------------------------------
  // Idle: what InProcessCpu.waitForInterrupt does, for a guest halted in another thread

  private kickIdle(): void {
    // The guest answered by this exit is about to halt: its halt bumps the heartbeat on
    // entry and on exit, so a heartbeat 2 ahead of this one means that halt is over.
    this.kickBeat = Atomics.load(this.ctrl, TrapWord.HEARTBEAT);
    if (this.idling) return;
    this.idling = true;
    this.idles++;
    void this.idleLoop().finally(() => {
      this.idling = false;
    });
  }

  private async idleLoop(): Promise<void> {
    const host = this.host;
    const c = this.ctrl;
    const started = performance.now();
    const over = (): boolean => Atomics.load(c, TrapWord.HEARTBEAT) - this.kickBeat >= 2;
    for (;;) {
      if (this.dead !== null || this.closing) return;
      const state = Atomics.load(c, TrapWord.STATE);
      if (state !== TrapGuestState.HALTED && state !== TrapGuestState.RUNNING) return;
      if (over()) return;
      if (state !== TrapGuestState.HALTED || host.idle() !== 0) {
        // Not halted yet, or lines are pending and the guest is waking: let it.
        await yieldToEventLoop();
        continue;
      }
      await yieldToEventLoop(); // device back-ends complete
      if (over() || host.idle() !== 0) continue;
      const next = host.nextDeadline();
      if (next >= 0) {
        this.clock.warpTo(next); // manual: set; warp: skip the idle period; real: wait
        continue;
      }
      if (performance.now() - started > IDLE_WATCHDOG_MS) {
        this.deadlocked = true;
        this.server?.requestStop();
        return;
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Runs

  private command(cmd: ThreadedCommand): Promise<WorkloadResult> {
    if (this.dead !== null) {
      return Promise.reject(
        new GuestKernelError(
          GuestKernelErrorCode.BUSY,
          `the guest cannot run: ${this.dead.message}`,
        ),
      );
    }
    if (this.waiter !== null) {
      return Promise.reject(
        new GuestKernelError(
          GuestKernelErrorCode.BUSY,
          "a workload is already running; it must wait",
        ),
      );
    }
    return measureRun(
      this.host,
      "threaded",
      () =>
        new Promise<GuestRunResult>((resolve, reject) => {
          this.waiter = { resolve, reject };
          writeCommand(this.mailbox, cmd);
          this.server!.raise(COMMAND_LINE);
        }),
    );
  }

  async run(workload: string, params: WorkloadParams = {}): Promise<WorkloadResult> {
    checkRun(this.config, workload, params);
    return this.command({ type: "run", workload, params });
  }

  async runProgram(program: Program | string, label = "program"): Promise<WorkloadResult> {
    if (typeof program !== "string") {
      throw new GuestKernelError(
        GuestKernelErrorCode.BAD_PARAMS,
        "the threaded runtime cannot send code to its worker: pass the name of a program the worker's entry registered (startThreadedGuest(…, { programs }))",
      );
    }
    return this.command({ type: "program", name: program, label });
  }

  stats(): ThreadedStats {
    return {
      served: this.server?.served ?? 0,
      hostSleeps: this.server?.sleeps ?? 0,
      idles: this.idles,
    };
  }

  async close(): Promise<void> {
    if (this.done === null) return;
    if (this.dead === null && !this.closing) {
      this.closing = true;
      if (this.waiter === null && this.server !== null) {
        writeCommand(this.mailbox, { type: "close" });
        this.server.raise(COMMAND_LINE);
      } else {
        // A run is in progress: the guest cannot listen; end its worker.
        this.server?.close();
        void this.worker?.terminate();
      }
    }
    await this.done;
  }
}

/**
 * Boots a guest kernel in the threaded runtime: checks the configuration and builds the
 * host on this thread (machine memory, the write-protect bitmap and the clock in
 * `SharedArrayBuffer`s), starts the guest's worker, serves its boot exits and resolves once
 * the kernel has booted. Call {@link GuestVm.close} when done: the host serves until then.
 *
 * @example
 * ```ts
 * const vm = await bootThreaded({ config: "full-pv", workerScript });
 * const r = await vm.run("net-stream", { frames: 400, batch: 32 });
 * await vm.close();
 * ```
 *
 * @param options - as {@link BootOptions}, plus the worker's entry and the watchdog
 * @returns the booted guest
 * @throws GuestKernelError `UNKNOWN_CONFIG` / `BAD_CONFIG` (before any worker starts);
 *   `GuestPanic` when the guest cannot boot; `GUEST_STALLED` / `GUEST_DIED` when its worker
 *   fails during boot
 */
export async function bootThreaded(options: ThreadedBootOptions): Promise<ThreadedVm> {
  const script = options.workerScript ?? defaultWorkerScript();
  const channel = TrapChannel.create();
  const host = createHost(options, {
    shared: true,
    pendingWord: { words: channel.ctrl, index: TrapWord.PENDING },
  });
  const clock = host.clock;
  if (!(clock instanceof SharedClock) || !(host.backing instanceof SharedArrayBuffer)) {
    throw new GuestKernelError(
      GuestKernelErrorCode.BAD_CONFIG,
      "the threaded runtime needs shared machine memory and a SharedClock",
    );
  }
  const vm = new ThreadedHost(host, channel, clock, new SharedArrayBuffer(MAILBOX_BYTES));
  try {
    await vm.start(options, script);
  } catch (e) {
    await vm.close();
    throw e;
  }
  return vm;
}
