/**
 * The guest kernel: boot (pick `pv_ops` from the configuration, bring up the page
 * allocator, the MMU, the time and interrupt operations, the drivers), the scheduler, the
 * system calls and user-memory access. It touches guest RAM only through its
 * `GuestMemory` views and does every privileged act through its `Cpu` — the same code in
 * every configuration and in every runtime.
 *
 * Scheduling: processes are cooperative tasks (generators) switched at system calls; a
 * round-robin run queue; a tickless one-shot timer (Linux `NO_HZ`) armed for the earliest
 * sleeper and, while others wait to run, for the end of the running task's time slice;
 * a context switch loads the next address space (`pv_ops.mmu.activate`). Interrupts are
 * taken at kernel entries and in the idle loop; device NAPI polls run as soft interrupts.
 *
 * @module
 */

import { FAULT_BAD_FRAME, FAULT_NON_CANONICAL } from "@pvkit/hypercall";
import { GuestAllocator } from "@pvkit/virtio-core";
import type { BootInfo, GuestMemoryViews } from "../boot.js";
import {
  GuestBudgetExceeded,
  GuestKernelError,
  GuestKernelErrorCode,
  type GuestLocation,
  GuestPanic,
  SIGABRT_STATUS,
  SIGSEGV_STATUS,
} from "../errors.js";
import { type Cpu, type CpuControls, EXIT_OP_COUNT, ExitOp, exitOpName } from "../exit.js";
import { CpuBus } from "./arch/cpu-bus.js";
import { faultAccess, PagingUnit } from "./arch/paging.js";
import { DEFAULT_MMU_BATCH, XenHypercalls } from "./arch/xen.js";
import { type BlockDevice, openBlockDevice } from "./drivers/blk.js";
import { type NetDevice, openNetDevice } from "./drivers/net.js";
import { Pipe, PipeEnd } from "./ipc/pipe.js";
import { createIrqOps, type IrqOps } from "./irq/irq-ops.js";
import { FrameTable, FrameUse } from "./mm/frames.js";
import { type MmuOps, NativeMmuOps, PvMmuOps } from "./mm/mmu-ops.js";
import {
  type AddressSpace,
  type ExecImage,
  type ImageLayout,
  imageLayout,
  Mm,
  OutOfMemory,
} from "./mm/vm.js";
import { NetStack, UDP_MAX_PAYLOAD } from "./net/stack.js";
import { KernelBug, panic } from "./panic.js";
import { type Block, type KernelPath, Task, TaskState, WaitQueue } from "./sched/task.js";
import { createTimeOps, type TimeOps } from "./time/time-ops.js";
import {
  type ExecEntry,
  type Program,
  type ReportValue,
  type SyscallRequest,
  User,
  type UserKernel,
} from "./user.js";
import { checkWorkload, type WorkloadParams } from "./workloads/index.js";

const PAGE = 4096;
const EINVAL = -22;
const ENOMEM = -12;
const EBADF = -9;
const ECHILD = -10;
const EPIPE = -32;
const EIO = -5;
const EMFILE = -24;
/** Largest disk transfer per request (the kernel's bounce buffer). */
export const BLK_MAX_BYTES = 64 * 1024;
/** Exit status of a process killed for lack of memory (128 + SIGKILL 9). */
export const SIGKILL_STATUS = 137;
/** Default time slice. */
export const DEFAULT_QUANTUM_NS = 4_000_000;
/**
 * A sleeper whose deadline is this close when the timer fires is woken: clock reads round
 * down (the pvclock scale, an HPET tick of 70 ns, a PIT tick of 838 ns), so the host may
 * fire at the deadline while the guest still reads a hair before it. Linux's hrtimers
 * face the same rounding and re-arm at `min_delta_ns`; waking early by less than a tick
 * is the smaller evil here.
 */
export const TIMER_FUZZ_NS = 2_000;

/** Options of the kernel. */
export interface KernelOptions {
  /** Stop the guest after this many exits in one run (default: no limit). */
  readonly maxExits?: number;
  /** Stop the guest after this many steps in one run — system calls, faults, user page accesses (default: no limit). */
  readonly maxSteps?: number;
  /** Requests per `mmu_update` batch in PV mode (default 32, Linux's `MC_ARGS`). */
  readonly pvBatch?: number;
  /** Time slice in ns (default 4 ms). */
  readonly quantumNs?: number;
}

/** The kernel's counters over a stretch of a run (every exit passes its CPU wrapper). */
export interface GuestMeter {
  /** Exits. */
  readonly exits: number;
  /** Exits per op code (index = `ExitOp` value). */
  readonly exitsByOp: readonly number[];
  /** Hypercalls per hypercall number. */
  readonly hypercalls: readonly number[];
  /** Interrupts handled (lines with the emulated controller, ports with event channels). */
  readonly interrupts: number;
  /** Virtio queue notifications (kicks) the drivers sent. */
  readonly notifications: number;
  /** Context switches (a different process put on the CPU). */
  readonly contextSwitches: number;
  /** Page faults taken. */
  readonly pageFaults: number;
  /** TLB misses of user accesses. */
  readonly tlbMisses: number;
  /** Memory references made by page walks (4 per miss native, 24 nested). */
  readonly walkRefs: number;
  /** Kernel steps. */
  readonly steps: number;
  /** Guest time that passed (TSC-derived ns). */
  readonly guestNs: number;
  /** Wall time that passed on the guest's thread (ns). */
  readonly wallNs: number;
}

