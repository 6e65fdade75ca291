/**
 * What a process's code sees of the kernel: its system calls. A program is a generator
 * function (`Program`): non-blocking calls (memory access, `mmap`, `pipe`, the clock) are
 * plain method calls on its {@link User} handle; a call that may block or switch away is
 * *yielded* — `const pid = yield u.fork(child)` — and the kernel resumes the generator
 * with the result when the call completes, possibly after running other processes.
 *
 * Memory access (`load8`, `store32`, `read`, `write`, …) is the CPU executing the
 * process's instructions: each access translates through the process's page tables (the
 * TLB, a walk on a miss) and a missing or read-only mapping is a page fault into the
 * kernel. An access the kernel cannot resolve kills the process with `SIGSEGV`.
 *
 * @module
 */

import type { ExecImage, ImageLayout } from "./mm/vm.js";

/** A blocking or scheduling system call, as a program yields it. */
export type SyscallRequest =
  | { readonly nr: "sleep"; readonly ns: number }
  | { readonly nr: "yield" }
  | { readonly nr: "getppid" }
  | { readonly nr: "fork"; readonly child: Program }
  | { readonly nr: "wait"; readonly pid: number }
  | { readonly nr: "exit"; readonly status: number }
  | {
      readonly nr: "exec";
      readonly image: ExecImage;
      readonly entry: ExecEntry;
      readonly arg: number;
    }
  | { readonly nr: "read"; readonly fd: number; readonly va: number; readonly len: number }
  | { readonly nr: "write"; readonly fd: number; readonly va: number; readonly len: number }
  | { readonly nr: "ping"; readonly va: number; readonly len: number }
  | {
      readonly nr: "sendto";
      readonly port: number;
      readonly va: number;
      readonly len: number;
      readonly count: number;
    }
  | {
      readonly nr: "blk";
      readonly op: "read" | "write" | "flush";
      readonly sector: number;
      readonly va: number;
      readonly len: number;
    };

/** A process's code: yields blocking system calls, returns its exit status. */
export type Program = (u: User) => Generator<SyscallRequest, number, number>;

/** The entry point of an exec'd image: gets the process handle and one integer argument. */
export type ExecEntry = (u: User, arg: number) => Generator<SyscallRequest, number, number>;

/** A value a workload reports (guest-visible output). */
export type ReportValue = number | string | boolean;

/** The kernel services a {@link User} handle calls (implemented by the kernel). */
export interface UserKernel {
  load(pid: number, va: number, size: 1 | 4): number;
  store(pid: number, va: number, size: 1 | 4, value: number): void;
  readBytes(pid: number, va: number, len: number): Uint8Array;
  writeBytes(pid: number, va: number, src: Uint8Array): void;
  mmap(pid: number, length: number, writable: boolean): number;
  munmap(pid: number, va: number, length: number): number;
  pipe(pid: number): number;
  close(pid: number, fd: number): number;
  now(pid: number): number;
  report(key: string, value: ReportValue): void;
  measure(pid: number, start: boolean): void;
  crash(pid: number, reason: string): never;
  layout(pid: number): ImageLayout | null;
}

/** A process's handle on the kernel. */
export class User {
  /**
   * @param pid - the process id
   * @param k - the kernel
   */
  constructor(
    readonly pid: number,
    private readonly k: UserKernel,
  ) {}

  // Memory: the CPU running the process's loads and stores.

  /** Loads a byte. */
  load8(va: number): number {
    return this.k.load(this.pid, va, 1);
  }
  /** Loads a little-endian u32 (may span two pages). */
  load32(va: number): number {
    return this.k.load(this.pid, va, 4);
  }
  /** Stores a byte. */
  store8(va: number, value: number): void {
    this.k.store(this.pid, va, 1, value);
  }
  /** Stores a little-endian u32. */
  store32(va: number, value: number): void {
    this.k.store(this.pid, va, 4, value);
  }
  /** Copies `len` bytes out of the process's memory. */
  read(va: number, len: number): Uint8Array {
    return this.k.readBytes(this.pid, va, len);
  }
  /** Copies bytes into the process's memory. */
  write(va: number, src: Uint8Array): void {
    this.k.writeBytes(this.pid, va, src);
  }

  // Non-blocking system calls.

