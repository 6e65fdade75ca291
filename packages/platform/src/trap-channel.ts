/**
 * The trap channel: the transport of pvkit's threaded runtime. The guest runs in a worker
 * (`worker_threads` in Node, a Web Worker in browsers); the hypervisor and the devices run
 * in another thread. Every exit — a register access, a hypercall, a trapped page-table
 * write — is a synchronous round trip through one `SharedArrayBuffer`: the guest posts a
 * request and blocks (spin, then `Atomics.wait`, the way a vCPU thread waits for a
 * user-space VMM); the host runs a handler and answers. Interrupts travel the other way
 * as bits in a shared pending bitmap plus an `Atomics.notify` that wakes a halted guest.
 *
 * Only `SharedArrayBuffer` and `Atomics` are used, so this module runs in browsers too
 * (the page must be cross-origin isolated for `SharedArrayBuffer`). Spawning a Node worker
 * and watching it is in `@pvkit/platform/node` (`runTrapWorker`).
 *
 * ## Layout (one `SharedArrayBuffer` of {@link TRAP_CHANNEL_BYTES} bytes)
 *
 * | bytes | view | written by | contents |
 * |---|---|---|---|
 * | 0–63 | `Int32Array` words 0–15 | creator | magic `"PVKT"`, layout version, size, interrupt lines |
 * | 64–127 | words 16–31 | guest | request sequence, op code, guest-waiting flag, guest state, heartbeat, exit code, panic message length |
 * | 128–191 | words 32–47 | host | response sequence, response status, host-sleeping flag, host-closed flag, fault message length |
 * | 192–255 | words 48–63 | host | stop flag, wake word, pending summary, pending bitmap (8 × 32 lines) |
 * | 256–383 | `Float64Array` slots 32–47 | guest | 16 argument slots |
 * | 384–415 | slots 48–51 | host | 4 result slots |
 * | 512–1535 | bytes | guest | panic message (UTF-8) |
 * | 1536–2559 | bytes | host | last handler-fault message (UTF-8) |
 *
 * Word and slot indices are in {@link TrapWord} and {@link TrapSlot}. Arguments and
 * results are `float64`, so every integer up to 2^53 (a guest-physical address, a 64-bit
 * value's low 53 bits), every negative errno and every `u32` register value passes
 * exactly. The words each side polls and the ones the other side writes on the hot path
 * sit on different 64-byte cache lines (request line, response line, argument and result
 * lines).
 *
 * ## Memory ordering
 *
 * `Atomics` operations are sequentially consistent and synchronize with each other; plain
 * typed-array accesses are not. So each direction follows one rule: *write the payload
 * with plain stores, then publish with `Atomics.store`; observe with `Atomics.load`, then
 * read the payload with plain loads.* An `Atomics.load` that sees the published value
 * happens-after every plain write that preceded the `Atomics.store` (ECMAScript memory
 * model, "synchronizes-with").
 *
 * - Request: the guest writes the op code and arguments (plain), then
 *   `Atomics.store(REQ_SEQ, seq)`. The host `Atomics.load`s `REQ_SEQ`, sees a new value,
 *   then reads op and arguments (plain).
 * - Response: the host writes the results and status (plain), then
 *   `Atomics.store(RESP_SEQ, seq)`. The guest returns only once `Atomics.load(RESP_SEQ)`
 *   equals its own `seq`, then reads status and results (plain). A response is therefore
 *   matched to its request by sequence number; a stale answer never satisfies a newer call.
 * - Sleep/wake without a lost wake-up (a Dekker handshake over sequentially consistent
 *   atomics): the sleeper first stores its "sleeping" flag, then re-checks the word and
 *   calls `Atomics.wait(word, expected)`, which itself compares atomically with the
 *   waker's notify. The waker first stores the word, then loads the flag and calls
 *   `Atomics.notify` only when it is set. At least one side sees the other's store, so
 *   either the sleeper does not sleep or the waker notifies; an idle peer costs no
 *   `notify` on the hot path.
 * - Interrupts: the host sets a line with `Atomics.or` on its bitmap word, then stores the
 *   pending summary (Xen's `evtchn_upcall_pending`), then wakes the guest if it is halted.
 *   The guest takes the summary with `Atomics.exchange`, then each word with
 *   `Atomics.exchange(…, 0)`. A line is never lost; at worst a summary is seen with no
 *   line left (a spurious wake-up).
 *
 * Sequence numbers are `int32` and wrap (`(seq + 1) | 0`); they are only compared for
 * equality, so the wrap at 2^31 and at 2^32 is harmless. One channel carries one vCPU:
 * one guest thread makes one call at a time.
 *
 * ## Spinning
 *
 * Before sleeping, each side polls its word up to `spin` times: on an idle machine with a
 * core per side the peer answers within the spin and no thread ever sleeps. A poll is an
 * `Atomics.load`, which measured about 12 ns in Node 20 on the bench machine, so the
 * default 1,000 polls spin about as long as a futex sleep and wake-up costs there (the
 * spin-then-block rule: spinning much longer than a block costs rarely pays). On a busy
 * machine spinning burns the time slice the peer needs, so by default the spin adapts,
 * in the spirit of KVM's halt polling: a spin that ends without an answer shortens the
 * next one by a quarter of `spin` (down to 1/16 of it), an answer caught while spinning
 * restores the full spin, and every {@link TRAP_SPIN_PROBE_EVERY}th wait spins fully to
 * notice that the machine got quiet.
 *
 * A full spin should outlast the other side's wake-up (a futex wake, or an event-loop
 * turn for a host in async mode). Otherwise, once one side has slept, each side gives up
 * just before the other answers, and every exit pays two wake-ups from then on: that is
 * why the async host spins as long as the blocking one (measured: ~1 µs per exit with
 * 1,000 polls, 12–22 µs with 200).
 *
 * @module
 */

import { yieldToEventLoop } from "./defer.js";

/** Byte length of a trap channel's `SharedArrayBuffer`. */
export const TRAP_CHANNEL_BYTES = 2560;

/** Interrupt lines in the pending bitmap (8 words of 32). */
export const TRAP_IRQ_LINES = 256;

/** Argument slots per request (`float64`). */
export const TRAP_ARG_SLOTS = 16;

/** Result slots per response (`float64`): the handler's return value and 3 extras. */
export const TRAP_RESULT_SLOTS = 4;

/** Bytes of each message area (guest panic message, host fault message). */
export const TRAP_MESSAGE_BYTES = 1024;