/** What the guest reports back for one workload run. */
export interface GuestRunResult {
  /** The workload. */
  readonly workload: string;
  /** Operations it counted. */
  readonly ops: number;
  /** Exit status of its first process. */
  readonly exitStatus: number;
  /** What it reported (guest-visible output). */
  readonly results: Readonly<Record<string, ReportValue>>;
  /** The measured part (between the workload's `measureStart` and `measureStop`; else the whole run). */
  readonly measured: GuestMeter;
  /** The whole run. */
  readonly run: GuestMeter;
  /** Messages of processes killed because their program threw. */
  readonly processErrors: readonly string[];
}

/** Thrown by the kernel's CPU wrapper when a budget runs out. */
class BudgetStop extends Error {
  constructor(
    readonly kind: "exits" | "steps",
    readonly limit: number,
  ) {
    super(`budget of ${limit} ${kind} used up`);
  }
}

/** A process killed by a fault it could not resolve. */
class SegvSignal extends Error {
  constructor(readonly va: number) {
    super(`SIGSEGV at 0x${va.toString(16)}`);
  }
}

/** A process killed because no memory was left. */
class OomKill extends Error {
  constructor() {
    super("out of memory");
  }
}

/** The kernel's view of its CPU: counts exits, remembers the last one, enforces the budget. */
class KernelCpu implements Cpu {
  exits = 0;
  lastOp = 0;
  readonly byOp = new Float64Array(EXIT_OP_COUNT);
  readonly hypercalls = new Float64Array(64);
  /** Exits allowed before {@link BudgetStop} (set per run). */
  limit = Number.POSITIVE_INFINITY;
  constructor(
    private readonly inner: Cpu,
    readonly maxExits: number,
  ) {}
  exit(op: number, a0: number, a1: number, a2: number, a3: number, a4: number, a5: number): number {
    if (++this.exits > this.limit) throw new BudgetStop("exits", this.maxExits);
    this.lastOp = op;
    if (op > 0 && op < EXIT_OP_COUNT) {
      this.byOp[op]!++;
      if (op === ExitOp.HYPERCALL && a0 >= 0 && a0 < 64) this.hypercalls[a0]!++;
    }
    return this.inner.exit(op, a0, a1, a2, a3, a4, a5);
  }
  pendingInterrupts(): number {
    return this.inner.pendingInterrupts();
  }
  takeInterrupts(): number {
    return this.inner.takeInterrupts();
  }
  waitForInterrupt(): Promise<void> {
    return this.inner.waitForInterrupt();
  }
  rdtsc(): number {
    return this.inner.rdtsc();
  }
  get controls(): CpuControls {
    return this.inner.controls;
  }
}

/** The user image every workload's first process starts from (a tiny `init`). */
const INIT_IMAGE: ExecImage = {
  name: "init",
  text: new Uint8Array(PAGE).fill(0x90),
  data: new Uint8Array(PAGE),
  bssPages: 1,
  stackPages: 16,
};

/** Where a blocked task waits, for diagnostics and deadlock detection. */
type WaitKind = "timer" | "io" | "software";

/** A system call gave up the CPU (yield, exit): the scheduler picks the next task. */
const SWITCHED = Symbol("switched");

/** The guest kernel. */
export class Kernel implements UserKernel {
  /** The boot information. */
  readonly boot: BootInfo;
  /** `pv_ops.mmu`. */
  readonly mmu: MmuOps;
  /** `pv_ops.time`. */
  readonly time: TimeOps;
  /** `pv_ops.irq`. */
  readonly irq: IrqOps;
  /** The memory manager. */
  readonly mm: Mm;
  /** The page database. */
  readonly frames: FrameTable;
  /** The NIC, or null. */
  readonly net: NetDevice | null = null;
  /** The network stack, or null. */
  readonly stack: NetStack | null = null;
  /** The disk, or null. */
  readonly blk: BlockDevice | null = null;
  /** Kernel heap for drivers (rings, buffers, bounce pages). */
  readonly heap: GuestAllocator;

  private readonly cpu: KernelCpu;
  private readonly paging: PagingUnit;
  private readonly xen: XenHypercalls;
  private readonly ram: DataView;
  private readonly ramBytes: Uint8Array;
  private readonly maxSteps: number;
  private readonly quantum: number;
  private readonly tasks = new Map<number, Task>();
  private readonly users = new Map<number, User>();
  private readonly layouts = new Map<number, ImageLayout>();
  private readonly waitKind = new Map<Task, WaitKind>();
  private runQueue: Task[] = [];
  private readonly sleepers = new Set<Task>();
  private readonly softirqs: (() => void)[] = [];
  private readonly deadSpaces: AddressSpace[] = [];
  private current: Task | null = null;
  private currentAs: AddressSpace | null = null;
  /** The kernel's own, empty address space (Linux `init_mm` / `swapper_pg_dir`), loaded between runs. */
  private readonly kernelAs: AddressSpace;
  private nextPid = 1;
  private armed = -1;
  private timerFired = false;
  private needResched = false;
  private lastNow = 0;
  private steps = 0;
  private stepLimit = Number.POSITIVE_INFINITY;
  private where = "boot";
  private running = false;
  private stopped: Error | null = null;
  private results: Record<string, ReportValue> = {};
  private processErrors: string[] = [];
  private contextSwitches = 0;
  private pageFaults = 0;
  private interrupts = 0;
  private measureFrom: GuestMeter | null = null;
  private measureTo: GuestMeter | null = null;
  private lastRan: Task | null = null;

