/**
 * Guest failures, reported and contained: a process that faults is killed with a signal
 * status and the kernel carries on; a kernel panic is reported with where it stopped; a
 * runaway guest is stopped by its budget; a guest that would sleep forever is reported —
 * and in every case the host keeps answering.
 */

import { describe, expect, it } from "vitest";
import {
  ExitOp,
  GuestBudgetExceeded,
  GuestKernelError,
  GuestPanic,
  MMAP_BASE,
  nonBlocking,
  SIGABRT_STATUS,
  SIGKILL_STATUS,
  SIGSEGV_STATUS,
  type SyscallRequest,
  USER_TEXT_BASE,
  type User,
} from "../src/index.js";
import { boot } from "./helpers.js";

type Gen = Generator<SyscallRequest, number, number>;
const PAGE = 4096;

describe("a process that faults is killed, the kernel goes on", () => {
  for (const config of ["full-emulation", "hw-assist+pv-io", "full-pv"] as const) {
    it(`${config}: SIGSEGV for unmapped, read-only and non-canonical accesses`, async () => {
      const vm = await boot(config);
      const cases: ((u: User) => void)[] = [
        (u) => u.store32(MMAP_BASE + 77 * PAGE, 1), // no area there
        (u) => u.store8(USER_TEXT_BASE, 0xcc), // text is read-only
        (u) => u.load8(2 ** 47 + 5), // not canonical (the upper half is not the process's)
        (u) => {
          const va = u.mmap(PAGE, false);
          u.store8(va, 1); // a read-only mapping
        },
      ];
      for (const touch of cases) {
        const r = await vm.runProgram(
          nonBlocking((u: User) => {
            touch(u);
            return 0;
          }),
        );
        expect(r.exitStatus).toBe(SIGSEGV_STATUS);
      }
      // A child's fault is its own: the parent sees the status and continues.
      const r = await vm.runProgram(function* (u: User): Gen {
        const pid = yield u.fork(
          nonBlocking((c: User) => {
            c.store32(0x10, 1);
            return 0;
          }),
        );
        u.report("child", yield u.wait(pid));
        return 0;
      });
      expect(r.exitStatus).toBe(0);
      expect(r.results.child).toBe(SIGSEGV_STATUS);
      expect((await vm.run("gettimeofday", { iterations: 2 })).exitStatus).toBe(0);
    });
  }

  it("a program that throws is killed with SIGABRT and its message kept", async () => {
    const vm = await boot("full-pv");
    const r = await vm.runProgram(
      nonBlocking((u: User) => {
        u.mmap(PAGE);
        throw new RangeError("index out of bounds in the guest program");
      }),
    );
    expect(r.exitStatus).toBe(SIGABRT_STATUS);
    expect(r.processErrors).toEqual(["pid 1: index out of bounds in the guest program"]);
  });

  it("a process that exhausts guest memory is killed (SIGKILL), the memory comes back", async () => {
    const vm = await boot("hw-assist+pv-io");
    const free0 = vm.kernel.frames.free;
    const r = await vm.runProgram(
      nonBlocking((u: User) => {
        const pages = 8192; // more than 16 MiB of RAM
        const va = u.mmap(pages * PAGE);
        for (let i = 0; i < pages; i++) u.store8(va + i * PAGE, 1);
        return 0;
      }),
    );
    expect(r.exitStatus).toBe(SIGKILL_STATUS);
    expect(vm.kernel.frames.free).toBe(free0);
    expect((await vm.run("gettimeofday", { iterations: 1 })).exitStatus).toBe(0);
  });
});

