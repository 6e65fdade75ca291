/**
 * The threaded runtime: the guest kernel in a worker, the host on this thread, every exit
 * a round trip through the trap channel. Same workloads, same guest-visible results and the
 * same exit counts as in-process; failures (segfault, panic, a spinning guest, bad
 * configuration) are reported and the host thread carries on.
 */

import { ManualClock } from "@pvkit/hypercall";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import {
  CONFIG_NAMES,
  GuestKernelError,
  GuestPanic,
  nonBlocking,
  SharedClock,
  SIGSEGV_STATUS,
  WORKLOAD_NAMES,
  type WorkloadResult,
} from "../src/index.js";
import { bootThreaded, type ThreadedVm } from "../src/node.js";
import { boot, SMALL } from "./helpers.js";

let script = "";
const open: ThreadedVm[] = [];

beforeAll(() => {
  script = bundleWorker(new URL("./fixtures/threaded-guest.ts", import.meta.url));
});

afterAll(async () => {
  await Promise.all(open.map((vm) => vm.close()));
});

async function threaded(
  config: string,
  extra: Partial<Parameters<typeof bootThreaded>[0]> = {},
): Promise<ThreadedVm> {
  const vm = await bootThreaded({
    config,
    ramBytes: 16 << 20,
    diskBytes: 2 << 20,
    workerScript: script,
    ...extra,
  });
  open.push(vm);
  return vm;
}

/** What must be equal between runtimes: guest-visible output and every count. */
function comparable(r: WorkloadResult): Record<string, unknown> {
  return {
    ops: r.ops,
    exitStatus: r.exitStatus,
    results: r.results,
    hostResults: r.hostResults,
    exits: r.exits,
    exitsByKind: r.exitsByKind,
    hypercalls: r.hypercalls,
    interrupts: r.interrupts,
    notifications: r.notifications,
    contextSwitches: r.contextSwitches,
    pageFaults: r.pageFaults,
    processErrors: r.processErrors,
  };
}

describe("threaded runtime: same workloads, same results, same exit counts as in-process", () => {
  for (const config of CONFIG_NAMES) {
    it(`${config}: every workload`, async () => {
      const inproc = await boot(config);
      const vm = await threaded(config);
      expect(vm.runtime).toBe("threaded");
      for (const w of WORKLOAD_NAMES) {
        const a = await inproc.run(w, SMALL[w]).catch((e: unknown) => e as Error);
        const b = await vm.run(w, SMALL[w]).catch((e: unknown) => e as Error);
        if (a instanceof Error) {
          // No disk under full emulation: refused the same way, before the guest is asked.
          expect((a as GuestKernelError).code, `${config} / ${w}`).toBe("MISSING_DEVICE");
          expect((b as GuestKernelError).code, `${config} / ${w}`).toBe("MISSING_DEVICE");
          continue;
        }
        if (b instanceof Error) throw b;
        expect(b.runtime).toBe("threaded");
        expect(comparable(b), `${config} / ${w}`).toEqual(comparable(a));
        // Both sides of the wall counted the same exits.
        expect(b.run.hostExits, `${config} / ${w}`).toBe(b.run.guestExits);
        expect(b.run.rejectedExits).toBe(0);
      }
      expect(vm.stats().served).toBeGreaterThan(0);
      await vm.close();
      expect(vm.ended?.outcome).toBe("exited");
      expect(vm.ended?.terminated).toBe(false);
    }, 60_000);
  }

  it("with a warp clock (real time, idle skipped) timers and devices still work", async () => {
    for (const config of ["full-emulation", "full-pv"]) {
      const vm = await threaded(config, { clock: "warp" });
      const sleep = await vm.run("sleep", SMALL.sleep);
      expect(sleep.exitStatus).toBe(0);
      expect(sleep.results.shortSleeps).toBe(0);
      const rr = await vm.run("net-rr", SMALL["net-rr"]);
      expect(rr.results).toMatchObject({ bytesReceived: 5 * 64, mismatches: 0 });
      await vm.close();
    }
  }, 30_000);

  it("the package's own worker entry (src/worker.ts) boots and runs", async () => {
    const entry = bundleWorker(new URL("../src/worker.ts", import.meta.url));
    const vm = await threaded("full-pv", { workerScript: entry });
    const r = await vm.run("net-rr", SMALL["net-rr"]);
    expect(r.results).toMatchObject({ bytesReceived: 5 * 64, mismatches: 0 });
    await vm.close();
    expect(vm.ended?.outcome).toBe("exited");
  }, 30_000);
});