  /**
   * Boots: page allocator, `pv_ops` for the configuration, interrupt routes, devices.
   *
   * @param cpu - the CPU (in-process or threaded)
   * @param boot - what the host handed over
   * @param mem - the guest's memory views
   * @param options - budgets and tunables
   * @throws GuestPanic when boot fails (a device that does not probe, a refused hypercall)
   */
  constructor(cpu: Cpu, boot: BootInfo, mem: GuestMemoryViews, options: KernelOptions = {}) {
    this.boot = boot;
    this.cpu = new KernelCpu(cpu, options.maxExits ?? Number.POSITIVE_INFINITY);
    this.maxSteps = options.maxSteps ?? Number.POSITIVE_INFINITY;
    this.quantum = options.quantumNs ?? DEFAULT_QUANTUM_NS;
    const region = mem.ram.regions[0]!;
    this.ram = region.view;
    this.ramBytes = region.bytes;
    const pages = boot.ramPages;
    try {
      this.frames = new FrameTable(mem.ram, pages, boot.firstFreePfn);
      const scratch = this.frames.carve(3);
      const heapPages = Math.min(1024, Math.floor(pages / 4));
      const heapPfn = this.frames.carve(heapPages);
      this.heap = new GuestAllocator(heapPfn * PAGE, heapPages * PAGE);
      this.frames.online();

      // start_info.mfn_list, and Xen's machine-to-phys table.
      const p2m = new Int32Array(pages);
      let maxMfn = 0;
      for (let pfn = 0; pfn < pages; pfn++) {
        p2m[pfn] = this.ram.getUint32(boot.mfnListGpa + pfn * 4, true);
        maxMfn = Math.max(maxMfn, p2m[pfn]!);
      }
      const m2p = new Int32Array(maxMfn + 1).fill(-1);
      for (let pfn = 0; pfn < pages; pfn++) m2p[p2m[pfn]!] = pfn;

      const kcpu = this.cpu;
      this.xen = new XenHypercalls(
        kcpu,
        mem.ram,
        scratch * PAGE,
        options.pvBatch ?? DEFAULT_MMU_BATCH,
      );
      const pv = boot.config.mmu === "pv";
      this.paging = new PagingUnit(
        this.ram,
        pages,
        pv ? (m) => (m < m2p.length ? m2p[m]! : -1) : (f) => f,
        kcpu.controls.nestedPaging,
      );
      this.mmu = pv
        ? new PvMmuOps(this.xen, this.paging, p2m, m2p)
        : new NativeMmuOps(kcpu, this.paging, this.ram);
      this.mm = new Mm(this.mmu, this.frames, this.ram);
      this.kernelAs = this.mm.create();
      this.mmu.activate(this.kernelAs.root);
      this.currentAs = this.kernelAs;

      const bus = new CpuBus(kcpu);
      const d = boot.devices;
      this.irq = createIrqOps(
        boot.config.irq,
        kcpu,
        bus,
        this.xen,
        mem.sharedInfo,
        boot.vcpuInfoOffset,
        boot.backendDomid,
        d.pic?.base ?? 0x20,
      );
      this.time = createTimeOps(boot, kcpu, bus, this.xen, mem.sharedInfo);
      this.irq.bindTimer(
        d.timer,
        boot.config.time === "pv",
        () => this.timerInterrupt(),
        this.time.localEoi,
      );
      this.lastNow = this.time.now();
      const schedule = (task: () => void): void => {
        this.softirqs.push(task);
      };
      if (d.net !== null) {
        const route = { handler: (): void => {} };
        this.irq.bindDevice(d.net, () => route.handler());
        const dev = openNetDevice(d.net.kind, d.net.base, bus, mem.ram, this.heap, schedule);
        route.handler = () => dev.onInterrupt();
        this.net = dev;
        this.stack = new NetStack(dev, boot.guestIp, boot.hostIp, (q) => q.wakeAll(this.wakeFn));
      }
      if (d.blk !== null) {
        const route = { handler: (): void => {} };
        this.irq.bindDevice(d.blk, () => route.handler());
        const dev = openBlockDevice(d.blk.base, bus, mem.ram, this.heap);
        route.handler = () => dev.onInterrupt();
        this.blk = dev;
      }
    } catch (e) {
      throw this.toError(e);
    }
    this.where = "idle";
  }

  // ---------------------------------------------------------------------------------------
  // Running a workload

  /**
   * Runs a workload to completion: its first process starts from the `init` image and
   * runs the workload's program; the run ends when that process exits.
   *
   * @returns what the guest saw and counted
   * @throws GuestKernelError `UNKNOWN_WORKLOAD`, `BAD_PARAMS`, `MISSING_DEVICE`, `BUSY`;
   *   `GuestPanic`, `GuestBudgetExceeded`, `GUEST_DEADLOCK` when the guest stops (then every
   *   later run answers `BUSY`)
   */
  async run(workload: string, params: WorkloadParams = {}): Promise<GuestRunResult> {
    this.checkIdle(workload);
    const { workload: w, params: resolved } = checkWorkload(
      workload,
      params,
      this.boot.config.name,
      this.net !== null,
      this.blk !== null,
    );
    return this.runInit(workload, w.program(resolved));
  }

  /**
   * Runs any program as the first process of a run (in-process use: tests, custom
   * workloads). Like {@link run}, the run ends when the program's process exits.
   *
   * @param program - the program
   * @param label - its name in the result
   * @returns what the guest saw and counted
   */
  async runProgram(program: Program, label = "program"): Promise<GuestRunResult> {
    this.checkIdle(label);
    if (typeof program !== "function") {
      throw new GuestKernelError(
        GuestKernelErrorCode.BAD_PARAMS,
        "runProgram needs a generator function (u) => …",
      );
    }
    return this.runInit(label, program);
  }

  private checkIdle(workload: string): void {
    if (this.stopped !== null) {
      throw new GuestKernelError(
        GuestKernelErrorCode.BUSY,
        `the guest kernel stopped earlier and cannot run "${workload}": ${this.stopped.message}`,
      );
    }
    if (this.running) {
      throw new GuestKernelError(
        GuestKernelErrorCode.BUSY,
        `a workload is already running; "${workload}" must wait`,
      );
    }
  }

