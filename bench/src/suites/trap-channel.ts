/**
 * What one exit costs as a real cross-thread round trip: the trap channel of the threaded
 * runtime (`@pvkit/platform`'s `TrapChannel`) against an in-process exit (a function call
 * with the same arguments in the same `Float64Array` slots). The guest runs in a
 * `worker_thread` and times its own exits; the host serves them in this thread, in
 * blocking mode (spin, then `Atomics.wait`: a dedicated VMM thread) or event-loop mode
 * (spin, then `Atomics.waitAsync`: a main thread that also runs device back-ends), each
 * with adaptive spinning (the default), a fixed spin, and no spinning at all (every exit
 * a futex sleep and wake on both sides). Allocation per exit is measured on the guest's
 * heap. Not part of the main job: it needs a worker and about a minute.
 *
 * @module
 */

import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { TRAP_ARG_SLOTS, type TrapHandler, type TrapServeMode, TrapSlot } from "@pvkit/platform";
import { runTrapWorker } from "@pvkit/platform/node";
import type {
  TrapGuestConfig,
  TrapGuestReport,
} from "../../../packages/platform/test/fixtures/trap-protocol.js";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import type { ResultCheck, Suite, SuiteOptions, SuiteResult } from "../suite.js";
import { allocationPerChain } from "./split-queue.js";

/** The guest's op for a no-op exit (`OP_NOP` of the test protocol): returns `args[0] + 1`. */
const OP_NOP = 4;

/** How both sides spin before sleeping: the default adaptive spin, a fixed spin, none. */
export type SpinPolicy = "adaptive" | "fixed" | "none";

/** One measured way of making an exit. */
export interface TrapRow {
  /** `"in-process"` or `"threaded"`. */
  readonly runtime: "in-process" | "threaded";
  /** How the host waits: `"—"` in-process, else the serve mode. */
  readonly host: "—" | TrapServeMode;
  /** How both sides spin before sleeping (`"none"` in-process: nobody waits). */
  readonly spin: SpinPolicy;
  /** Exits per timed repeat. */
  readonly calls: number;
  /** ns per exit, one per repeat. */
  readonly nsPerExit: readonly number[];
  /** Median of {@link nsPerExit}. */
  readonly medianNs: number;
  /** Share of exits in which the guest slept in `Atomics.wait` (threaded only). */
  readonly sleepsPerExit: number | null;
  /** Heap bytes the guest allocated per exit, or `null` without `--expose-gc`. */
  readonly bytesPerExit: number | null;
  /** 1-minute load average just before this row was measured. */
  readonly loadAverage: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >>> 1]!;
};

const round = (x: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** The host's side of a no-op exit, the same in both runtimes. */
const nopHandler: TrapHandler = (_op, args) => args[0]! + 1;

/**
 * An in-process exit shaped like the threaded one: the arguments go through a
 * `Float64Array` of the channel's layout, then the handler is called directly.
 */
class InProcessPort {
  private readonly f64 = new Float64Array(TrapSlot.RESULTS + 4);
  private readonly args = this.f64.subarray(TrapSlot.ARGS, TrapSlot.ARGS + TRAP_ARG_SLOTS);
  private readonly results = this.f64.subarray(TrapSlot.RESULTS, TrapSlot.RESULTS + 4);

  constructor(private readonly handler: TrapHandler) {}

  call(op: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0): number {
    const f = this.f64;
    f[TrapSlot.ARGS] = a0;
    f[TrapSlot.ARGS + 1] = a1;
    f[TrapSlot.ARGS + 2] = a2;
    f[TrapSlot.ARGS + 3] = a3;
    f[TrapSlot.ARGS + 4] = a4;
    f[TrapSlot.ARGS + 5] = a5;
    const r = this.handler(op, this.args, this.results) ?? 0;
    f[TrapSlot.RESULTS] = r;
    return r;
  }
}

function inProcess(calls: number, repeats: number, allocCalls: number): TrapRow {
  const loadAverage = loadavg()[0]!;
  const port = new InProcessPort(nopHandler);
  let sink = 0;
  for (let i = 0; i < 100_000; i++) sink += port.call(OP_NOP, i);
  const nsPerExit: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) sink += port.call(OP_NOP, i);
    nsPerExit.push(((performance.now() - t0) * 1e6) / calls);
  }
  const perIteration = 32;
  const bytesPerExit = allocationPerChain(
    () => {
      // `& 0xffff` keeps the captured sum a small integer: a growing double would be boxed.
      for (let i = 0; i < perIteration; i++) {
        sink = (sink + port.call(OP_NOP, i, 0xfeb0_0000, -1)) & 0xffff;
      }
    },
    perIteration,
    allocCalls,
  );
  if (Number.isNaN(sink)) throw new Error("unreachable");
  return {
    runtime: "in-process",
    host: "—",
    spin: "none",
    calls,
    nsPerExit,
    medianNs: median(nsPerExit),
    sleepsPerExit: null,
    bytesPerExit,
    loadAverage,
  };
}