/** With adaptive spinning, every this many waits spin fully (see the module's "Spinning"). */
export const TRAP_SPIN_PROBE_EVERY = 64;

/** `"PVKT"` as a little-endian `int32`: the first word of every channel. */
const MAGIC = 0x544b_5650;
/** Layout version; {@link TrapChannel.attach} refuses another one. */
const VERSION = 1;

/**
 * Indices of the `Int32Array` control words (see the module's layout table). Exported so
 * tools and other-language guests (e.g. WebAssembly) can speak the same layout.
 */
export const TrapWord = {
  /** `"PVKT"`. */
  MAGIC: 0,
  /** Layout version. */
  VERSION: 1,
  /** Byte length of the channel. */
  BYTES: 2,
  /** Number of interrupt lines. */
  LINES: 3,
  /** Sequence number of the guest's latest request (guest stores, host waits on it). */
  REQ_SEQ: 16,
  /** Op code of the latest request (`u32`, stored as its `int32` bit pattern). */
  OP: 17,
  /** 1 while the guest sleeps in `Atomics.wait` for a response. */
  GUEST_WAITING: 18,
  /** The guest's {@link TrapGuestState}. */
  STATE: 19,
  /** Bumped by the guest on {@link TrapPort.beat} and around every halt. */
  HEARTBEAT: 20,
  /** The code the guest passed to {@link TrapPort.exit}. */
  EXIT_CODE: 21,
  /** Bytes of the guest's panic message. */
  GUEST_MESSAGE_LEN: 22,
  /** Sequence number of the latest response (host stores, guest waits on it). */
  RESP_SEQ: 32,
  /** {@link TrapStatus} of the latest response. */
  STATUS: 33,
  /** 1 while the host sleeps in `Atomics.wait`/`waitAsync` for a request. */
  HOST_SLEEPING: 34,
  /** 1 once the host stopped serving ({@link TrapServer.close}). */
  HOST_CLOSED: 35,
  /** Bytes of the host's last handler-fault message. */
  HOST_MESSAGE_LEN: 36,
  /** 1 once the host asked the guest to stop ({@link TrapServer.requestStop}). */
  STOP: 48,
  /** Bumped by the host to wake a halted guest (the guest waits on it). */
  WAKE: 49,
  /** Non-zero when some line may be pending. */
  PENDING_ANY: 50,
  /** First of the 8 pending-bitmap words (line `n` is bit `n & 31` of word `PENDING + (n >> 5)`). */
  PENDING: 56,
} as const;

/** Indices of the `Float64Array` slots (see the module's layout table). */
export const TrapSlot = {
  /** First argument slot; arguments are slots `ARGS … ARGS + 15`. */
  ARGS: 32,
  /** First result slot; results are slots `RESULTS … RESULTS + 3`. */
  RESULTS: 48,
} as const;

/** Byte offsets of the two message areas. */
const GUEST_MESSAGE_AT = 512;
const HOST_MESSAGE_AT = GUEST_MESSAGE_AT + TRAP_MESSAGE_BYTES;
const CONTROL_WORDS = 64;
const PENDING_WORDS = TRAP_IRQ_LINES >>> 5;

/** What the guest is doing, as the host and a watchdog see it. */
export const TrapGuestState = {
  /** No guest has attached a {@link TrapPort} yet. */
  NEW: 0,
  /** Executing (or blocked in a call: see {@link TrapChannelSnapshot.inCall}). */
  RUNNING: 1,
  /** Halted, waiting for an interrupt ({@link TrapPort.halt}). */
  HALTED: 2,
  /** Finished through {@link TrapPort.exit}. */
  EXITED: 3,
  /** Finished through {@link TrapPort.panic}. */
  PANICKED: 4,
} as const;

/** One of the {@link TrapGuestState} values. */
export type TrapGuestState = (typeof TrapGuestState)[keyof typeof TrapGuestState];

const STATE_NAMES = ["new", "running", "halted", "exited", "panicked"] as const;

/**
 * Names a guest state for messages.
 *
 * @param state - a {@link TrapGuestState} value (anything else is "unknown")
 * @returns `"new"`, `"running"`, `"halted"`, `"exited"`, `"panicked"` or `"unknown (n)"`
 */
export function trapGuestStateName(state: number): string {
  return STATE_NAMES[state] ?? `unknown (${state})`;
}

/** How a call ended ({@link TrapPort.status} after each call). */
export const TrapStatus = {
  /** The handler answered; the result is its return value. */
  OK: 0,
  /**
   * The host's handler threw (or returned something that is not a number). The host
   * caught it and answered with the server's `faultResult` (default `NaN`); the message
   * is in {@link TrapPort.faultMessage}.
   */
  HANDLER_FAULT: 1,
  /** The host stopped serving before it answered; the port is now broken. */
  CLOSED: 2,
  /** No answer within the port's `callTimeoutMs`; the port is now broken. */
  TIMEOUT: 3,
} as const;

/** One of the {@link TrapStatus} values. */
export type TrapStatus = (typeof TrapStatus)[keyof typeof TrapStatus];

/** Why {@link TrapPort.halt} returned. */
export type TrapHaltReason = "interrupt" | "timeout" | "stop";

/** A consistent-enough picture of a channel, for diagnostics and watchdogs. */
export interface TrapChannelSnapshot {
  /** The guest's state. */
  readonly state: TrapGuestState;
  /** {@link state} as a word. */
  readonly stateName: string;
  /** The guest's heartbeat counter. */
  readonly heartbeat: number;
  /** Sequence number of the latest request. */
  readonly requestSeq: number;
  /** Sequence number of the latest response. */
  readonly responseSeq: number;
  /** True while a request is unanswered (the guest is blocked in an exit). */
  readonly inCall: boolean;
  /** Op code of the latest request (the one in flight when {@link inCall}). */
  readonly op: number;
  /** The host asked the guest to stop. */
  readonly stopRequested: boolean;
  /** The host stopped serving. */
  readonly hostClosed: boolean;
  /** The guest's exit code (meaningful once exited). */
  readonly exitCode: number;
  /** The guest's panic message, or `null`. */
  readonly panicMessage: string | null;
}

/** Options of {@link TrapChannel.create}. */
export interface TrapChannelOptions {
  /**
   * First sequence number minus one (default 0). Only useful to test the wrap-around:
   * e.g. `0x7fff_fff0` crosses 2^31, `-16` crosses 2^32.
   */
  readonly sequenceStart?: number;
}