  /** `mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)`. @returns the address or -errno */
  mmap(length: number, writable = true): number {
    return this.k.mmap(this.pid, length, writable);
  }
  /** `munmap`. @returns pages unmapped or -errno */
  munmap(va: number, length: number): number {
    return this.k.munmap(this.pid, va, length);
  }
  /** `pipe`. @returns the read descriptor (the write descriptor is the next one) or -errno */
  pipe(): number {
    return this.k.pipe(this.pid);
  }
  /** `close`. */
  close(fd: number): number {
    return this.k.close(this.pid, fd);
  }
  /** `clock_gettime` through the vDSO: the kernel's clocksource, ns. */
  gettimeofday(): number {
    return this.k.now(this.pid);
  }
  /** Where the image of an exec'd process is mapped (null before any exec). */
  get layout(): ImageLayout | null {
    return this.k.layout(this.pid);
  }
  /** Writes a result to the console (guest-visible output of a workload). */
  report(key: string, value: ReportValue): void {
    this.k.report(key, value);
  }
  /**
   * Starts the measured part of a workload (lmbench's `start()`): the counters of the run's
   * result cover what happens from here to {@link measureStop} (default: the whole run).
   */
  measureStart(): void {
    this.k.measure(this.pid, true);
  }
  /** Ends the measured part (lmbench's `stop()`). */
  measureStop(): void {
    this.k.measure(this.pid, false);
  }
  /** The magic SysRq `c` (Linux `sysrq_handle_crash`): the kernel panics on purpose. */
  sysrqCrash(): never {
    return this.k.crash(this.pid, "sysrq triggered crash");
  }

  // Blocking system calls (yield them).

  /** `nanosleep`. */
  sleep(ns: number): SyscallRequest {
    return { nr: "sleep", ns };
  }
  /** `getppid`, a null system call (lmbench `lat_syscall null`): result is the parent's pid, or 0. */
  getppid(): SyscallRequest {
    return { nr: "getppid" };
  }
  /** `sched_yield`. */
  yieldCpu(): SyscallRequest {
    return { nr: "yield" };
  }
  /** `fork`: the child runs `child` in a copy-on-write copy of this address space. Result: the child's pid or -errno. */
  fork(child: Program): SyscallRequest {
    return { nr: "fork", child };
  }
  /** `waitpid`: result is the child's exit status, or -ECHILD. */
  wait(pid: number): SyscallRequest {
    return { nr: "wait", pid };
  }
  /** `exit`. */
  exit(status: number): SyscallRequest {
    return { nr: "exit", status };
  }
  /** `execve`: replaces the address space with `image` and the code with `entry(u, arg)`. Returns only on error. */
  exec(image: ExecImage, entry: ExecEntry, arg = 0): SyscallRequest {
    return { nr: "exec", image, entry, arg };
  }
  /** `read` from a pipe: result is bytes read (0 at end of file) or -errno. */
  readFd(fd: number, va: number, len: number): SyscallRequest {
    return { nr: "read", fd, va, len };
  }
  /** `write` to a pipe: result is bytes written or -errno. */
  writeFd(fd: number, va: number, len: number): SyscallRequest {
    return { nr: "write", fd, va, len };
  }
  /** ICMP echo to the host with `len` bytes at `va` as payload; the reply's payload is copied back there. Result: bytes received. */
  ping(va: number, len: number): SyscallRequest {
    return { nr: "ping", va, len };
  }
  /** `sendmmsg`: `count` UDP datagrams of `len` bytes at `va` to the host's `port`. Result: datagrams sent. */
  sendto(port: number, va: number, len: number, count = 1): SyscallRequest {
    return { nr: "sendto", port, va, len, count };
  }
  /** Reads `len` bytes (a multiple of 512, ≤ 64 KiB) at `sector` of the disk into `va`. Result 0 or -EIO. */
  blkRead(sector: number, va: number, len: number): SyscallRequest {
    return { nr: "blk", op: "read", sector, va, len };
  }
  /** Writes `len` bytes at `va` to `sector` of the disk. Result 0 or -EIO. */
  blkWrite(sector: number, va: number, len: number): SyscallRequest {
    return { nr: "blk", op: "write", sector, va, len };
  }
  /** Flushes the disk's write cache. Result 0 or -EIO. */
  blkFlush(): SyscallRequest {
    return { nr: "blk", op: "flush", sector: 0, va: 0, len: 0 };
  }
}

/**
 * A program that never blocks — it makes no yielded system call — written as a plain
 * function (its code still runs as a process: memory accesses, `mmap`, the clock).
 *
 * @param body - the program; its return value is the exit status
 * @returns the program
 */
export function nonBlocking(body: (u: User) => number): Program {
  // biome-ignore lint/correctness/useYield: a program that never blocks yields nothing
  return function* (u: User): Generator<SyscallRequest, number, number> {
    return body(u);
  };
}