async function threaded(
  script: string,
  host: TrapServeMode,
  spin: SpinPolicy,
  calls: number,
  repeats: number,
  allocCalls: number,
): Promise<TrapRow> {
  const loadAverage = loadavg()[0]!;
  const config: TrapGuestConfig = {
    scenario: "measure",
    calls,
    repeats,
    warmup: 50_000, // fewer leaves the guest's call path in unoptimized tiers, which allocate
    allocCalls,
    ...(spin === "none" ? { spin: 0 } : spin === "fixed" ? { adaptiveSpin: false } : {}),
  };
  let report: TrapGuestReport | null = null;
  const result = await runTrapWorker({
    script,
    handler: nopHandler,
    mode: host,
    workerData: config,
    server: spin === "none" ? { spin: 0 } : spin === "fixed" ? { adaptiveSpin: false } : {},
    stallMs: 30_000,
    budgetMs: 600_000,
    onMessage: (m) => {
      report = m as TrapGuestReport;
    },
  });
  if (result.error !== null) throw result.error;
  const r = report as TrapGuestReport | null;
  if (r === null || r.nsPerCall === undefined) throw new Error("the guest sent no measurement");
  return {
    runtime: "threaded",
    host,
    spin,
    calls,
    nsPerExit: r.nsPerCall,
    medianNs: median(r.nsPerCall),
    sleepsPerExit: r.sleeps / r.calls,
    bytesPerExit: r.bytesPerExit ?? null,
    loadAverage,
  };
}

/**
 * Measures every variant.
 *
 * @param quick - fewer exits and repeats (a smoke run)
 * @param log - progress lines
 * @returns one row per variant
 */
export async function runTrapChannelBench(
  quick: boolean,
  log: (line: string) => void,
): Promise<TrapRow[]> {
  const script = bundleWorker(
    fileURLToPath(
      new URL("../../../packages/platform/test/fixtures/trap-guest.ts", import.meta.url),
    ),
  );
  const repeats = quick ? 3 : 5;
  const spinCalls = quick ? 10_000 : 50_000;
  const sleepCalls = quick ? 2_000 : 10_000;
  const rows: TrapRow[] = [];
  const note = (row: TrapRow): void => {
    rows.push(row);
    log(
      `  ${row.runtime.padEnd(10)} ${row.host.padEnd(8)} spin ${row.spin.padEnd(8)} ` +
        `${row.medianNs.toFixed(0).padStart(7)} ns/exit, ${row.bytesPerExit?.toFixed(2) ?? "?"} B/exit`,
    );
  };
  note(inProcess(quick ? 1_000_000 : 10_000_000, repeats, spinCalls));
  for (const host of ["blocking", "async"] as const) {
    note(await threaded(script, host, "adaptive", spinCalls, repeats, spinCalls));
    note(await threaded(script, host, "fixed", spinCalls, repeats, spinCalls));
    note(await threaded(script, host, "none", sleepCalls, repeats, sleepCalls));
  }
  return rows;
}

