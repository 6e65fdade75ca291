/**
 * What both runtimes share: booting a guest kernel on a host machine for a configuration,
 * and a `GuestKernelVm` that runs workloads and combines the guest's results with the
 * host's counters. {@link bootInProcess} is the in-process runtime; a threaded runtime
 * supplies another `Cpu` (a trap-channel port in a worker) and serves the same
 * `HostMachine.exit` on the host thread.
 *
 * @module
 */

import { type Clock, Hypercall, ManualClock, RealClock } from "@pvkit/hypercall";
import {
  type ConfigName,
  type KernelConfig,
  type ResolvedConfig,
  resolveConfig,
} from "../config.js";
import { GuestKernelError, GuestKernelErrorCode } from "../errors.js";
import { EXIT_OP_NAMES, ExitOp } from "../exit.js";
import type { GuestRunResult, Kernel, KernelOptions } from "../guest/kernel.js";
import type { Program, ReportValue } from "../guest/user.js";
import { checkWorkload, type WorkloadParams } from "../guest/workloads/index.js";
import { SharedClock, WarpClock } from "../host/clock.js";
import { HostMachine, type HostMachineOptions } from "../host/machine.js";
import { bootKernel } from "./boot-kernel.js";
import { InProcessCpu } from "./in-process.js";

/** Which runtime ran a workload. */
export type RuntimeKind = "in-process" | "threaded";

/** Options of {@link bootInProcess} (and of the threaded runtime's `bootThreaded`). */
export interface BootOptions extends KernelOptions {
  /** A preset name or a configuration object. */
  readonly config: ConfigName | KernelConfig | string;
  /** Guest RAM in bytes (default 32 MiB). */
  readonly ramBytes?: number;
  /** Disk size in bytes (default 8 MiB; only with a disk). */
  readonly diskBytes?: number;
  /**
   * The clock: `"manual"` (default: time moves only when the guest idles — deterministic),
   * `"warp"` (real time that skips the guest's idle periods), `"real"`, or a `Clock`
   * (in-process only: a clock object cannot be read from the guest's thread).
   */
  readonly clock?: "manual" | "warp" | "real" | Clock;
}

/** Exits by kind (`pio_read`, `hypercall`, `pte_write`, …; only kinds that occurred). */
export type ExitsByKind = Readonly<Record<string, number>>;

/** Whole-run figures, counted on both sides of the wall (they must agree). */
export interface RunTotals {
  /** Exits the host handled during the run (boot excluded). */
  readonly hostExits: number;
  /** Exits the guest kernel made during the run. */
  readonly guestExits: number;
  /** Exit records the host refused during the run. */
  readonly rejectedExits: number;
  /** Interrupts the host injected during the run. */
  readonly hostInterrupts: number;
  /** Wall time of the whole run (setup and teardown included), ns. */
  readonly elapsedNs: number;
}

/** What one workload run measured: the measured part of the workload, per the guest's counters. */
export interface WorkloadResult {
  /** The workload. */
  readonly workload: string;
  /** The configuration's name. */
  readonly config: string;
  /** The runtime. */
  readonly runtime: RuntimeKind;
  /** Operations the workload counted. */
  readonly ops: number;
  /** Exit status of the workload's first process. */
  readonly exitStatus: number;
  /** Guest-visible results (equal in every configuration and runtime). */
  readonly results: Readonly<Record<string, ReportValue>>;
  /** What the host saw of the guest's output (its sink's UDP bytes, echo replies sent). */
  readonly hostResults: Readonly<Record<string, number>>;
  /** Exits (every kind). */
  readonly exits: number;
  /** Exits by kind. */
  readonly exitsByKind: ExitsByKind;
  /** Hypercalls by name (`mmu_update`, `set_timer_op`, …; only those that occurred). */
  readonly hypercalls: Readonly<Record<string, number>>;
  /** Interrupts handled (lines, or event-channel ports). */
  readonly interrupts: number;
  /** Virtio queue notifications the drivers sent. */
  readonly notifications: number;
  /** Context switches. */
  readonly contextSwitches: number;
  /** Page faults. */
  readonly pageFaults: number;
  /** TLB misses of user accesses. */
  readonly tlbMisses: number;
  /** Memory references of page walks (4 per miss, 24 with nested paging). */
  readonly walkRefs: number;
  /** Kernel steps. */
  readonly steps: number;
  /** Wall time of the measured part, ns. */
  readonly elapsedNs: number;
  /** Guest time of the measured part, ns (virtual with a manual clock). */
  readonly guestNs: number;
  /** The whole run, from both sides. */
  readonly run: RunTotals;
  /** Messages of processes killed because their program threw. */
  readonly processErrors: readonly string[];
}

