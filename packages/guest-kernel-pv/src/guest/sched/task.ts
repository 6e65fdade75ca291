/**
 * Processes and wait queues (Linux `task_struct` and `wait_queue_head_t`, much reduced).
 * A process's user code is a generator (see `Program`): it runs until it yields a blocking
 * system call; a blocking call runs in the kernel as a kernel generator that yields the
 * wait queue it sleeps on and is resumed when woken — the kernel stack of that task.
 *
 * @module
 */

import type { AddressSpace } from "../mm/vm.js";

/** Task states. */
export const TaskState = {
  /** On the run queue, or running. */
  RUNNABLE: 0,
  /** Sleeping on a wait queue or a timer. */
  BLOCKED: 1,
  /** Exited, not reaped. */
  ZOMBIE: 2,
  /** Reaped. */
  DEAD: 3,
} as const;

/** What a blocking kernel path yields: the wait queue it sleeps on (null: a timed sleep). */
export type Block = WaitQueue | null;

/** A kernel generator: a blocking system call in progress (its "kernel stack"). */
export type KernelPath = Generator<Block, number, void>;

/** A process. */
export class Task {
  /** Scheduling state ({@link TaskState}). */
  state: number = TaskState.RUNNABLE;
  /** Value handed to the user generator when it resumes (a system call's result). */
  resume = 0;
  /** The blocking system call in progress, or null. */
  kernelPath: KernelPath | null = null;
  /** Absolute wake-up time of a timed sleep (ns), or -1. */
  wakeAt = -1;
  /** Exit status once a zombie. */
  exitStatus = 0;
  /** Children not yet reaped. */
  readonly children = new Set<Task>();
  /** Woken when a child exits. */
  readonly childExit = new WaitQueue();
  /** Open files (pipe ends), by descriptor. */
  readonly files: (object | null)[] = [];
  /** What it is blocked on (diagnostics). */
  blockedOn = "";
  /** When its time slice ends (ns). */
  sliceEnd = 0;

  /**
   * @param pid - process id
   * @param parent - the parent, or null for init
   * @param as - its address space
   * @param program - its user code, started
   */
  constructor(
    readonly pid: number,
    public parent: Task | null,
    public as: AddressSpace,
    public program: Generator<unknown, number, number>,
  ) {}
}

/** Tasks sleeping until something happens. */
export class WaitQueue {
  private readonly waiters = new Set<Task>();

  /**
   * @param io - a device completion or arrival wakes it (an interrupt can come); false for
   *   queues only another process wakes (pipes, `wait`), which the deadlock check uses
   */
  constructor(readonly io = false) {}

  /** Adds a task (it must already be marked blocked). */
  add(t: Task): void {
    this.waiters.add(t);
  }

  /** Removes a task (a timed wait that expired, a killed task). */
  remove(t: Task): void {
    this.waiters.delete(t);
  }

  /** Whether anyone waits. */
  get size(): number {
    return this.waiters.size;
  }

  /**
   * Wakes every waiter.
   *
   * @param wake - makes a task runnable
   */
  wakeAll(wake: (t: Task) => void): void {
    if (this.waiters.size === 0) return;
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const t of ws) wake(t);
  }
}