  private async runInit(workload: string, program: Program): Promise<GuestRunResult> {
    this.running = true;
    // The budgets count from the start of this run (boot and earlier runs are free).
    this.cpu.limit = this.cpu.exits + this.cpu.maxExits;
    this.stepLimit = this.steps + this.maxSteps;
    this.results = {};
    this.processErrors = [];
    const start = this.meter();
    this.measureFrom = null;
    this.measureTo = null;
    try {
      const init = this.spawn(program);
      while (init.state !== TaskState.ZOMBIE) {
        this.serviceInterrupts();
        const t = this.runQueue.shift();
        if (t === undefined) {
          await this.idle();
          continue;
        }
        if (t.state !== TaskState.RUNNABLE) continue;
        this.switchTo(t);
        this.runTask(t);
      }
      this.where = "exit";
      const status = init.exitStatus;
      this.reapAll();
      // Back to the kernel's address space; every dead process's space is freed now.
      this.mmu.activate(this.kernelAs.root);
      this.currentAs = this.kernelAs;
      for (const dead of this.deadSpaces.splice(0)) this.mm.destroy(dead);
      const end = this.meter();
      return {
        workload,
        ops: typeof this.results.ops === "number" ? this.results.ops : 0,
        exitStatus: status,
        results: { ...this.results },
        measured: meterDelta(this.measureFrom ?? start, this.measureTo ?? end),
        run: meterDelta(start, end),
        processErrors: [...this.processErrors],
      };
    } catch (e) {
      const err = this.toError(e);
      this.stopped = err;
      throw err;
    } finally {
      this.running = false;
    }
  }

  /** Counters since boot (for tests). */
  get counters(): {
    readonly exits: number;
    readonly steps: number;
    readonly contextSwitches: number;
  } {
    return { exits: this.cpu.exits, steps: this.steps, contextSwitches: this.contextSwitches };
  }

  /** A snapshot of the counters. */
  private meter(): GuestMeter {
    let kicks = 0;
    if (this.net !== null) kicks += this.net.kicks();
    if (this.blk !== null) kicks += this.blk.kicks();
    return {
      exits: this.cpu.exits,
      exitsByOp: Array.from(this.cpu.byOp),
      hypercalls: Array.from(this.cpu.hypercalls),
      interrupts: this.interrupts,
      notifications: kicks,
      contextSwitches: this.contextSwitches,
      pageFaults: this.pageFaults,
      tlbMisses: this.paging.misses,
      walkRefs: this.paging.walkRefs,
      steps: this.steps,
      guestNs: this.tscNs(),
      wallNs: performance.now() * 1e6,
    };
  }

  private tscNs(): number {
    const tsc = this.cpu.rdtsc();
    const khz = this.boot.tscKhz;
    const ms = Math.floor(tsc / khz);
    return ms * 1_000_000 + Math.floor(((tsc - ms * khz) * 1_000_000) / khz);
  }

  private location(fn: string): GuestLocation {
    return {
      function: fn,
      pid: this.current?.pid ?? 0,
      lastExit: this.cpu.lastOp === 0 ? "none" : exitOpName(this.cpu.lastOp),
      exits: this.cpu.exits,
    };
  }

  private toError(e: unknown): Error {
    if (e instanceof GuestKernelError) return e;
    if (e instanceof KernelBug) return new GuestPanic(e.reason, this.location(e.where));
    if (e instanceof BudgetStop)
      return new GuestBudgetExceeded(e.kind, e.limit, this.location(this.where));
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return new GuestPanic(`unexpected exception: ${msg}`, this.location(this.where));
  }

  private step(): void {
    if (++this.steps > this.stepLimit) throw new BudgetStop("steps", this.maxSteps);
  }

  // ---------------------------------------------------------------------------------------
  // Processes and the scheduler

  private readonly wakeFn = (t: Task): void => this.wake(t);

  private spawn(program: Program): Task {
    let as: AddressSpace;
    try {
      as = this.mm.exec(INIT_IMAGE);
    } catch (e) {
      if (e instanceof OutOfMemory) panic("sched/spawn_init", "no memory for init's address space");
      throw e;
    }
    const pid = this.nextPid++;
    const user = new User(pid, this);
    const t = new Task(pid, null, as, program(user));
    this.users.set(pid, user);
    this.layouts.set(pid, imageLayout(INIT_IMAGE));
    this.tasks.set(pid, t);
    this.runQueue.push(t);
    return t;
  }

  private wake(t: Task): void {
    if (t.state !== TaskState.BLOCKED) return;
    t.state = TaskState.RUNNABLE;
    this.sleepers.delete(t);
    this.waitKind.delete(t);
    t.blockedOn = "";
    this.runQueue.push(t);
  }

  private block(t: Task, on: Block, kind: WaitKind, what: string): void {
    t.state = TaskState.BLOCKED;
    t.blockedOn = what;
    this.waitKind.set(t, kind);
    if (on !== null) on.add(t);
  }

  /** Puts `t` on the CPU: its address space is loaded if it is not (`switch_mm`). */
  private switchTo(t: Task): void {
    this.where = "sched/switch";
    if (this.lastRan !== null && this.lastRan !== t) this.contextSwitches++;
    this.lastRan = t;
    this.current = t;
    if (t.as !== this.currentAs) {
      this.mmu.activate(t.as.root);
      this.currentAs = t.as;
    }
    for (let i = this.deadSpaces.length - 1; i >= 0; i--) {
      const dead = this.deadSpaces[i]!;
      if (dead === this.currentAs) continue;
      this.deadSpaces.splice(i, 1);
      this.mm.destroy(dead);
    }
    t.sliceEnd = this.lastNow + this.quantum;
    if (this.runQueue.length > 0 && (this.armed < 0 || this.armed > t.sliceEnd))
      this.arm(t.sliceEnd);
  }