/** Options of a guest's {@link TrapPort}. */
export interface TrapPortOptions {
  /** Most polls of the response word before sleeping in `Atomics.wait` (default 1000; 0 = sleep at once). */
  readonly spin?: number;
  /** Adapt the spin to how often it catches the answer (default true; see the module's "Spinning"). */
  readonly adaptiveSpin?: boolean;
  /** Longest single `Atomics.wait` before re-checking that the host still serves, ms (default 100). */
  readonly waitSliceMs?: number;
  /** Give up on an answer after this many ms: {@link TrapStatus.TIMEOUT} (default `Infinity`). */
  readonly callTimeoutMs?: number;
}

/**
 * Handles one exit on the host, synchronously.
 *
 * @param op - the request's op code (`u32`)
 * @param args - the 16 argument slots (a view into the channel; read them before returning)
 * @param results - the 4 result slots; slot 0 is overwritten by the return value, slots
 *   1–3 reach the guest as they are (write them for ops that return more than one value)
 * @returns the result (`undefined` means 0)
 */
export type TrapHandler = (
  op: number,
  args: Float64Array,
  results: Float64Array,
) => number | undefined;

/** How {@link TrapServer.serve} waits for the next request. */
export type TrapServeMode = "blocking" | "async";

/** Options of a host's {@link TrapServer}. */
export interface TrapServerOptions {
  /** Most polls of the request word before sleeping (default 1000; 0 = sleep at once). */
  readonly spin?: number;
  /** Adapt the spin to how often it catches a request (default true; see the module's "Spinning"). */
  readonly adaptiveSpin?: boolean;
  /** Yield to the event loop after this many requests served back to back (default 1024). */
  readonly yieldEvery?: number;
  /**
   * Yield to the event loop at least every this many ms (default 2). In blocking mode it
   * also bounds each `Atomics.wait`, so asynchronous back-ends in the host thread (and a
   * watchdog's timer) run at least this often.
   */
  readonly yieldMs?: number;
  /** Async mode: longest single `Atomics.waitAsync` before re-checking the guest's state, ms (default 100). */
  readonly idleSliceMs?: number;
  /** The result a guest gets when the handler throws (default `NaN`). */
  readonly faultResult?: number;
  /** Told of every handler exception (after the guest has been answered). */
  readonly onFault?: (error: unknown, op: number) => void;
  /** How to yield to the event loop (default: `setImmediate`, else a `MessageChannel` post). */
  readonly yieldToEventLoop?: () => Promise<void>;
}

/** Options of {@link TrapServer.serve}. */
export interface TrapServeOptions {
  /**
   * `"blocking"`: spin, then `Atomics.wait` in slices of at most `yieldMs` — for a host
   * thread dedicated to the guest. `"async"` (default): spin (at most ~12 µs), then
   * `Atomics.waitAsync`, so the thread's event loop keeps running device back-ends while
   * the guest computes — for a main thread.
   */
  readonly mode?: TrapServeMode;
}

/** Why {@link TrapServer.serve} ended, and what it did. */
export interface TrapServeResult {
  /** `"closed"` by {@link TrapServer.close}, or the guest `"exited"` or `"panicked"`. */
  readonly reason: "closed" | "exited" | "panicked";
  /** Requests answered over the server's life. */
  readonly served: number;
  /** Handler exceptions caught over the server's life. */
  readonly faults: number;
}

/** `Atomics.waitAsync` (ES2024), typed locally: the compiler's ES2022 library lacks it. */
type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) => { async: false; value: "not-equal" | "timed-out" } | { async: true; value: Promise<string> };

const waitAsync: WaitAsync | undefined = (Atomics as unknown as { waitAsync?: WaitAsync })
  .waitAsync;

/** True when this runtime has `Atomics.waitAsync` (Node ≥ 16, Chromium, Safari ≥ 16.4). */
export const HAS_WAIT_ASYNC: boolean = typeof waitAsync === "function";

const now: () => number = () => performance.now();

function errorText(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}

/** Writes `text` (UTF-8, truncated to the area) and publishes its length. */
function writeMessage(
  bytes: Uint8Array,
  at: number,
  ctrl: Int32Array,
  lengthWord: number,
  text: string,
): void {
  const encoded = new TextEncoder().encode(text);
  const n = Math.min(encoded.length, TRAP_MESSAGE_BYTES);
  bytes.set(encoded.subarray(0, n), at);
  Atomics.store(ctrl, lengthWord, n);
}

/** Reads a message area (copying out of shared memory: `TextDecoder` refuses shared views). */
function readMessage(bytes: Uint8Array, at: number, ctrl: Int32Array, lengthWord: number): string {
  const n = Math.min(Math.max(Atomics.load(ctrl, lengthWord), 0), TRAP_MESSAGE_BYTES);
  return new TextDecoder().decode(bytes.slice(at, at + n));
}

function checkLine(line: number): number {
  if (!(Number.isInteger(line) && line >= 0 && line < TRAP_IRQ_LINES)) {
    throw new RangeError(`interrupt line ${line} is not an integer in 0..${TRAP_IRQ_LINES - 1}`);
  }
  return line;
}

/**
 * Lists the lines set in a pending bitmap (as returned by {@link TrapPort.takePending}).
 * Allocates: for diagnostics and tests; a kernel walks the words itself.
 *
 * @param bits - 32 lines per word, line `n` is bit `n & 31` of word `n >> 5`
 * @returns the line numbers, ascending
 */
export function pendingLines(bits: ArrayLike<number>): number[] {
  const lines: number[] = [];
  for (let w = 0; w < bits.length; w++) {
    let word = bits[w]! >>> 0;
    while (word !== 0) {
      const bit = 31 - Math.clz32(word & -word);
      lines.push(w * 32 + bit);
      word = (word & ~(1 << bit)) >>> 0;
    }
  }
  return lines;
}

/**
 * One trap channel: typed views over its `SharedArrayBuffer`. Create it on the host, send
 * {@link TrapChannel.buffer} to the guest's worker (`workerData` or `postMessage`), attach it there,
 * then take the guest's {@link port} on one side and the host's {@link server} on the other.
 *
 * @example
 * ```ts
 * // host
 * const channel = TrapChannel.create();
 * const worker = new Worker(url, { workerData: { channel: channel.buffer } });
 * await channel.server().serve((op, args) => (op === 1 ? bus.read("pio", args[0], 1) : 0));
 * // guest (in the worker)
 * const port = TrapChannel.attach(workerData.channel).port();
 * const value = port.call(1, 0x3f8);
 * ```
 */
