/**
 * Worker entry of the guest-kernel suite's threaded exit measurement: the guest side of
 * the threaded runtime's `Cpu` (`ThreadedCpu`, every exit a `TrapPort.call`) making HPET
 * counter reads against a real `HostMachine` on the host thread — the exit full emulation
 * makes for every clock read. It reports ns per exit (repeats) and the guest's heap bytes
 * per exit (median growth over GC-fenced windows, the empty-window baseline subtracted, as
 * `allocationPerChain` of the split-queue suite).
 *
 * @module
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { parentPort, workerData } from "node:worker_threads";
import { ExitOp, SharedClock } from "@pvkit/guest-kernel-pv";
import { ThreadedCpu } from "@pvkit/guest-kernel-pv/threaded";
import { TrapChannel } from "@pvkit/platform";

/** What the host sends. */
export interface ExitProbeConfig {
  /** The shared clock's buffer. */
  readonly clock: SharedArrayBuffer;
  /** TSC frequency, kHz. */
  readonly tscKhz: number;
  /** MMIO address of the register to read. */
  readonly address: number;
  /** Exits per timed repeat. */
  readonly calls: number;
  /** Timed repeats. */
  readonly repeats: number;
  /** Exits of the allocation measurement (0: skip it). */
  readonly allocCalls: number;
}

/** What the worker reports. */
export interface ExitProbeReport {
  /** ns per exit, one per repeat. */
  readonly nsPerExit: number[];
  /** Guest heap bytes per exit, or null when not measured. */
  readonly bytesPerExit: number | null;
}

const d = workerData as { channel: SharedArrayBuffer; data: ExitProbeConfig };
const cfg = d.data;
const port = TrapChannel.attach(d.channel).port();

function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === "function") return g;
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

port.run(() => {
  const cpu = new ThreadedCpu(port, SharedClock.attach(cfg.clock), cfg.tscKhz, {
    cr3LoadExits: false,
    tlbFlushExits: false,
    pageFaultExits: false,
    nestedPaging: false,
    writeProtect: null,
  });
  const addr = cfg.address;
  let sink = 0;
  const loop = (n: number): void => {
    for (let i = 0; i < n; i++)
      sink = (sink + cpu.exit(ExitOp.MMIO_READ, addr, 4, 0, 0, 0, 0)) & 0xffff;
  };
  loop(50_000); // warm: fewer leaves the exit path in unoptimized tiers, which allocate
  const nsPerExit: number[] = [];
  for (let r = 0; r < cfg.repeats; r++) {
    const t0 = performance.now();
    loop(cfg.calls);
    nsPerExit.push(((performance.now() - t0) * 1e6) / cfg.calls);
  }
  let bytesPerExit: number | null = null;
  if (cfg.allocCalls > 0) {
    const gc = getGc();
    const per = 1024;
    const windows = Math.max(5, Math.ceil(cfg.allocCalls / per));
    const work = new Float64Array(windows);
    const empty = new Float64Array(windows);
    for (let w = 0; w < windows; w++) {
      gc();
      const h0 = process.memoryUsage().heapUsed;
      loop(per);
      const h1 = process.memoryUsage().heapUsed;
      gc();
      const e0 = process.memoryUsage().heapUsed;
      const e1 = process.memoryUsage().heapUsed;
      work[w] = h1 - h0;
      empty[w] = e1 - e0;
    }
    work.sort();
    empty.sort();
    bytesPerExit = Math.max(0, work[windows >>> 1]! - empty[windows >>> 1]!) / per;
  }
  if (Number.isNaN(sink)) throw new Error("unreachable");
  parentPort!.postMessage({ nsPerExit, bytesPerExit } satisfies ExitProbeReport);
  return 0;
});