  /** Runs `t` until it blocks, yields, exits or is preempted; then no task runs. */
  private runTask(t: Task): void {
    this.runSlice(t);
    this.current = null;
    this.needResched = false;
  }

  private runSlice(t: Task): void {
    for (;;) {
      if (t.kernelPath !== null) {
        const r = t.kernelPath.next();
        if (!r.done) {
          // The blocking path named its wait queue (null: a timed sleep, already on the timer list).
          if (t.state === TaskState.RUNNABLE) {
            const q = r.value;
            this.block(t, q, q === null ? "timer" : q.io ? "io" : "software", this.where);
          }
          return;
        }
        t.kernelPath = null;
        t.resume = r.value;
      }
      this.step();
      this.where = "user";
      let r: IteratorResult<SyscallRequest, number>;
      try {
        r = t.program.next(t.resume) as IteratorResult<SyscallRequest, number>;
      } catch (e) {
        this.userException(t, e);
        return;
      }
      if (r.done) {
        this.exitTask(t, Number.isInteger(r.value) ? r.value : 0);
        return;
      }
      const out = this.syscall(t, r.value);
      if (out === SWITCHED) return;
      if (typeof out === "number") t.resume = out;
      else t.kernelPath = out;
      if (t.kernelPath === null) {
        this.serviceInterrupts();
        if (this.needResched && this.runQueue.length > 0) {
          this.needResched = false;
          this.runQueue.push(t);
          return;
        }
      }
    }
  }

  /** A program threw: a signal the kernel raised, or a bug in the program. */
  private userException(t: Task, e: unknown): void {
    if (e instanceof SegvSignal) {
      this.exitTask(t, SIGSEGV_STATUS);
      return;
    }
    if (e instanceof OomKill) {
      this.exitTask(t, SIGKILL_STATUS);
      return;
    }
    if (e instanceof KernelBug || e instanceof BudgetStop || e instanceof GuestKernelError) throw e;
    this.processErrors.push(`pid ${t.pid}: ${e instanceof Error ? e.message : String(e)}`);
    this.exitTask(t, SIGABRT_STATUS);
  }

  private exitTask(t: Task, status: number): void {
    this.where = "sched/exit";
    for (let fd = 0; fd < t.files.length; fd++) if (t.files[fd]) this.closeFd(t, fd);
    const init = this.initOf(t);
    for (const c of t.children) {
      c.parent = init;
      if (init !== null && init !== t) init.children.add(c);
    }
    t.children.clear();
    t.state = TaskState.ZOMBIE;
    t.exitStatus = status;
    this.sleepers.delete(t);
    if (t.parent !== null) t.parent.childExit.wakeAll(this.wakeFn);
    if (t.as === this.currentAs) this.deadSpaces.push(t.as);
    else this.mm.destroy(t.as);
    if (this.current === t) this.current = null;
  }

  private initOf(t: Task): Task | null {
    let p: Task | null = t;
    while (p !== null && p.parent !== null) p = p.parent;
    return p;
  }

  /** End of a run: every process left is killed and reaped. */
  private reapAll(): void {
    for (const t of [...this.tasks.values()]) {
      if (t.state !== TaskState.ZOMBIE && t.state !== TaskState.DEAD)
        this.exitTask(t, SIGKILL_STATUS);
    }
    for (const t of this.tasks.values()) t.state = TaskState.DEAD;
    this.tasks.clear();
    this.users.clear();
    this.layouts.clear();
    this.waitKind.clear();
    this.runQueue = [];
    this.sleepers.clear();
    this.current = null;
  }

  // ---------------------------------------------------------------------------------------
  // Interrupts, timers, idle

  private timerInterrupt(): void {
    this.timerFired = true;
    this.armed = -1;
  }

  /** Takes pending interrupts, runs their handlers and the soft interrupts, expires timers. */
  private serviceInterrupts(): void {
    if (this.cpu.pendingInterrupts() === 0 && this.softirqs.length === 0 && !this.timerFired)
      return;
    const saved = this.where;
    this.where = "irq";
    for (let round = 0; round < 64; round++) {
      const lines = this.cpu.takeInterrupts();
      if (lines !== 0) this.interrupts += this.irq.dispatch(lines);
      let ran = 0;
      while (this.softirqs.length > 0 && ran < 1024) {
        this.softirqs.shift()!();
        ran++;
      }
      if (this.timerFired) {
        this.timerFired = false;
        this.expireTimers();
      }
      if (lines === 0 && ran === 0 && this.cpu.pendingInterrupts() === 0) break;
    }
    this.where = saved;
  }

  private clock(): number {
    const t = this.time.now();
    this.lastNow = t;
    return t;
  }

  private expireTimers(): void {
    const now = this.clock();
    for (const t of [...this.sleepers]) {
      if (t.wakeAt <= now + TIMER_FUZZ_NS) {
        t.wakeAt = -1;
        this.wake(t);
      }
    }
    const cur = this.current;
    if (cur !== null && this.runQueue.length > 0) {
      // The running task's slice is over: reschedule at its next kernel entry; else keep
      // the preemption timer armed for the slice's end.
      if (now + TIMER_FUZZ_NS >= cur.sliceEnd) this.needResched = true;
      else if (this.armed < 0) this.arm(cur.sliceEnd);
    }
  }

  private arm(deadline: number): void {
    this.armed = deadline;
    if (!this.time.program(deadline)) {
      this.armed = -1;
      this.timerFired = true;
    }
  }