export class TrapChannel {
  /** The shared storage (send this to the other thread). */
  readonly buffer: SharedArrayBuffer;
  /** Control words (see {@link TrapWord}); access them only through `Atomics` unless documented. */
  readonly ctrl: Int32Array;
  /** `float64` slots (see {@link TrapSlot}). */
  readonly f64: Float64Array;
  /** The whole channel as bytes (message areas). */
  readonly bytes: Uint8Array;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.ctrl = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.f64 = new Float64Array(buffer, 0, TrapSlot.RESULTS + TRAP_RESULT_SLOTS);
    this.bytes = new Uint8Array(buffer, 0, TRAP_CHANNEL_BYTES);
  }

  /**
   * A fresh channel in a new `SharedArrayBuffer`.
   *
   * @param options - see {@link TrapChannelOptions}
   * @returns the channel (no guest attached yet)
   * @throws Error when `SharedArrayBuffer` is unavailable (a browser page that is not cross-origin isolated)
   */
  static create(options: TrapChannelOptions = {}): TrapChannel {
    if (typeof SharedArrayBuffer === "undefined") {
      throw new Error(
        "SharedArrayBuffer is unavailable: the threaded runtime needs a cross-origin isolated page",
      );
    }
    const channel = new TrapChannel(new SharedArrayBuffer(TRAP_CHANNEL_BYTES));
    const c = channel.ctrl;
    c[TrapWord.VERSION] = VERSION;
    c[TrapWord.BYTES] = TRAP_CHANNEL_BYTES;
    c[TrapWord.LINES] = TRAP_IRQ_LINES;
    const start = (options.sequenceStart ?? 0) | 0;
    c[TrapWord.REQ_SEQ] = start;
    c[TrapWord.RESP_SEQ] = start;
    Atomics.store(c, TrapWord.MAGIC, MAGIC); // publishes the header words above
    return channel;
  }

  /**
   * Views a channel another thread created.
   *
   * @param buffer - the channel's `SharedArrayBuffer` ({@link TrapChannel.buffer} of the creator)
   * @returns the channel
   * @throws TypeError when `buffer` is not a `SharedArrayBuffer` of a trap channel of this layout version
   */
  static attach(buffer: SharedArrayBuffer): TrapChannel {
    if (!(typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer)) {
      throw new TypeError("TrapChannel.attach needs the SharedArrayBuffer of TrapChannel.create()");
    }
    if (buffer.byteLength < TRAP_CHANNEL_BYTES) {
      throw new TypeError(
        `a trap channel needs ${TRAP_CHANNEL_BYTES} bytes, this buffer has ${buffer.byteLength}`,
      );
    }
    const channel = new TrapChannel(buffer);
    const c = channel.ctrl;
    if (Atomics.load(c, TrapWord.MAGIC) !== MAGIC) {
      throw new TypeError("this SharedArrayBuffer is not a trap channel (no PVKT magic)");
    }
    if (c[TrapWord.VERSION] !== VERSION) {
      throw new TypeError(
        `trap channel layout version ${c[TrapWord.VERSION]} is not the supported ${VERSION}`,
      );
    }
    return channel;
  }

  /** The guest's current state. */
  get guestState(): TrapGuestState {
    return Atomics.load(this.ctrl, TrapWord.STATE) as TrapGuestState;
  }

  /**
   * Reads the diagnostic words (each atomically; the set is not one atomic snapshot).
   *
   * @returns the snapshot
   */
  snapshot(): TrapChannelSnapshot {
    const c = this.ctrl;
    const state = Atomics.load(c, TrapWord.STATE) as TrapGuestState;
    const requestSeq = Atomics.load(c, TrapWord.REQ_SEQ);
    const responseSeq = Atomics.load(c, TrapWord.RESP_SEQ);
    return {
      state,
      stateName: trapGuestStateName(state),
      heartbeat: Atomics.load(c, TrapWord.HEARTBEAT),
      requestSeq,
      responseSeq,
      inCall: requestSeq !== responseSeq,
      op: Atomics.load(c, TrapWord.OP) >>> 0,
      stopRequested: Atomics.load(c, TrapWord.STOP) !== 0,
      hostClosed: Atomics.load(c, TrapWord.HOST_CLOSED) !== 0,
      exitCode: Atomics.load(c, TrapWord.EXIT_CODE),
      panicMessage:
        state === TrapGuestState.PANICKED
          ? readMessage(this.bytes, GUEST_MESSAGE_AT, c, TrapWord.GUEST_MESSAGE_LEN)
          : null,
    };
  }

  /**
   * Describes the guest's state in one line, e.g.
   * `"guest running, heartbeat 12, in exit op 0x3 (seq 45)"`.
   *
   * @returns the description
   */
  describe(): string {
    const s = this.snapshot();
    const call = s.inCall
      ? `in exit op 0x${s.op.toString(16)} (seq ${s.requestSeq})`
      : `not in an exit (last op 0x${s.op.toString(16)}, seq ${s.requestSeq})`;
    return `guest ${s.stateName}, heartbeat ${s.heartbeat}, ${call}`;
  }

  /**
   * Takes the guest side. Only one port per channel: the guest state moves from
   * {@link TrapGuestState.NEW} to {@link TrapGuestState.RUNNING}.
   *
   * @param options - see {@link TrapPortOptions}
   * @returns the port (use it from the guest's thread only, never the host's)
   * @throws Error when a guest already attached
   */
  port(options: TrapPortOptions = {}): TrapPort {
    const prev = Atomics.compareExchange(
      this.ctrl,
      TrapWord.STATE,
      TrapGuestState.NEW,
      TrapGuestState.RUNNING,
    );
    if (prev !== TrapGuestState.NEW) {
      throw new Error(
        `this trap channel already has a guest (state ${trapGuestStateName(prev)}); use one channel per vCPU`,
      );
    }
    return new TrapPort(this, options);
  }

  /**
   * Takes the host side.
   *
   * @param options - see {@link TrapServerOptions}
   * @returns the server
   */
  server(options: TrapServerOptions = {}): TrapServer {
    return new TrapServer(this, options);
  }
}

/**
 * The guest's end of a {@link TrapChannel}: makes exits, takes interrupts, halts.
 * Nothing on the call path allocates: arguments and results live in the channel's
 * `Float64Array`, the pending bitmap is copied into one preallocated `Uint32Array`.
 * It blocks with `Atomics.wait`, so it runs in a worker (browsers forbid waiting on the
 * main thread).
 */
