/**
 * The guest side of the threaded runtime: what runs in the worker. A {@link ThreadedCpu}
 * turns every exit into a synchronous round trip through `@pvkit/platform`'s trap channel
 * (`TrapPort.call`), takes interrupts from the channel's pending bitmap, halts on the
 * channel, and reads the TSC from a {@link SharedClock}; the kernel is booted on it exactly
 * as in-process ({@link bootKernel}). {@link startThreadedGuest} then waits for commands
 * (run a workload, run a registered program, close) and posts each result back.
 *
 * Commands travel in a small shared mailbox plus an interrupt line of the channel
 * ({@link COMMAND_LINE}), so the guest waits for them halted (a watchdog sees a halted guest
 * as waiting, not stalled) and needs no event loop of its own. Results and errors travel
 * back as structured-clone messages through whatever `post` the entry provides.
 *
 * Only `SharedArrayBuffer`, `Atomics`, `TextDecoder` and `performance` are used — no Node
 * built-in — so the same code runs in a Web Worker (see `worker.ts` for the Node entry;
 * exported as `@pvkit/guest-kernel-pv/threaded`).
 *
 * @module
 */

import { nsToTsc } from "@pvkit/hypercall";
import { TrapChannel, type TrapPort, TrapStatus, TrapWord } from "@pvkit/platform";
import type { BootInfo } from "../boot.js";
import {
  GuestBudgetExceeded,
  GuestKernelError,
  GuestKernelErrorCode,
  type GuestLocation,
  GuestPanic,
} from "../errors.js";
import { type Cpu, type CpuControls, EXIT_EINVAL } from "../exit.js";
import type { GuestRunResult, Kernel, KernelOptions } from "../guest/kernel.js";
import type { Program } from "../guest/user.js";
import type { WorkloadParams } from "../guest/workloads/index.js";
import { SharedClock } from "../host/clock.js";
import { bootKernel } from "./boot-kernel.js";

/** The channel line that tells the guest a command waits in the mailbox (word 1 of the bitmap: never a device line). */
export const COMMAND_LINE = 32;

/** Bytes of the command mailbox (a length word, then UTF-8 JSON). */
export const MAILBOX_BYTES = 64 * 1024;

const MAILBOX_DATA = 8;

/** A command from the host. */
export type ThreadedCommand =
  | {
      readonly type: "run";
      readonly workload: string;
      readonly params: WorkloadParams;
    }
  | { readonly type: "program"; readonly name: string; readonly label: string }
  | { readonly type: "close" };

/** The execution controls as they travel to the worker (the write-protect bitmap as its shared buffer). */
export interface SharedCpuControls extends Omit<CpuControls, "writeProtect"> {
  /** The shadow MMU's write-protect bitmap (one byte per guest frame), or `null`. */
  readonly writeProtect: SharedArrayBuffer | null;
}

/** What the host puts in the worker's `workerData.data`. */
export interface ThreadedGuestData {
  /** What the guest learns at boot. */
  readonly bootInfo: BootInfo;
  /** Budgets and tunables. */
  readonly kernelOptions: KernelOptions;
  /** The vCPU's execution controls. */
  readonly controls: SharedCpuControls;
  /** The {@link SharedClock}'s buffer. */
  readonly clock: SharedArrayBuffer;
  /** The command mailbox ({@link MAILBOX_BYTES}). */
  readonly mailbox: SharedArrayBuffer;
}

/** The worker's start data: the trap channel, machine memory and {@link ThreadedGuestData} (the shape `runTrapWorker` passes). */
export interface ThreadedWorkerData {
  /** The trap channel's buffer. */
  readonly channel: SharedArrayBuffer;
  /** Machine memory (guest RAM and the shared-info page are windows of it). */
  readonly memory: SharedArrayBuffer | null;
  /** The runtime's data. */
  readonly data: ThreadedGuestData;
}

/** An error as it crosses the wall (structured-clone safe). */
export interface SerializedGuestError {
  /** The error's class name. */
  readonly name: string;
  /** Its message. */
  readonly message: string;
  /** `GuestKernelError` code. */
  readonly code?: string;
  /** `GuestPanic` reason. */
  readonly reason?: string;
  /** Where a panic or a budget stopped the guest. */
  readonly where?: GuestLocation;
  /** Which budget. */
  readonly budget?: "exits" | "steps";
  /** Its size. */
  readonly limit?: number;
}

/** A message from the guest's worker to the host. */
export type ThreadedGuestMessage =
  | { readonly type: "ready" }
  | { readonly type: "result"; readonly result: GuestRunResult }
  | { readonly type: "error"; readonly boot: boolean; readonly error: SerializedGuestError };

/**
 * Writes a command into the mailbox (host side; the host then raises {@link COMMAND_LINE}).
 *
 * @param mailbox - the mailbox buffer
 * @param command - the command
 * @throws RangeError when the command does not fit
 */