async function run(options: SuiteOptions): Promise<SuiteResult> {
  options.log("trap-channel: one exit in-process and across threads");
  const rows = await runTrapChannelBench(options.quick, options.log);
  const base = rows[0]!.medianNs;
  const fmt = (x: number | null, digits: number): string =>
    x === null ? "n/a" : x.toLocaleString("en-US", { maximumFractionDigits: digits });
  const threadedRows = rows.filter((r) => r.runtime === "threaded");
  const measuredAlloc = threadedRows.filter((r) => r.bytesPerExit !== null);
  const checks: ResultCheck[] =
    measuredAlloc.length === 0
      ? []
      : [
          {
            name: "threaded: guest heap bytes allocated per exit (worst variant)",
            value: round(Math.max(...measuredAlloc.map((r) => r.bytesPerExit!)), 3),
            limit: 0.5,
            unit: "B/exit",
            pass: measuredAlloc.every((r) => r.bytesPerExit! <= 0.5),
          },
        ];
  return {
    name: "trap-channel",
    title: "Trap channel: the cost of one exit in-process vs as a cross-thread round trip",
    description:
      "One exit = the guest writes an op code and six `float64` arguments and gets the handler's result back. " +
      "**In-process**: the same slots, then a direct call of the handler. **Threaded**: the guest runs in a " +
      "`worker_thread` and blocks on `TrapPort.call` (spin up to 1,000 polls, then `Atomics.wait`); the host " +
      "serves in this thread with `TrapServer.serve` — **blocking** (spin up to 1,000 polls, then `Atomics.wait`, " +
      "yielding to the event loop every 2 ms or 1,024 exits) or **async** (spin up to 1,000 polls, then " +
      "`Atomics.waitAsync`). Spin *adaptive* (the default) shortens a spin that caught nothing by a quarter, down to 1/16, restores it " +
      "when one catches the answer and spins fully every 64th wait; *fixed* always spins fully; *none* sets both " +
      "sides' spin to 0: every exit is a futex sleep and wake-up each way, " +
      "the analogue of a vCPU thread that blocks in the kernel until the VMM answers. The guest times its own exits.",
    tables: [
      {
        title: "ns per exit (median over repeats) and guest allocation",
        columns: [
          "runtime",
          "host waits with",
          "spin",
          "exits/repeat",
          "ns/exit (median)",
          "range (ns)",
          "× in-process",
          "guest sleeps/exit",
          "guest B/exit",
          "load avg",
        ],
        rows: rows.map((r) => [
          r.runtime,
          r.host === "—" ? "—" : r.host === "blocking" ? "Atomics.wait" : "Atomics.waitAsync",
          r.runtime === "in-process" ? "—" : r.spin,
          r.calls.toLocaleString("en-US"),
          fmt(r.medianNs, r.medianNs < 100 ? 1 : 0),
          `${fmt(Math.min(...r.nsPerExit), 1)}–${fmt(Math.max(...r.nsPerExit), 1)}`,
          `${fmt(r.medianNs / base, 0)}×`,
          r.sleepsPerExit === null ? "—" : r.sleepsPerExit.toFixed(3),
          fmt(r.bytesPerExit === null ? null : round(r.bytesPerExit, 3), 3),
          r.loadAverage.toFixed(2),
        ]),
      },
    ],
    checks,
    notes: [
      "B/exit = median heap growth per exit over GC-free windows of 1,024 exits right after a full GC, minus the same measurement around no work (the method of the split-queue suite), measured on the guest's heap inside the worker (in-process: on this thread).",
      "Spinning trades a core for latency: on a machine whose cores are busy, a spinning side loses its time slice and the round trip costs a scheduler quantum instead. The load average column says how busy the machine was; with 2 CPUs, a load above 2 means the spinning rows are measuring the scheduler.",
      "The guest's exit path allocates nothing: arguments and results travel in the channel's `Float64Array`, the request and response words are `Int32Array` slots read and written with `Atomics`. The async host allocates one promise per sleep (`Atomics.waitAsync`); the blocking host allocates only when it yields.",
    ],
    data: rows.map((r) => ({
      runtime: r.runtime,
      host: r.host,
      spin: r.spin,
      calls: r.calls,
      medianNs: round(r.medianNs, 1),
      nsPerExit: r.nsPerExit.map((x) => round(x, 1)),
      sleepsPerExit: r.sleepsPerExit === null ? null : round(r.sleepsPerExit, 4),
      bytesPerExit: r.bytesPerExit === null ? null : round(r.bytesPerExit, 4),
      loadAverage: round(r.loadAverage, 2),
    })),
  };
}

/** The registered suite (not in the main job: it spawns a worker and spins two cores). */
export const trapChannelSuite: Suite = {
  name: "trap-channel",
  summary:
    "cost of one exit: in-process call vs cross-thread round trip (Atomics.wait / waitAsync host), allocation per exit",
  run,
};