export class TrapPort {
  /** The channel. */
  readonly channel: TrapChannel;
  /**
   * The 16 argument slots. Fill them and call {@link invoke} to pass more than six
   * arguments, or to keep doubles that are not small integers from being boxed as call
   * arguments (V8 passes arguments tagged).
   */
  readonly args: Float64Array;
  /** The 4 result slots of the latest response (slot 0 is what {@link call} returned). */
  readonly results: Float64Array;
  /** {@link TrapStatus} of the latest call. */
  status: TrapStatus = TrapStatus.OK;
  /** Calls made. */
  calls = 0;
  /** Times a call slept in `Atomics.wait` because the answer did not come while spinning. */
  sleeps = 0;

  private readonly ctrl: Int32Array;
  private readonly f64: Float64Array;
  private readonly pendingBits = new Uint32Array(PENDING_WORDS);
  private readonly spinMax: number;
  private readonly spinMin: number;
  private spinNow: number;
  private probeIn = TRAP_SPIN_PROBE_EVERY;
  private readonly waitSliceMs: number;
  private readonly callTimeoutMs: number;
  private seq: number;
  private broken: TrapStatus = TrapStatus.OK;

  /** @internal Use {@link TrapChannel.port}. */
  constructor(channel: TrapChannel, options: TrapPortOptions) {
    this.channel = channel;
    this.ctrl = channel.ctrl;
    this.f64 = channel.f64;
    this.args = channel.f64.subarray(TrapSlot.ARGS, TrapSlot.ARGS + TRAP_ARG_SLOTS);
    this.results = channel.f64.subarray(TrapSlot.RESULTS, TrapSlot.RESULTS + TRAP_RESULT_SLOTS);
    this.spinMax = Math.max(0, Math.floor(options.spin ?? 1000));
    this.spinMin = options.adaptiveSpin === false ? this.spinMax : this.spinMax >>> 4;
    this.spinNow = this.spinMax;
    this.waitSliceMs = Math.max(1, options.waitSliceMs ?? 100);
    this.callTimeoutMs = options.callTimeoutMs ?? Number.POSITIVE_INFINITY;
    this.seq = Atomics.load(this.ctrl, TrapWord.REQ_SEQ);
  }

  /**
   * One exit: posts `op` with up to six arguments and blocks until the host answers.
   *
   * @param op - op code (`u32`; its meaning is the runtime's business)
   * @param a0 - argument slot 0 (any `float64`: integers up to 2^53 pass exactly)
   * @param a1 - argument slot 1
   * @param a2 - argument slot 2
   * @param a3 - argument slot 3
   * @param a4 - argument slot 4
   * @param a5 - argument slot 5
   * @returns the handler's result; on any other {@link status} than `OK`, the fault result
   *   (`NaN` unless the server chose another)
   */
  call(op: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0): number {
    const f = this.f64;
    f[TrapSlot.ARGS] = a0;
    f[TrapSlot.ARGS + 1] = a1;
    f[TrapSlot.ARGS + 2] = a2;
    f[TrapSlot.ARGS + 3] = a3;
    f[TrapSlot.ARGS + 4] = a4;
    f[TrapSlot.ARGS + 5] = a5;
    return this.invoke(op);
  }

  /**
   * One exit with the arguments already in {@link args} (all 16 slots travel).
   *
   * @param op - op code (`u32`)
   * @returns the handler's result (see {@link call})
   */
  invoke(op: number): number {
    if (this.broken !== TrapStatus.OK) {
      this.status = this.broken;
      return Number.NaN;
    }
    const c = this.ctrl;
    const seq = (this.seq + 1) | 0;
    this.seq = seq;
    this.calls++;
    c[TrapWord.OP] = op | 0; // payload: plain store, published by the store below
    Atomics.store(c, TrapWord.REQ_SEQ, seq);
    if (Atomics.load(c, TrapWord.HOST_SLEEPING) !== 0) Atomics.notify(c, TrapWord.REQ_SEQ, 1);
    let limit = this.spinNow;
    if (limit < this.spinMax && --this.probeIn <= 0) {
      this.probeIn = TRAP_SPIN_PROBE_EVERY;
      limit = this.spinMax;
    }
    for (let i = limit; i > 0; i--) {
      if (Atomics.load(c, TrapWord.RESP_SEQ) === seq) {
        this.spinNow = this.spinMax;
        return this.answer();
      }
    }
    this.spinNow = Math.max(this.spinMin, this.spinNow - (this.spinMax >>> 2));
    return this.sleep(seq);
  }

  /** The response matched: reads it (plain loads after the acquiring `Atomics.load`). */
  private answer(): number {
    this.status = this.ctrl[TrapWord.STATUS]! as TrapStatus;
    return this.f64[TrapSlot.RESULTS]!;
  }

  /** Slow path of a call: sleep on the response word until it carries `seq`. */
  private sleep(seq: number): number {
    const c = this.ctrl;
    this.sleeps++;
    const deadline =
      this.callTimeoutMs === Number.POSITIVE_INFINITY ? 0 : now() + this.callTimeoutMs;
    Atomics.store(c, TrapWord.GUEST_WAITING, 1);
    let status: TrapStatus = TrapStatus.OK;
    for (;;) {
      const seen = Atomics.load(c, TrapWord.RESP_SEQ);
      if (seen === seq) break;
      if (Atomics.load(c, TrapWord.HOST_CLOSED) !== 0) {
        status = TrapStatus.CLOSED;
        break;
      }
      let slice = this.waitSliceMs;
      if (deadline !== 0) {
        const left = deadline - now();
        if (left <= 0) {
          status = TrapStatus.TIMEOUT;
          break;
        }
        slice = Math.min(slice, left);
      }
      Atomics.wait(c, TrapWord.RESP_SEQ, seen, slice);
    }
    Atomics.store(c, TrapWord.GUEST_WAITING, 0);
    if (status === TrapStatus.OK) return this.answer();
    // An unanswered request may still be read by the host: never reuse the slot.
    this.broken = status;
    this.status = status;
    return Number.NaN;
  }

  /**
   * The host's message for the latest {@link TrapStatus.HANDLER_FAULT} (allocates; read it
   * on the error path only).
   *
   * @returns the message, or `""` when there was no fault
   */
  faultMessage(): string {
    return readMessage(this.channel.bytes, HOST_MESSAGE_AT, this.ctrl, TrapWord.HOST_MESSAGE_LEN);
  }

  /** True when some interrupt line may be pending (one atomic load). */
  get interruptPending(): boolean {
    return Atomics.load(this.ctrl, TrapWord.PENDING_ANY) !== 0;
  }