const HYPERCALL_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Hypercall).map(([name, nr]) => [nr, name]),
);

/**
 * Turns the guest's measured counters into a result (shared by both runtimes).
 *
 * @returns the result, without the runtime-specific whole-run totals
 */
export function resultFromGuest(
  config: ResolvedConfig,
  runtime: RuntimeKind,
  g: GuestRunResult,
  run: RunTotals,
  hostResults: Readonly<Record<string, number>>,
): WorkloadResult {
  const m = g.measured;
  const byKind: Record<string, number> = {};
  for (let op = ExitOp.PIO_READ; op <= ExitOp.HALT; op++) {
    const n = m.exitsByOp[op] ?? 0;
    if (n !== 0) byKind[EXIT_OP_NAMES[op]!] = n;
  }
  const hypercalls: Record<string, number> = {};
  m.hypercalls.forEach((n, nr) => {
    if (n !== 0) hypercalls[HYPERCALL_NAMES[nr] ?? `hypercall_${nr}`] = n;
  });
  return {
    workload: g.workload,
    config: config.name,
    runtime,
    ops: g.ops,
    exitStatus: g.exitStatus,
    results: g.results,
    hostResults,
    exits: m.exits,
    exitsByKind: byKind,
    hypercalls,
    interrupts: m.interrupts,
    notifications: m.notifications,
    contextSwitches: m.contextSwitches,
    pageFaults: m.pageFaults,
    tlbMisses: m.tlbMisses,
    walkRefs: m.walkRefs,
    steps: m.steps,
    elapsedNs: m.wallNs,
    guestNs: m.guestNs,
    run,
    processErrors: g.processErrors,
  };
}

/** A booted guest, whatever the runtime. */
export interface GuestVm {
  /** The configuration. */
  readonly config: ResolvedConfig;
  /** The runtime. */
  readonly runtime: RuntimeKind;
  /** The host (its devices, counters, fault injection). */
  readonly host: HostMachine;
  /**
   * Runs a workload to completion.
   *
   * @throws GuestKernelError for misuse (`UNKNOWN_WORKLOAD`, `BAD_PARAMS`,
   *   `MISSING_DEVICE`, `BUSY`) and when the guest stops (`GuestPanic`,
   *   `GuestBudgetExceeded`, `GUEST_DEADLOCK`)
   */
  run(workload: string, params?: WorkloadParams): Promise<WorkloadResult>;
  /**
   * Runs any program as the first process. In-process: a generator function. Threaded: a
   * program is code, not data, and cannot be sent to a worker — pass the name of a program
   * the worker's entry registered (`startThreadedGuest(…, { programs })`).
   *
   * @param program - a generator function `(u) => …` yielding system calls, or (threaded)
   *   a registered program's name
   * @param label - its name in the result
   */
  runProgram(program: Program | string, label?: string): Promise<WorkloadResult>;
  /** Releases the guest: in-process nothing to do; threaded, the worker ends (terminated if it must). */
  close(): Promise<void>;
}

/** A guest booted in-process: its kernel is an object on this thread. */
export interface GuestKernelVm extends GuestVm {
  /** The runtime. */
  readonly runtime: "in-process";
  /** The guest kernel (its page database, counters). */
  readonly kernel: Kernel;
}

/**
 * Makes the host's clock for `BootOptions.clock`.
 *
 * @param c - the option
 * @param shared - the guest runs in another thread: the clock must be a {@link SharedClock}
 * @returns the clock
 * @throws GuestKernelError `BAD_CONFIG` for anything else, or a `Clock` object with `shared`
 */
export function makeClock(c: BootOptions["clock"], shared = false): Clock {
  if (shared) {
    if (c === undefined || c === "manual") return SharedClock.create("manual");
    if (c === "warp" || c === "real") return SharedClock.create(c);
    if (c instanceof SharedClock) return c;
    throw new GuestKernelError(
      GuestKernelErrorCode.BAD_CONFIG,
      `the threaded runtime's clock must be "manual", "warp", "real" or a SharedClock (the guest's thread reads it), got ${typeof c === "object" && c !== null ? "a Clock object" : String(c)}`,
    );
  }
  if (c === undefined || c === "manual") return new ManualClock(1_000_000_000);
  if (c === "warp") return new WarpClock();
  if (c === "real") return new RealClock();
  if (c !== null && typeof c === "object" && typeof c.nowNs === "function") return c;
  throw new GuestKernelError(
    GuestKernelErrorCode.BAD_CONFIG,
    `clock must be "manual", "warp", "real" or a Clock, got ${String(c)}`,
  );
}

