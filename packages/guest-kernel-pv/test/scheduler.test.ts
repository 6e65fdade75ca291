/**
 * The scheduler: round robin, sleeps that end in deadline order, preemption at the end of
 * a time slice (driven by the `time` pv_op's one-shot timer), process lifetimes.
 */

import { ManualClock } from "@pvkit/hypercall";
import { describe, expect, it } from "vitest";
import { nonBlocking, type SyscallRequest, type User } from "../src/index.js";
import { boot } from "./helpers.js";

type Gen = Generator<SyscallRequest, number, number>;

describe("scheduler", () => {
  for (const config of ["full-emulation", "hw-assist+pv-io", "full-pv"] as const) {
    it(`${config}: sleepers wake in deadline order, on time`, async () => {
      const vm = await boot(config);
      const order: number[] = [];
      const r = await vm.runProgram(function* (u: User): Gen {
        const pids: number[] = [];
        for (const ms of [3, 1, 2]) {
          pids.push(
            yield u.fork(function* (c: User): Gen {
              const t0 = c.gettimeofday();
              yield c.sleep(ms * 1_000_000);
              order.push(ms);
              return c.gettimeofday() - t0 >= ms * 1_000_000 - 5_000 ? 0 : 1;
            }),
          );
        }
        let bad = 0;
        for (const pid of pids) bad += yield u.wait(pid);
        return bad;
      });
      expect(r.exitStatus).toBe(0);
      expect(order).toEqual([1, 2, 3]);
      expect(r.guestNs).toBeGreaterThanOrEqual(3_000_000);
    });
  }

  it("preempts a CPU-bound process at the end of its time slice", async () => {
    const clock = new ManualClock(1_000_000_000);
    const vm = await boot("full-pv", { clock, quantumNs: 4_000_000 });
    const log: string[] = [];
    const busy = (name: string) =>
      function* (u: User): Gen {
        for (let i = 0; i < 40; i++) {
          clock.advance(1_000_000); // 1 ms of computing
          log.push(name);
          yield u.getppid(); // a system call: where a preemption can take effect
        }
        return 0;
      };
    const r = await vm.runProgram(function* (u: User): Gen {
      const a = yield u.fork(busy("a"));
      const b = yield u.fork(busy("b"));
      return (yield u.wait(a)) + (yield u.wait(b));
    });
    expect(r.exitStatus).toBe(0);
    // Slices of about 4 ms: neither runs to completion before the other starts.
    const runs: number[] = [];
    for (let i = 0, n = 1; i < log.length; i++, n++) {
      if (log[i + 1] !== log[i]) {
        runs.push(n);
        n = 0;
      }
    }
    expect(runs.length).toBeGreaterThan(10);
    expect(Math.max(...runs)).toBeLessThanOrEqual(6);
    expect(r.interrupts).toBeGreaterThan(10); // timer interrupts drove it
  });

  it("without the clock moving, cooperative processes run to their next block", async () => {
    const vm = await boot("full-pv");
    const log: string[] = [];
    const r = await vm.runProgram(function* (u: User): Gen {
      const child = function* (c: User): Gen {
        for (let i = 0; i < 5; i++) {
          log.push(`c${c.pid}`);
          yield c.getppid();
        }
        return 0;
      };
      const a = yield u.fork(child);
      const b = yield u.fork(child);
      return (yield u.wait(a)) + (yield u.wait(b));
    });
    expect(r.exitStatus).toBe(0);
    expect(log).toEqual(["c2", "c2", "c2", "c2", "c2", "c3", "c3", "c3", "c3", "c3"]);
  });

  it("children left running when the first process exits are killed and reaped", async () => {
    const vm = await boot("hw-assist+pv-io");
    const free0 = vm.kernel.frames.free;
    const r = await vm.runProgram(function* (u: User): Gen {
      for (let i = 0; i < 3; i++) {
        yield u.fork(function* (c: User): Gen {
          const va = c.mmap(8 * 4096);
          for (let p = 0; p < 8; p++) c.store8(va + p * 4096, p);
          yield c.sleep(1_000_000_000);
          return 0;
        });
      }
      yield u.yieldCpu();
      return 7;
    });
    expect(r.exitStatus).toBe(7);
    expect(vm.kernel.frames.free).toBe(free0);
  });

  it("wait(-1) reaps any child; wait for a stranger is -ECHILD", async () => {
    const vm = await boot("full-emulation");
    const r = await vm.runProgram(function* (u: User): Gen {
      const pid = yield u.fork(
        nonBlocking(() => {
          return 42;
        }),
      );
      u.report("any", yield u.wait(-1));
      u.report("stranger", yield u.wait(pid + 100));
      u.report("ppid", yield u.getppid());
      return 0;
    });
    expect(r.results).toEqual({ any: 42, stranger: -10, ppid: 0 });
  });
});