  /**
   * Takes (and clears) every pending line. The returned array is the port's own and is
   * overwritten by the next call.
   *
   * @returns 8 words; line `n` is bit `n & 31` of word `n >> 5` (all zero when none)
   */
  takePending(): Uint32Array {
    const c = this.ctrl;
    const out = this.pendingBits;
    if (Atomics.exchange(c, TrapWord.PENDING_ANY, 0) === 0) {
      out.fill(0);
      return out;
    }
    for (let w = 0; w < PENDING_WORDS; w++) out[w] = Atomics.exchange(c, TrapWord.PENDING + w, 0);
    return out;
  }

  /**
   * Halts the vCPU (x86 `HLT`, Xen `SCHEDOP_block`) until an interrupt is pending, the
   * timeout passes, or the host requests a stop (or closes).
   *
   * @param timeoutMs - longest sleep, ms (default `Infinity`)
   * @returns why it returned; `"interrupt"` may be spurious (a line lowered before it was taken)
   */
  halt(timeoutMs = Number.POSITIVE_INFINITY): TrapHaltReason {
    const c = this.ctrl;
    Atomics.add(c, TrapWord.HEARTBEAT, 1);
    Atomics.store(c, TrapWord.STATE, TrapGuestState.HALTED);
    const deadline = now() + timeoutMs;
    let reason: TrapHaltReason;
    for (;;) {
      const wake = Atomics.load(c, TrapWord.WAKE);
      if (Atomics.load(c, TrapWord.PENDING_ANY) !== 0) {
        reason = "interrupt";
        break;
      }
      if (Atomics.load(c, TrapWord.STOP) !== 0 || Atomics.load(c, TrapWord.HOST_CLOSED) !== 0) {
        reason = "stop";
        break;
      }
      const left = deadline - now();
      if (!(left > 0)) {
        reason = "timeout";
        break;
      }
      Atomics.wait(c, TrapWord.WAKE, wake, left);
    }
    Atomics.store(c, TrapWord.STATE, TrapGuestState.RUNNING);
    Atomics.add(c, TrapWord.HEARTBEAT, 1);
    return reason;
  }

  /** True once the host asked the guest to stop (poll it in long loops). */
  get stopRequested(): boolean {
    return Atomics.load(this.ctrl, TrapWord.STOP) !== 0;
  }

  /** Tells a watchdog the guest is alive during a long stretch without exits. */
  beat(): void {
    Atomics.add(this.ctrl, TrapWord.HEARTBEAT, 1);
  }

  /**
   * Ends the guest normally. The host's {@link TrapServer.serve} returns `"exited"`.
   *
   * @param code - exit code for the host (default 0)
   */
  exit(code = 0): void {
    const c = this.ctrl;
    Atomics.store(c, TrapWord.EXIT_CODE, code | 0);
    Atomics.store(c, TrapWord.STATE, TrapGuestState.EXITED);
    Atomics.notify(c, TrapWord.REQ_SEQ); // wakes a sleeping host to see it
  }

  /**
   * Ends the guest with a panic. The message (truncated to 1 KiB of UTF-8) reaches the
   * host in the channel; {@link TrapServer.serve} returns `"panicked"`.
   *
   * @param message - what went wrong
   */
  panic(message: string): void {
    const c = this.ctrl;
    writeMessage(this.channel.bytes, GUEST_MESSAGE_AT, c, TrapWord.GUEST_MESSAGE_LEN, message);
    Atomics.store(c, TrapWord.STATE, TrapGuestState.PANICKED);
    Atomics.notify(c, TrapWord.REQ_SEQ);
  }

  /**
   * Runs a guest's main function and reports how it ended: its return value is the exit
   * code; an exception becomes a panic with the error's stack (it is not rethrown).
   *
   * @param main - the guest
   * @returns the exit code, or -1 after a panic
   */
  run(main: (port: TrapPort) => number | undefined): number {
    try {
      const code = main(this) ?? 0;
      this.exit(code);
      return code;
    } catch (error) {
      this.panic(errorText(error));
      return -1;
    }
  }
}

/**
 * The host's end of a {@link TrapChannel}: answers exits, raises interrupts, asks the
 * guest to stop. Handler exceptions never reach the guest as a hang: the host answers
 * with {@link TrapStatus.HANDLER_FAULT}.
 */
export class TrapServer {
  /** The channel. */
  readonly channel: TrapChannel;
  /** Requests answered. */
  served = 0;
  /** Handler exceptions caught. */
  faults = 0;
  /** Times the serve loop slept on the request word. */
  sleeps = 0;
  /** Times the serve loop yielded to the event loop. */
  yields = 0;

  private readonly ctrl: Int32Array;
  private readonly f64: Float64Array;
  private readonly args: Float64Array;
  private readonly results: Float64Array;
  private readonly spin: number | undefined;
  private readonly adaptiveSpin: boolean;
  private readonly yieldEvery: number;
  private readonly yieldMs: number;
  private readonly idleSliceMs: number;
  private readonly faultResult: number;
  private readonly onFault: ((error: unknown, op: number) => void) | undefined;
  private readonly yieldFn: () => Promise<void>;
  private lastSeq: number;
  private serving = false;
  private closedFlag = false;