  /** The idle loop: arm the timer for the next sleeper, idle the vCPU, wait for an interrupt. */
  private async idle(): Promise<void> {
    this.where = "idle";
    let next = -1;
    for (const s of this.sleepers) if (next < 0 || s.wakeAt < next) next = s.wakeAt;
    if (next >= 0 && (this.armed < 0 || this.armed > next)) this.arm(next);
    if (this.cpu.pendingInterrupts() !== 0 || this.softirqs.length > 0 || this.timerFired) return;
    if (next < 0 && this.armed < 0) this.checkDeadlock();
    this.irq.halt();
    await this.cpu.waitForInterrupt();
  }

  /** Nothing runnable, no timer: unless someone waits for a device, nothing will ever run again. */
  private checkDeadlock(): void {
    for (const k of this.waitKind.values()) if (k === "io") return;
    const waiting = [...this.waitKind.keys()].map((t) => `pid ${t.pid} on ${t.blockedOn || "?"}`);
    throw new GuestKernelError(
      GuestKernelErrorCode.GUEST_DEADLOCK,
      `every process is blocked and nothing can wake them (${waiting.join(", ") || "no process"}): the guest would sleep forever`,
    );
  }

  // ---------------------------------------------------------------------------------------
  // User memory

  private task(pid: number): Task {
    const t = this.current;
    if (t === null || t.pid !== pid) {
      panic(
        "uaccess",
        `process ${pid} touched memory while ${t === null ? "no process" : `process ${t.pid}`} runs`,
      );
    }
    return t;
  }

  /** Translates a user access, taking page faults (`do_page_fault`). @returns the guest-physical address */
  private translate(t: Task, va: number, write: boolean): number {
    this.step();
    for (let tries = 0; tries < 4; tries++) {
      const gpa = this.paging.translate(va, write);
      if (gpa >= 0) return gpa;
      if (gpa === FAULT_NON_CANONICAL) throw new SegvSignal(va);
      if (gpa === FAULT_BAD_FRAME)
        panic("mm/walk", `a page table of pid ${t.pid} points outside RAM at 0x${va.toString(16)}`);
      this.pageFaults++;
      if (this.cpu.controls.pageFaultExits)
        this.cpu.exit(ExitOp.PAGE_FAULT, va, faultAccess(write), 0, 0, 0, 0);
      const saved = this.where;
      this.where = "mm/fault";
      const r = this.mm.fault(t.as, va, write);
      this.where = saved;
      if (r === "segv") throw new SegvSignal(va);
      if (r === "oom") throw new OomKill();
    }
    return panic("mm/fault", `fault at 0x${va.toString(16)} still unresolved after 4 tries`);
  }

  /** @inheritdoc */
  load(pid: number, va: number, size: 1 | 4): number {
    const t = this.task(pid);
    if (size === 1 || va % PAGE <= PAGE - 4) {
      const gpa = this.translate(t, va, false);
      return size === 1 ? this.ram.getUint8(gpa) : this.ram.getUint32(gpa, true);
    }
    let v = 0;
    for (let i = 0; i < 4; i++)
      v += this.ram.getUint8(this.translate(t, va + i, false)) * 2 ** (8 * i);
    return v;
  }

  /** @inheritdoc */
  store(pid: number, va: number, size: 1 | 4, value: number): void {
    const t = this.task(pid);
    if (size === 1 || va % PAGE <= PAGE - 4) {
      const gpa = this.translate(t, va, true);
      if (size === 1) this.ram.setUint8(gpa, value & 0xff);
      else this.ram.setUint32(gpa, value >>> 0, true);
      return;
    }
    for (let i = 0; i < 4; i++)
      this.ram.setUint8(this.translate(t, va + i, true), (value >>> (8 * i)) & 0xff);
  }

  /** @inheritdoc */
  readBytes(pid: number, va: number, len: number): Uint8Array {
    const t = this.task(pid);
    const out = new Uint8Array(Math.max(0, len));
    this.copyIn(t, va, out);
    return out;
  }

  /** @inheritdoc */
  writeBytes(pid: number, va: number, src: Uint8Array): void {
    this.copyOut(this.task(pid), va, src);
  }

  /** `copy_from_user`. */
  private copyIn(t: Task, va: number, dst: Uint8Array): void {
    for (let done = 0; done < dst.length; ) {
      const at = va + done;
      const n = Math.min(dst.length - done, PAGE - (at % PAGE));
      const gpa = this.translate(t, at, false);
      dst.set(this.ramBytes.subarray(gpa, gpa + n), done);
      done += n;
    }
  }