describe("kernel panic: reported with where it stopped, never a hang", () => {
  it("sysrq-c panics in sysrq_handle_crash with the process and the last exit", async () => {
    const vm = await boot("full-emulation");
    const err = await vm
      .runProgram(
        nonBlocking((u: User) => {
          u.gettimeofday(); // an HPET read: the last exit is an MMIO read
          u.sysrqCrash();
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestPanic);
    const p = err as GuestPanic;
    expect(p.code).toBe("GUEST_PANIC");
    expect(p.where).toMatchObject({
      function: "sysrq_handle_crash",
      pid: 1,
      lastExit: "mmio_read",
    });
    expect(p.message).toMatch(
      /guest kernel panic in sysrq_handle_crash \(pid 1, last exit mmio_read, \d+ exits\): sysrq triggered crash/,
    );
    // The guest is stopped; the host is not.
    await expect(vm.run("gettimeofday")).rejects.toMatchObject({ code: "BUSY" });
    expect(vm.host.exit(ExitOp.MMIO_READ, 0xfed0_0000, 4, 0, 0, 0, 0)).toBe(0x8086_a201);
  });

  it("a refused mmu_update panics the PV kernel in the MMU code (Xen PV BUG() on a failed multicall)", async () => {
    const vm = await boot("full-pv");
    const err = await vm
      .runProgram(
        nonBlocking((u: User) => {
          const va = u.mmap(PAGE);
          vm.host.injectFault(ExitOp.HYPERCALL, -22); // the next hypercall answers -EINVAL
          u.store8(va, 1); // the fault's mmu_update
          return 0;
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestPanic);
    const p = err as GuestPanic;
    expect(p.where.function).toBe("mm/lazy_mmu_flush");
    expect(p.where.lastExit).toBe("hypercall");
    expect(p.where.pid).toBe(1);
    // The first fault in a fresh area links an L3, an L2 and an L1: 4 requests in the batch.
    expect(p.reason).toMatch(/mmu_update\(4 requests\) failed with -22/);
  });

  it("a refused trapped page-table store panics the shadow-paged kernel in set_pte", async () => {
    const vm = await boot("full-emulation");
    const err = await vm
      .runProgram(
        nonBlocking((u: User) => {
          const va = u.mmap(PAGE);
          vm.host.injectFault(ExitOp.PTE_WRITE, -22);
          u.store8(va, 1);
          return 0;
        }),
      )
      .catch((e: unknown) => e);
    expect((err as GuestPanic).where).toMatchObject({
      function: "mm/set_pte",
      lastExit: "pte_write",
    });
  });
});

describe("a runaway guest is stopped by its budget", () => {
  it("steps: a process spinning on memory", async () => {
    const vm = await boot("full-pv", { maxSteps: 50_000 });
    const err = await vm
      .runProgram(
        nonBlocking((u: User) => {
          const va = u.mmap(PAGE);
          for (;;) u.load8(va);
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestBudgetExceeded);
    expect((err as GuestBudgetExceeded).kind).toBe("steps");
    expect((err as Error).message).toMatch(/guest stopped after 50000 steps \(its budget\): pid 1/);
  });

  it("steps: processes yielding to each other forever", async () => {
    const vm = await boot("hw-assist+pv-io", { maxSteps: 20_000 });
    const spin = function* (u: User): Gen {
      for (;;) yield u.yieldCpu();
    };
    const err = await vm
      .runProgram(function* (u: User): Gen {
        yield u.fork(spin);
        return yield* spin(u);
      })
      .catch((e: unknown) => e);
    expect((err as GuestBudgetExceeded).kind).toBe("steps");
  });

  it("exits: a process hammering an emulated device", async () => {
    const vm = await boot("full-emulation", { maxExits: 1000 });
    const err = await vm
      .runProgram(
        nonBlocking((u: User) => {
          for (;;) u.gettimeofday(); // an HPET read each
        }),
      )
      .catch((e: unknown) => e);
    expect((err as GuestBudgetExceeded).kind).toBe("exits");
    expect((err as GuestBudgetExceeded).where.lastExit).toBe("mmio_read");
    // The host still answers.
    expect(vm.host.exit(ExitOp.HALT, 0, 0, 0, 0, 0, 0)).toBe(0);
  });

  it("the budget is per run: boot and earlier runs do not use it up", async () => {
    const vm = await boot("full-emulation", { maxExits: 500 });
    for (let i = 0; i < 5; i++)
      expect((await vm.run("gettimeofday", { iterations: 300 })).exitStatus).toBe(0);
  });
});

describe("a guest that would sleep forever is reported", () => {
  it("every process blocked on a pipe nobody will write", async () => {
    const vm = await boot("full-pv");
    const err = await vm
      .runProgram(function* (u: User): Gen {
        const fd = u.pipe(); // it holds the write end itself and never writes
        const va = u.mmap(PAGE);
        yield u.readFd(fd, va, 16);
        return 0;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestKernelError);
    expect((err as GuestKernelError).code).toBe("GUEST_DEADLOCK");
    expect((err as Error).message).toMatch(/pid 1 on sys_read/);
  });

  it("a waited-for child that never exits and nothing armed", async () => {
    const vm = await boot("hw-assist+pv-io");
    const err = await vm
      .runProgram(function* (u: User): Gen {
        const fd = u.pipe();
        const pid = yield u.fork(function* (c: User): Gen {
          yield c.readFd(fd, c.mmap(PAGE), 1);
          return 0;
        });
        return yield u.wait(pid);
      })
      .catch((e: unknown) => e);
    expect((err as GuestKernelError).code).toBe("GUEST_DEADLOCK");
  });
});