  /** @internal Use {@link TrapChannel.server}. */
  constructor(channel: TrapChannel, options: TrapServerOptions) {
    this.channel = channel;
    this.ctrl = channel.ctrl;
    this.f64 = channel.f64;
    this.args = channel.f64.subarray(TrapSlot.ARGS, TrapSlot.ARGS + TRAP_ARG_SLOTS);
    this.results = channel.f64.subarray(TrapSlot.RESULTS, TrapSlot.RESULTS + TRAP_RESULT_SLOTS);
    this.spin = options.spin === undefined ? undefined : Math.max(0, Math.floor(options.spin));
    this.adaptiveSpin = options.adaptiveSpin !== false;
    this.yieldEvery = Math.max(1, options.yieldEvery ?? 1024);
    this.yieldMs = Math.max(0.1, options.yieldMs ?? 2);
    this.idleSliceMs = Math.max(1, options.idleSliceMs ?? 100);
    this.faultResult = options.faultResult ?? Number.NaN;
    this.onFault = options.onFault;
    this.yieldFn = options.yieldToEventLoop ?? yieldToEventLoop;
    this.lastSeq = Atomics.load(this.ctrl, TrapWord.RESP_SEQ);
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Answers the pending request, if there is one, without waiting.
   *
   * @param handler - runs the exit
   * @returns whether a request was answered
   */
  poll(handler: TrapHandler): boolean {
    const c = this.ctrl;
    const seq = Atomics.load(c, TrapWord.REQ_SEQ);
    if (seq === this.lastSeq) return false;
    const op = c[TrapWord.OP]! >>> 0; // payload: plain load after the acquiring load above
    let result: number;
    let status: TrapStatus = TrapStatus.OK;
    let failure: unknown = null;
    try {
      const r = handler(op, this.args, this.results);
      if (typeof r === "number") result = r;
      else if (r === undefined) result = 0;
      else throw new TypeError(`handler returned ${typeof r}, not a number`);
    } catch (error) {
      failure = error;
      status = TrapStatus.HANDLER_FAULT;
      result = this.faultResult;
      this.faults++;
      writeMessage(
        this.channel.bytes,
        HOST_MESSAGE_AT,
        c,
        TrapWord.HOST_MESSAGE_LEN,
        `exit op 0x${op.toString(16)}: ${errorText(error)}`,
      );
    }
    this.f64[TrapSlot.RESULTS] = result;
    c[TrapWord.STATUS] = status;
    this.lastSeq = seq;
    this.served++;
    Atomics.store(c, TrapWord.RESP_SEQ, seq); // publishes result and status
    if (Atomics.load(c, TrapWord.GUEST_WAITING) !== 0) Atomics.notify(c, TrapWord.RESP_SEQ, 1);
    if (status !== TrapStatus.OK) this.onFault?.(failure, op);
    return true;
  }

  /**
   * Serves exits until {@link close} is called or the guest exits or panics. Handler
   * exceptions are answered with {@link TrapStatus.HANDLER_FAULT} and counted.
   *
   * @param handler - runs each exit, synchronously
   * @param options - the serving mode (see {@link TrapServeOptions})
   * @returns why serving ended
   * @throws Error when this server is already serving
   */
  async serve(handler: TrapHandler, options: TrapServeOptions = {}): Promise<TrapServeResult> {
    if (this.serving) throw new Error("this trap server is already serving");
    this.serving = true;
    const mode = options.mode ?? "async";
    // An outstanding Atomics.waitAsync does not keep Node's event loop alive: a timer does.
    const keepAlive = mode === "async" ? setInterval(() => {}, 1 << 30) : null;
    try {
      return await this.loop(handler, mode);
    } finally {
      if (keepAlive !== null) clearInterval(keepAlive);
      this.serving = false;
    }
  }

  private async loop(handler: TrapHandler, mode: TrapServeMode): Promise<TrapServeResult> {
    const c = this.ctrl;
    const blocking = mode === "blocking";
    const spinMax = this.spin ?? 1000;
    const spinMin = this.adaptiveSpin ? spinMax >>> 4 : spinMax;
    let spinNow = spinMax;
    let probeIn = TRAP_SPIN_PROBE_EVERY;
    const asyncWait = blocking ? undefined : waitAsync;
    let lastYield = now();
    let burst = 0;
    let idlePolls = 0;
    for (;;) {
      if (this.closedFlag) return this.result("closed");
      if (this.poll(handler)) {
        burst++;
        if (burst >= this.yieldEvery || ((burst & 63) === 0 && now() - lastYield >= this.yieldMs)) {
          await this.yieldFn();
          this.yields++;
          lastYield = now();
          burst = 0;
        }
        continue;
      }
      let limit = spinNow;
      if (limit < spinMax && --probeIn <= 0) {
        probeIn = TRAP_SPIN_PROBE_EVERY;
        limit = spinMax;
      }
      let arrived = false;
      for (let i = limit; i > 0; i--) {
        if (Atomics.load(c, TrapWord.REQ_SEQ) !== this.lastSeq) {
          arrived = true;
          break;
        }
      }
      if (arrived) {
        spinNow = spinMax;
        continue;
      }
      spinNow = Math.max(spinMin, spinNow - (spinMax >>> 2));
      const state = Atomics.load(c, TrapWord.STATE);
      if (state === TrapGuestState.EXITED) return this.result("exited");
      if (state === TrapGuestState.PANICKED) return this.result("panicked");
      if (blocking) {
        const left = this.yieldMs - (now() - lastYield);
        if (left > 0) {
          Atomics.store(c, TrapWord.HOST_SLEEPING, 1);
          Atomics.wait(c, TrapWord.REQ_SEQ, this.lastSeq, left);
          Atomics.store(c, TrapWord.HOST_SLEEPING, 0);
          this.sleeps++;
        } else {
          await this.yieldFn();
          this.yields++;
          lastYield = now();
          burst = 0;
        }
      } else if (asyncWait !== undefined) {
        Atomics.store(c, TrapWord.HOST_SLEEPING, 1);
        const r = asyncWait(c, TrapWord.REQ_SEQ, this.lastSeq, this.idleSliceMs);
        if (r.async) {
          this.sleeps++;
          await r.value;
          lastYield = now();
          burst = 0;
        }
        Atomics.store(c, TrapWord.HOST_SLEEPING, 0);
      } else {
        // No Atomics.waitAsync (older Firefox): poll through the event loop, backing off
        // to 1 ms timers once the guest has been quiet for a while.
        if (idlePolls++ < 256) await this.yieldFn();
        else await new Promise<void>((resolve) => setTimeout(resolve, 1));
        this.yields++;
        lastYield = now();
        burst = 0;
        continue;
      }
      idlePolls = 0;
    }
  }

  private result(reason: TrapServeResult["reason"]): TrapServeResult {
    return { reason, served: this.served, faults: this.faults };
  }

  /**
   * Makes a line pending and wakes the guest if it is halted. Safe from any host
   * callback (a back-end's completion, a timer).
   *
   * @param line - 0 … {@link TRAP_IRQ_LINES} − 1
   * @throws RangeError for a line outside the bitmap (a host programming mistake)
   */
  raise(line: number): void {
    checkLine(line);
    const c = this.ctrl;
    Atomics.or(c, TrapWord.PENDING + (line >>> 5), 1 << (line & 31));
    Atomics.store(c, TrapWord.PENDING_ANY, 1);
    if (Atomics.load(c, TrapWord.STATE) === TrapGuestState.HALTED) {
      Atomics.add(c, TrapWord.WAKE, 1);
      Atomics.notify(c, TrapWord.WAKE);
    }
  }

  /**
   * Withdraws a line the guest has not taken yet (a level-triggered source went low).
   *
   * @param line - 0 … {@link TRAP_IRQ_LINES} − 1
   * @throws RangeError for a line outside the bitmap
   */
  lower(line: number): void {
    checkLine(line);
    Atomics.and(this.ctrl, TrapWord.PENDING + (line >>> 5), ~(1 << (line & 31)));
  }

  /**
   * Asks the guest to stop: sets the stop flag it polls ({@link TrapPort.stopRequested})
   * and wakes it from {@link TrapPort.halt}, which returns `"stop"`. Serving goes on
   * until the guest exits or {@link close} is called.
   */
  requestStop(): void {
    const c = this.ctrl;
    Atomics.store(c, TrapWord.STOP, 1);
    Atomics.add(c, TrapWord.WAKE, 1);
    Atomics.notify(c, TrapWord.WAKE);
  }

  /**
   * Stops serving for good: {@link serve} returns `"closed"`, a guest blocked in an exit
   * gets {@link TrapStatus.CLOSED}, a halted guest returns `"stop"`. Call it when the
   * guest's worker has gone, so nothing waits for it.
   */
  close(): void {
    const c = this.ctrl;
    this.closedFlag = true;
    Atomics.store(c, TrapWord.HOST_CLOSED, 1);
    Atomics.notify(c, TrapWord.REQ_SEQ); // our own waitAsync
    Atomics.notify(c, TrapWord.RESP_SEQ); // a guest waiting for an answer
    Atomics.add(c, TrapWord.WAKE, 1);
    Atomics.notify(c, TrapWord.WAKE); // a halted guest
  }
}

/** Options of a {@link TrapWatchdog}. */
export interface TrapWatchdogOptions {
  /**
   * Trip when the guest runs (not halted, not in an exit) for this many ms without an
   * exit or a {@link TrapPort.beat} (default 2000; `Infinity` disables).
   */
  readonly stallMs?: number;
  /** Trip when this many ms pass since {@link TrapWatchdog.start}, whatever the guest does (default `Infinity`). */
  readonly budgetMs?: number;
  /** How often to look, ms (default a quarter of `stallMs`, between 5 and 250). */
  readonly intervalMs?: number;
  /** Called once, when it trips (stop the worker here). */
  readonly onTrip: (trip: TrapWatchdogTrip) => void;
}

/** What a {@link TrapWatchdog} saw when it tripped. */
export interface TrapWatchdogTrip {
  /** `"stall"`: no progress for `stallMs`; `"budget"`: the wall-clock budget ran out. */
  readonly reason: "stall" | "budget";
  /** One line naming the guest's state, last exit and heartbeat. */
  readonly message: string;
  /** The channel as it was. */
  readonly snapshot: TrapChannelSnapshot;
  /** ms since the watchdog started. */
  readonly elapsedMs: number;
  /** ms since the guest last made progress. */
  readonly quietMs: number;
}

/**
 * Watches a guest's progress from the host with a timer: an exit (the request sequence
 * moving), a heartbeat, a halt. A guest that spins without any of them for `stallMs`, or
 * outlives `budgetMs`, trips it once; the owner then terminates the worker. Halted guests
 * and guests blocked in an exit are waiting on the host, not stalled. In a host thread
 * that serves in blocking mode, the timer runs at the serve loop's yields.
 */
export class TrapWatchdog {
  /** The trip, once it happened. */
  tripped: TrapWatchdogTrip | null = null;