export function writeCommand(mailbox: SharedArrayBuffer, command: ThreadedCommand): void {
  const bytes = new TextEncoder().encode(JSON.stringify(command));
  if (bytes.length > MAILBOX_BYTES - MAILBOX_DATA) {
    throw new RangeError(`a command of ${bytes.length} bytes does not fit the mailbox`);
  }
  new Uint8Array(mailbox).set(bytes, MAILBOX_DATA);
  Atomics.store(new Int32Array(mailbox, 0, 1), 0, bytes.length); // publishes the bytes
}

function readCommand(mailbox: SharedArrayBuffer): ThreadedCommand {
  const n = Atomics.load(new Int32Array(mailbox, 0, 1), 0);
  // TextDecoder refuses shared views: copy out first.
  const text = new TextDecoder().decode(
    new Uint8Array(mailbox).slice(MAILBOX_DATA, MAILBOX_DATA + n),
  );
  return JSON.parse(text) as ThreadedCommand;
}

/**
 * Turns an error into its serializable form.
 *
 * @param e - what the guest threw
 * @returns the serialized error
 */
export function serializeGuestError(e: unknown): SerializedGuestError {
  if (e instanceof GuestPanic)
    return { name: e.name, message: e.message, code: e.code, reason: e.reason, where: e.where };
  if (e instanceof GuestBudgetExceeded) {
    return {
      name: e.name,
      message: e.message,
      code: e.code,
      where: e.where,
      budget: e.kind,
      limit: e.limit,
    };
  }
  if (e instanceof GuestKernelError) return { name: e.name, message: e.message, code: e.code };
  if (e instanceof Error) return { name: e.name, message: e.stack ?? e.message };
  return { name: "Error", message: String(e) };
}

/**
 * Rebuilds an error serialized by {@link serializeGuestError} (host side), with its class.
 *
 * @param s - the serialized error
 * @returns a `GuestPanic`, `GuestBudgetExceeded`, `GuestKernelError` or `Error`
 */
export function deserializeGuestError(s: SerializedGuestError): Error {
  if (s.name === "GuestPanic" && s.where !== undefined)
    return new GuestPanic(s.reason ?? s.message, s.where);
  if (s.name === "GuestBudgetExceeded" && s.where !== undefined && s.budget !== undefined)
    return new GuestBudgetExceeded(s.budget, s.limit ?? 0, s.where);
  if (s.code !== undefined) return new GuestKernelError(s.code as GuestKernelErrorCode, s.message);
  const e = new Error(s.message);
  e.name = s.name;
  return e;
}

/**
 * The guest's CPU in the threaded runtime: an exit is `TrapPort.call(op, a0…a5)`, a
 * synchronous round trip to the host thread; interrupts are word 0 of the channel's
 * pending bitmap; idling halts on the channel; `RDTSC` reads the {@link SharedClock}.
 * Nothing on the exit path allocates.
 */
export class ThreadedCpu implements Cpu {
  /** The execution controls (the host's; the write-protect bitmap shared). */
  readonly controls: CpuControls;
  /** Device lines taken from the channel while waiting for a command (handed to the kernel next). */
  private carry = 0;
  private commands = 0;
  private entries = 0;
  private readonly ctrl: Int32Array;

  /**
   * @param port - the guest's end of the trap channel
   * @param clock - the shared clock
   * @param tscKhz - the TSC frequency (`BootInfo.tscKhz`)
   * @param controls - the host's execution controls
   */
  constructor(
    readonly port: TrapPort,
    private readonly clock: SharedClock,
    private readonly tscKhz: number,
    controls: SharedCpuControls,
  ) {
    this.ctrl = port.channel.ctrl;
    this.controls = {
      cr3LoadExits: controls.cr3LoadExits,
      tlbFlushExits: controls.tlbFlushExits,
      pageFaultExits: controls.pageFaultExits,
      nestedPaging: controls.nestedPaging,
      writeProtect: controls.writeProtect === null ? null : new Uint8Array(controls.writeProtect),
    };
  }

  /**
   * One exit: a round trip through the trap channel.
   *
   * @throws Error when the host stopped serving (the guest cannot go on)
   */
  exit(op: number, a0: number, a1: number, a2: number, a3: number, a4: number, a5: number): number {
    const r = this.port.call(op, a0, a1, a2, a3, a4, a5);
    if (this.port.status === TrapStatus.OK) return r;
    return this.failed();
  }

  private failed(): number {
    if (this.port.status === TrapStatus.HANDLER_FAULT) return EXIT_EINVAL;
    throw new Error(
      `the host stopped serving exits (trap status ${this.port.status}): ${this.port.channel.describe()}`,
    );
  }