  /** `copy_to_user`. */
  private copyOut(t: Task, va: number, src: Uint8Array): void {
    for (let done = 0; done < src.length; ) {
      const at = va + done;
      const n = Math.min(src.length - done, PAGE - (at % PAGE));
      const gpa = this.translate(t, at, true);
      this.ramBytes.set(src.subarray(done, done + n), gpa);
      done += n;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Non-blocking system calls

  private enter(pid: number, name: string): Task {
    const t = this.task(pid);
    this.step();
    this.where = name;
    return t;
  }

  /** @inheritdoc */
  mmap(pid: number, length: number, writable: boolean): number {
    const t = this.enter(pid, "sys_mmap");
    return this.mm.mmap(t.as, length, writable);
  }

  /** @inheritdoc */
  munmap(pid: number, va: number, length: number): number {
    const t = this.enter(pid, "sys_munmap");
    return this.mm.munmap(t.as, va, length);
  }

  /** @inheritdoc */
  pipe(pid: number): number {
    const t = this.enter(pid, "sys_pipe");
    const frame = this.frames.alloc(FrameUse.KERNEL);
    if (frame < 0) return ENOMEM;
    const p = new Pipe(frame, this.frames.frameBytes(frame));
    const r = this.freeFd(t, 0);
    if (r < 0) {
      this.frames.release(frame);
      return EMFILE;
    }
    t.files[r] = new PipeEnd(p, false);
    const w = this.freeFd(t, r + 1);
    t.files[w] = new PipeEnd(p, true);
    return r;
  }

  private freeFd(t: Task, from: number): number {
    for (let fd = from; fd < 1024; fd++)
      if (t.files[fd] === undefined || t.files[fd] === null) return fd;
    return -1;
  }

  /** @inheritdoc */
  close(pid: number, fd: number): number {
    const t = this.enter(pid, "sys_close");
    return this.closeFd(t, fd);
  }

  private closeFd(t: Task, fd: number): number {
    const f = t.files[fd];
    if (!(f instanceof PipeEnd)) return EBADF;
    t.files[fd] = null;
    const p = f.pipe;
    if (f.write) {
      p.writers--;
      p.readWait.wakeAll(this.wakeFn);
    } else {
      p.readers--;
      p.writeWait.wakeAll(this.wakeFn);
    }
    if (p.readers === 0 && p.writers === 0) this.frames.release(p.frame);
    return 0;
  }

  /** @inheritdoc */
  now(pid: number): number {
    this.enter(pid, "vdso_clock_gettime");
    return this.clock();
  }

  /** @inheritdoc */
  report(key: string, value: ReportValue): void {
    this.results[key] = value;
  }

  /** @inheritdoc */
  measure(pid: number, start: boolean): void {
    this.task(pid);
    if (start) {
      this.measureFrom = this.meter();
      this.measureTo = null;
    } else if (this.measureFrom !== null) this.measureTo = this.meter();
  }

  /** @inheritdoc */
  crash(pid: number, reason: string): never {
    this.enter(pid, "sysrq_handle_crash");
    return panic("sysrq_handle_crash", reason);
  }

  /** @inheritdoc */
  layout(pid: number): ImageLayout | null {
    return this.layouts.get(pid) ?? null;
  }

  // ---------------------------------------------------------------------------------------
  // Blocking system calls

  private syscall(t: Task, req: SyscallRequest): number | KernelPath | typeof SWITCHED {
    this.step();
    if (req === null || typeof req !== "object") {
      this.processErrors.push(`pid ${t.pid}: yielded ${String(req)}, not a system call`);
      this.exitTask(t, SIGABRT_STATUS);
      return SWITCHED;
    }
    this.where = `sys_${req.nr}`;
    switch (req.nr) {
      case "yield":
        this.runQueue.push(t);
        return SWITCHED;
      case "getppid":
        return t.parent?.pid ?? 0;
      case "exit":
        this.exitTask(t, req.status | 0);
        return SWITCHED;
      case "sleep":
        return this.sysSleep(t, req.ns);
      case "fork":
        return this.sysFork(t, req.child);
      case "wait":
        return this.sysWait(t, req.pid);
      case "exec":
        return this.sysExec(t, req.image, req.entry, req.arg);
      case "read":
        return this.sysRead(t, req.fd, req.va, req.len);
      case "write":
        return this.sysWrite(t, req.fd, req.va, req.len);
      case "ping":
        return this.stack === null ? -19 : this.sysPing(t, req.va, req.len);
      case "sendto":
        return this.stack === null ? -19 : this.sysSendto(t, req.port, req.va, req.len, req.count);
      case "blk":
        return this.blk === null ? -19 : this.sysBlk(t, req.op, req.sector, req.va, req.len);
      default:
        return -38;
    }
  }

  private *sysSleep(t: Task, ns: number): KernelPath {
    if (!(ns >= 0) || !Number.isFinite(ns)) return EINVAL;
    t.wakeAt = this.clock() + ns;
    this.sleepers.add(t);
    yield null;
    return 0;
  }

  private sysFork(t: Task, child: Program): number {
    if (typeof child !== "function") return EINVAL;
    let as: AddressSpace;
    try {
      as = this.mm.fork(t.as);
    } catch (e) {
      if (e instanceof OutOfMemory) return ENOMEM;
      throw e;
    }
    const pid = this.nextPid++;
    const user = new User(pid, this);
    const c = new Task(pid, t, as, child(user));
    for (let fd = 0; fd < t.files.length; fd++) {
      const f = t.files[fd];
      if (!(f instanceof PipeEnd)) continue;
      if (f.write) f.pipe.writers++;
      else f.pipe.readers++;
      c.files[fd] = new PipeEnd(f.pipe, f.write);
    }
    const layout = this.layouts.get(t.pid);
    if (layout !== undefined) this.layouts.set(pid, layout);
    this.users.set(pid, user);
    this.tasks.set(pid, c);
    t.children.add(c);
    this.runQueue.push(c);
    return pid;
  }

  private *sysWait(t: Task, pid: number): KernelPath {
    let child: Task | undefined;
    for (const c of t.children) if (c.pid === pid || pid === -1) child = c;
    if (child === undefined) return ECHILD;
    while (child.state !== TaskState.ZOMBIE) yield t.childExit;
    t.children.delete(child);
    child.state = TaskState.DEAD;
    this.tasks.delete(child.pid);
    this.users.delete(child.pid);
    this.layouts.delete(child.pid);
    return child.exitStatus;
  }

  private sysExec(t: Task, image: ExecImage, entry: ExecEntry, arg: number): number {
    if (
      typeof entry !== "function" ||
      !(image?.text instanceof Uint8Array) ||
      !(image.data instanceof Uint8Array)
    ) {
      return EINVAL;
    }
    let as: AddressSpace;
    try {
      as = this.mm.exec(image);
    } catch (e) {
      if (e instanceof OutOfMemory) return ENOMEM;
      throw e;
    }
    const old = t.as;
    t.as = as;
    this.mmu.activate(as.root);
    this.currentAs = as;
    this.mm.destroy(old);
    this.layouts.set(t.pid, imageLayout(image));
    t.program = entry(this.users.get(t.pid)!, arg);
    return 0;
  }

  private pipeEnd(t: Task, fd: number, write: boolean): PipeEnd | null {
    const f = t.files[fd];
    return f instanceof PipeEnd && f.write === write ? f : null;
  }

  private *sysRead(t: Task, fd: number, va: number, len: number): KernelPath {
    const end = this.pipeEnd(t, fd, false);
    if (end === null) return EBADF;
    if (!Number.isSafeInteger(len) || len < 0) return EINVAL;
    const p = end.pipe;
    while (p.used === 0) {
      if (p.writers === 0 || len === 0) return 0;
      yield p.readWait;
    }
    const buf = new Uint8Array(Math.min(len, p.used));
    p.pull(buf);
    p.writeWait.wakeAll(this.wakeFn);
    this.copyOut(t, va, buf);
    return buf.length;
  }

  private *sysWrite(t: Task, fd: number, va: number, len: number): KernelPath {
    const end = this.pipeEnd(t, fd, true);
    if (end === null) return EBADF;
    if (!Number.isSafeInteger(len) || len < 0) return EINVAL;
    const p = end.pipe;
    let done = 0;
    while (done < len) {
      if (p.readers === 0) return done > 0 ? done : EPIPE;
      if (p.room === 0) {
        yield p.writeWait;
        continue;
      }
      const chunk = new Uint8Array(Math.min(len - done, p.room));
      this.copyIn(t, va + done, chunk);
      done += p.push(chunk);
      p.readWait.wakeAll(this.wakeFn);
    }
    return done;
  }

  private *arp(): Generator<Block, boolean, void> {
    const s = this.stack!;
    for (let tries = 0; s.hostMac === null; tries++) {
      if (tries > 16) return false;
      if (!s.resolveHost()) {
        yield s.txWait;
        continue;
      }
      yield s.arpWait;
    }
    return true;
  }

  private pingSeq = 0;

  private *sysPing(t: Task, va: number, len: number): KernelPath {
    const s = this.stack!;
    if (!Number.isSafeInteger(len) || len < 0 || len > 1472) return EINVAL;
    const payload = new Uint8Array(len);
    this.copyIn(t, va, payload);
    if (!(yield* this.arp())) return -113; // EHOSTUNREACH
    const id = t.pid & 0xffff;
    const seq = this.pingSeq++ & 0xffff;
    while (!s.sendEcho(id, seq, payload)) {
      s.dev.commit();
      yield s.txWait;
    }
    s.dev.commit();
    let reply = s.takeReply(id, seq);
    while (reply === null) {
      yield s.replyWait;
      reply = s.takeReply(id, seq);
    }
    const n = Math.min(reply.length, len);
    this.copyOut(t, va, reply.subarray(0, n));
    return n;
  }

  private *sysSendto(t: Task, port: number, va: number, len: number, count: number): KernelPath {
    const s = this.stack!;
    if (!Number.isSafeInteger(len) || len < 0 || len > UDP_MAX_PAYLOAD) return EINVAL;
    if (!Number.isSafeInteger(count) || count < 1 || count > 1 << 20) return EINVAL;
    const payload = new Uint8Array(len);
    this.copyIn(t, va, payload);
    if (!(yield* this.arp())) return -113;
    for (let i = 0; i < count; i++) {
      while (!s.sendUdp(40000 + (t.pid & 0xfff), port & 0xffff, payload)) {
        s.dev.commit();
        yield s.txWait;
      }
    }
    s.dev.commit();
    return count;
  }

  private *sysBlk(
    t: Task,
    op: "read" | "write" | "flush",
    sector: number,
    va: number,
    len: number,
  ): KernelPath {
    const dev = this.blk!;
    if (op !== "flush") {
      if (!Number.isSafeInteger(len) || len <= 0 || len % 512 !== 0 || len > BLK_MAX_BYTES)
        return EINVAL;
      if (!Number.isSafeInteger(sector) || sector < 0 || sector + len / 512 > dev.sectors)
        return EINVAL;
    }
    let bounce = -1;
    if (op !== "flush") {
      bounce = this.heap.alloc(len, 512);
      if (bounce < 0) return ENOMEM;
    }
    try {
      if (op === "write") this.copyIn(t, va, this.ramBytes.subarray(bounce, bounce + len));
      const wait = new WaitQueue(true);
      let status = -2;
      const done = (s: number): void => {
        status = s;
        wait.wakeAll(this.wakeFn);
      };
      if (op === "read") dev.read(sector, bounce, len, done);
      else if (op === "write") dev.write(sector, bounce, len, done);
      else dev.flush(done);
      dev.commit();
      while (status === -2) yield wait;
      if (status !== 0) return EIO;
      if (op === "read") this.copyOut(t, va, this.ramBytes.subarray(bounce, bounce + len));
      return 0;
    } finally {
      if (bounce >= 0) this.heap.free(bounce);
    }
  }
}

/** The counters between two snapshots. */
function meterDelta(a: GuestMeter, b: GuestMeter): GuestMeter {
  return {
    exits: b.exits - a.exits,
    exitsByOp: b.exitsByOp.map((v, i) => v - (a.exitsByOp[i] ?? 0)),
    hypercalls: b.hypercalls.map((v, i) => v - (a.hypercalls[i] ?? 0)),
    interrupts: b.interrupts - a.interrupts,
    notifications: b.notifications - a.notifications,
    contextSwitches: b.contextSwitches - a.contextSwitches,
    pageFaults: b.pageFaults - a.pageFaults,
    tlbMisses: b.tlbMisses - a.tlbMisses,
    walkRefs: b.walkRefs - a.walkRefs,
    steps: b.steps - a.steps,
    guestNs: b.guestNs - a.guestNs,
    wallNs: Math.round(b.wallNs - a.wallNs),
  };
}