  private readonly channel: TrapChannel;
  private readonly stallMs: number;
  private readonly budgetMs: number;
  private readonly intervalMs: number;
  private readonly onTrip: (trip: TrapWatchdogTrip) => void;
  private timer: ReturnType<typeof setInterval> | null = null;
  private startedAt = 0;
  private progressAt = 0;
  private lastSeq = 0;
  private lastBeat = 0;

  /**
   * @param channel - the channel to watch
   * @param options - see {@link TrapWatchdogOptions}
   */
  constructor(channel: TrapChannel, options: TrapWatchdogOptions) {
    this.channel = channel;
    this.stallMs = options.stallMs ?? 2000;
    this.budgetMs = options.budgetMs ?? Number.POSITIVE_INFINITY;
    const finite = Math.min(this.stallMs, this.budgetMs);
    this.intervalMs =
      options.intervalMs ??
      (Number.isFinite(finite) ? Math.min(250, Math.max(5, finite / 4)) : 250);
    this.onTrip = options.onTrip;
  }

  /** Starts watching (the budget counts from here). */
  start(): void {
    if (this.timer !== null) return;
    const c = this.channel.ctrl;
    this.startedAt = now();
    this.progressAt = this.startedAt;
    this.lastSeq = Atomics.load(c, TrapWord.REQ_SEQ);
    this.lastBeat = Atomics.load(c, TrapWord.HEARTBEAT);
    this.timer = setInterval(() => this.check(), this.intervalMs);
  }

  /** Stops watching. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Looks once (the timer calls it; call it yourself from a loop that has no timers).
   *
   * @returns the trip when it tripped now, else `null`
   */
  check(): TrapWatchdogTrip | null {
    if (this.tripped !== null) return null;
    const c = this.channel.ctrl;
    const t = now();
    const seq = Atomics.load(c, TrapWord.REQ_SEQ);
    const beat = Atomics.load(c, TrapWord.HEARTBEAT);
    const state = Atomics.load(c, TrapWord.STATE);
    const waiting = state !== TrapGuestState.RUNNING || seq !== Atomics.load(c, TrapWord.RESP_SEQ);
    if (seq !== this.lastSeq || beat !== this.lastBeat || waiting) {
      this.lastSeq = seq;
      this.lastBeat = beat;
      this.progressAt = t;
    }
    const elapsedMs = t - this.startedAt;
    const quietMs = t - this.progressAt;
    let reason: TrapWatchdogTrip["reason"] | null = null;
    if (elapsedMs >= this.budgetMs) reason = "budget";
    else if (quietMs >= this.stallMs) reason = "stall";
    if (reason === null) return null;
    const what =
      reason === "budget"
        ? `guest ran out of its ${this.budgetMs} ms budget`
        : `guest stalled: no exit or heartbeat for ${Math.round(quietMs)} ms`;
    const trip: TrapWatchdogTrip = {
      reason,
      message: `${what} (${this.channel.describe()})`,
      snapshot: this.channel.snapshot(),
      elapsedMs,
      quietMs,
    };
    this.tripped = trip;
    this.stop();
    this.onTrip(trip);
    return trip;
  }
}