/**
 * Builds the host for boot options: checks the configuration and the clock, then the
 * machine. Everything here throws before any guest code runs (before a worker starts).
 *
 * @param options - the boot options
 * @param extra - runtime-specific machine options (`shared`, `pendingWord`)
 * @returns the host
 * @throws GuestKernelError `UNKNOWN_CONFIG` / `BAD_CONFIG`; RangeError for a RAM or disk size
 *   that is not whole pages / sectors
 */
export function createHost(
  options: BootOptions,
  extra: Pick<HostMachineOptions, "shared" | "pendingWord"> = {},
): HostMachine {
  const config = resolveConfig(options.config);
  return new HostMachine({
    config,
    clock: makeClock(options.clock, extra.shared === true),
    ...(options.ramBytes === undefined ? {} : { ramBytes: options.ramBytes }),
    ...(options.diskBytes === undefined ? {} : { diskBytes: options.diskBytes }),
    ...extra,
  });
}

/**
 * Runs one workload on the guest (however the runtime reaches it) and measures it from
 * both sides: the host's counters and its `HostResponder` before and after, the wall time,
 * and the guest's own meter, combined with {@link resultFromGuest}.
 *
 * @param host - the host
 * @param runtime - which runtime
 * @param body - runs the workload on the guest and returns what the guest counted
 * @returns the result
 */
export async function measureRun(
  host: HostMachine,
  runtime: RuntimeKind,
  body: () => Promise<GuestRunResult>,
): Promise<WorkloadResult> {
  const before = host.counters();
  const r = host.responder.stats;
  const udpBytes = r.udpBytes;
  const udpDatagrams = r.udpDatagrams;
  const echoReplies = r.echoReplies;
  const t0 = performance.now();
  const g = await body();
  const elapsedNs = Math.round((performance.now() - t0) * 1e6);
  const after = host.counters();
  return resultFromGuest(
    host.config,
    runtime,
    g,
    {
      hostExits: after.exits - before.exits,
      guestExits: g.run.exits,
      rejectedExits: after.rejected - before.rejected,
      hostInterrupts: after.interrupts - before.interrupts,
      elapsedNs,
    },
    {
      udpBytes: r.udpBytes - udpBytes,
      udpDatagrams: r.udpDatagrams - udpDatagrams,
      echoReplies: r.echoReplies - echoReplies,
    },
  );
}

/**
 * Checks a workload against the configuration before it is sent to the guest.
 *
 * @throws GuestKernelError `UNKNOWN_WORKLOAD`, `BAD_PARAMS`, `MISSING_DEVICE`
 */
export function checkRun(config: ResolvedConfig, workload: string, params: WorkloadParams): void {
  checkWorkload(workload, params, config.name, config.net !== undefined, config.blk !== undefined);
}

/**
 * Boots a guest kernel in-process: builds the host for the configuration, the CPU, and the
 * kernel (which probes its devices and binds its interrupts).
 *
 * @throws GuestKernelError `UNKNOWN_CONFIG` / `BAD_CONFIG` for a bad configuration;
 *   `GuestPanic` when the guest cannot boot
 */
export async function bootInProcess(options: BootOptions): Promise<GuestKernelVm> {
  const host = createHost(options);
  const config = host.config;
  const kernel = bootKernel(new InProcessCpu(host), host.bootInfo, host.backing, options);
  return {
    config,
    runtime: "in-process",
    host,
    kernel,
    async run(workload: string, params: WorkloadParams = {}): Promise<WorkloadResult> {
      checkRun(config, workload, params);
      return measureRun(host, "in-process", () => kernel.run(workload, params));
    },
    async runProgram(program: Program | string, label = "program"): Promise<WorkloadResult> {
      if (typeof program === "string") {
        throw new GuestKernelError(
          GuestKernelErrorCode.BAD_PARAMS,
          `in-process, runProgram takes a generator function, not a name ("${program}")`,
        );
      }
      return measureRun(host, "in-process", () => kernel.runProgram(program, label));
    },
    async close(): Promise<void> {},
  };
}