describe("threaded runtime: failures are reported, the host thread carries on", () => {
  it("a process that segfaults is killed with SIGSEGV status; the guest goes on", async () => {
    const vm = await threaded("full-emulation");
    const r = await vm.runProgram("segv");
    expect(r.exitStatus).toBe(SIGSEGV_STATUS);
    const ok = await vm.runProgram("ok", "ok");
    expect(ok.exitStatus).toBe(7);
    expect(ok.results.value).toBe(42);
    expect((await vm.run("fork-exit", SMALL["fork-exit"])).exitStatus).toBe(0);
  }, 30_000);

  it("a kernel panic comes back as a GuestPanic with its location; later runs are refused", async () => {
    const vm = await threaded("full-pv");
    const err = await vm.runProgram("crash").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestPanic);
    expect((err as GuestPanic).where).toMatchObject({ function: "sysrq_handle_crash", pid: 1 });
    const again = await vm.run("fork-exit", SMALL["fork-exit"]).catch((e: unknown) => e);
    expect((again as GuestKernelError).code).toBe("BUSY");
    await vm.close();
    expect(vm.ended?.outcome).toBe("exited");
  }, 30_000);

  it("a guest that would sleep forever is reported as GUEST_DEADLOCK", async () => {
    const vm = await threaded("full-pv");
    const err = await vm.runProgram("read-forever").catch((e: unknown) => e);
    expect((err as GuestKernelError).code).toBe("GUEST_DEADLOCK");
    expect((err as Error).message).toMatch(/pid 1 on sys_read/);
  }, 30_000);

  it("a guest that spins without exits is stopped by the watchdog and its worker terminated", async () => {
    const vm = await threaded("hw-assist+pv-io", { stallMs: 300 });
    const t0 = performance.now();
    const err = await vm.runProgram("spin").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestKernelError);
    expect((err as GuestKernelError).code).toBe("GUEST_STALLED");
    expect((err as Error).message).toMatch(/stalled/);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(vm.ended?.outcome).toBe("stalled");
    expect(vm.ended?.terminated).toBe(true);
    const again = await vm.run("fork-exit", SMALL["fork-exit"]).catch((e: unknown) => e);
    expect((again as GuestKernelError).code).toBe("BUSY");
    // This thread is fine: an in-process guest still runs.
    expect((await (await boot("full-pv")).run("pipe", SMALL.pipe)).exitStatus).toBe(0);
  }, 30_000);

  it("misuse is refused before the guest is involved", async () => {
    await expect(bootThreaded({ config: "nope", workerScript: script })).rejects.toMatchObject({
      code: "UNKNOWN_CONFIG",
    });
    await expect(
      bootThreaded({ config: { mmu: "pv", time: "pv", irq: "pic" }, workerScript: script }),
    ).rejects.toMatchObject({ code: "BAD_CONFIG" });
    await expect(
      bootThreaded({ config: "full-pv", clock: new ManualClock(), workerScript: script }),
    ).rejects.toMatchObject({ code: "BAD_CONFIG" });
    await expect(
      bootThreaded({ config: "full-pv", ramBytes: 1000, workerScript: script }),
    ).rejects.toThrow(RangeError);
    const vm = await threaded("full-emulation");
    await expect(vm.run("disk-rand", SMALL["disk-rand"])).rejects.toMatchObject({
      code: "MISSING_DEVICE",
    });
    await expect(vm.run("no-such-workload")).rejects.toMatchObject({ code: "UNKNOWN_WORKLOAD" });
    await expect(vm.runProgram(nonBlocking(() => 0))).rejects.toMatchObject({ code: "BAD_PARAMS" });
    await expect(vm.runProgram("not-registered")).rejects.toMatchObject({ code: "BAD_PARAMS" });
    // Still usable.
    expect((await vm.run("gettimeofday", SMALL.gettimeofday)).exitStatus).toBe(0);
  }, 30_000);
});

describe("SharedClock", () => {
  it("manual: the host sets it, a second view reads it, never backwards", () => {
    const host = SharedClock.create("manual", 5_000);
    const guest = SharedClock.attach(host.buffer);
    expect(guest.nowNs()).toBe(5_000);
    host.set(9_000);
    host.set(8_000);
    expect(guest.nowNs()).toBe(9_000);
    host.warpTo(12_000);
    expect(guest.nowNs()).toBe(12_000);
  });

  it("warp: a warp is a floor every reader sees at once", () => {
    const host = SharedClock.create("warp");
    const guest = SharedClock.attach(host.buffer);
    const t = guest.nowNs();
    host.warpTo(t + 5e9);
    expect(guest.nowNs()).toBeGreaterThanOrEqual(t + 5e9);
    expect(host.skippedNs).toBeGreaterThan(4e9);
    expect(() => SharedClock.attach(new SharedArrayBuffer(8))).toThrow(TypeError);
  });
});