  /**
   * The pending lines (word 0 of the channel's bitmap), without taking them. The kernel asks
   * at every entry, so every 64th call is also a heartbeat for the host's watchdog: a kernel
   * making system calls without exits (hw-assist) is progressing, not stalled.
   */
  pendingInterrupts(): number {
    if ((++this.entries & 63) === 0) this.port.beat();
    return this.carry | Atomics.load(this.ctrl, TrapWord.PENDING);
  }

  /** Takes the pending lines: the channel's summary and bitmap are cleared. */
  takeInterrupts(): number {
    const bits = this.port.takePending();
    this.commands |= bits[1]!;
    const lines = this.carry | bits[0]!;
    this.carry = 0;
    return lines;
  }

  /**
   * Halts on the channel until a line is pending (the host's idle loop moves time and
   * completes device work meanwhile).
   *
   * @throws GuestKernelError `GUEST_DEADLOCK` when the host stops the halted guest
   *   (nothing could ever wake it, or the host is closing)
   */
  waitForInterrupt(): Promise<void> {
    for (;;) {
      const why = this.port.halt();
      if (why === "interrupt") {
        if (this.carry !== 0 || Atomics.load(this.ctrl, TrapWord.PENDING) !== 0) break;
        // Only a command line (word 1): not for the kernel; keep halting.
        const bits = this.port.takePending();
        this.commands |= bits[1]!;
        this.carry |= bits[0]!;
        if (this.carry !== 0) break;
        continue;
      }
      if (why === "stop") {
        return Promise.reject(
          new GuestKernelError(
            GuestKernelErrorCode.GUEST_DEADLOCK,
            "the host stopped the halted guest: no timer armed and no device activity could wake it",
          ),
        );
      }
    }
    return Promise.resolve();
  }

  /** `RDTSC` from the shared clock (no exit). */
  rdtsc(): number {
    return nsToTsc(this.clock.nowNs(), this.tscKhz);
  }

  /**
   * Halts until the host posts a command (between runs), keeping any device line for the
   * kernel.
   *
   * @returns false when the host asked the guest to stop instead
   */
  waitForCommand(): boolean {
    for (;;) {
      if ((this.commands & 1) !== 0) {
        this.commands &= ~1;
        return true;
      }
      const why = this.port.halt();
      if (why === "stop") return false;
      const bits = this.port.takePending();
      this.carry |= bits[0]!;
      this.commands |= bits[1]!;
    }
  }
}

/** Options of {@link startThreadedGuest}. */
export interface ThreadedGuestOptions {
  /** Programs the host may run by name with `runProgram(name)` (code cannot be sent to a worker). */
  readonly programs?: Readonly<Record<string, Program>>;
}

/**
 * Runs the guest side of the threaded runtime in the current (worker) thread: attaches the
 * trap channel, boots the kernel, posts `{ type: "ready" }` (or the boot error), then serves
 * commands until told to close. Every result or error is posted back; the guest then
 * {@link TrapPort.exit}s (0 after a close, 1 after a failed boot).
 *
 * @param workerData - the start data the host gave the worker
 * @param post - sends a message to the host (`parentPort.postMessage` in Node, `postMessage` in a Web Worker)
 * @param options - programs to offer by name
 * @returns when the guest has ended
 */
export async function startThreadedGuest(
  workerData: ThreadedWorkerData,
  post: (message: ThreadedGuestMessage) => void,
  options: ThreadedGuestOptions = {},
): Promise<void> {
  const port = TrapChannel.attach(workerData.channel).port();
  const data = workerData.data;
  let kernel: Kernel;
  let cpu: ThreadedCpu;
  try {
    if (workerData.memory === null) throw new Error("the threaded guest needs machine memory");
    cpu = new ThreadedCpu(
      port,
      SharedClock.attach(data.clock),
      data.bootInfo.tscKhz,
      data.controls,
    );
    kernel = bootKernel(cpu, data.bootInfo, workerData.memory, data.kernelOptions);
  } catch (e) {
    post({ type: "error", boot: true, error: serializeGuestError(e) });
    port.exit(1);
    return;
  }
  post({ type: "ready" });
  const programs = options.programs ?? {};
  for (;;) {
    if (!cpu.waitForCommand()) break;
    const cmd = readCommand(data.mailbox);
    if (cmd.type === "close") break;
    try {
      let result: GuestRunResult;
      if (cmd.type === "run") result = await kernel.run(cmd.workload, cmd.params);
      else {
        const program = Object.hasOwn(programs, cmd.name) ? programs[cmd.name] : undefined;
        if (program === undefined) {
          throw new GuestKernelError(
            GuestKernelErrorCode.BAD_PARAMS,
            `no program "${cmd.name}" is registered in the guest's worker (registered: ${Object.keys(programs).join(", ") || "none"})`,
          );
        }
        result = await kernel.runProgram(program, cmd.label);
      }
      post({ type: "result", result });
    } catch (e) {
      post({ type: "error", boot: false, error: serializeGuestError(e) });
    }
  }
  port.exit(0);
}
