import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import {
  GuestMemory,
  HAS_WAIT_ASYNC,
  pendingLines,
  TRAP_CHANNEL_BYTES,
  TrapChannel,
  TrapGuestState,
  type TrapHandler,
  type TrapServeMode,
  type TrapServer,
  TrapWord,
} from "@pvkit/platform";
import { runTrapWorker, type TrapWorkerData, type TrapWorkerResult } from "@pvkit/platform/node";
import { describe, expect, it } from "vitest";
import { bundleWorker } from "../../../test-utils/bundle-worker.js";
import {
  argFor,
  FAULT_TEXT,
  linesFor,
  MEMORY_MARK_AT,
  OP_ARM,
  OP_FAULT,
  OP_NOP,
  OP_RAISE_LOWER,
  opFor,
  PANIC_TEXT,
  STOPPED_EXIT,
  type TrapGuestConfig,
  type TrapGuestReport,
  usesInvoke,
} from "./fixtures/trap-protocol.js";

const guestScript = bundleWorker(
  fileURLToPath(new URL("./fixtures/trap-guest.ts", import.meta.url)),
);
const MODES: readonly TrapServeMode[] = ["blocking", "async"];

/** A handler for the scenarios that need no checking on the host. */
const basicHandler =
  (server: () => TrapServer | null): TrapHandler =>
  (op, args) => {
    switch (op) {
      case OP_NOP:
        return args[0]! + 1;
      case OP_FAULT:
        throw new Error(FAULT_TEXT);
      case OP_RAISE_LOWER: {
        const s = server()!;
        s.raise(9);
        s.raise(200);
        s.lower(9);
        return 0;
      }
      default:
        throw new Error(`unexpected op ${op}`);
    }
  };

/** Runs the guest fixture on `scenario`, collecting what it posts. */
async function runGuest(
  config: TrapGuestConfig,
  options: {
    mode?: TrapServeMode;
    handler?: TrapHandler;
    channel?: TrapChannel;
    memory?: SharedArrayBuffer;
    stallMs?: number;
    budgetMs?: number;
    onServer?: (server: TrapServer) => void;
    onFault?: (error: unknown, op: number) => void;
  } = {},
): Promise<{ result: TrapWorkerResult; reports: TrapGuestReport[] }> {
  const reports: TrapGuestReport[] = [];
  let server: TrapServer | null = null;
  const result = await runTrapWorker({
    script: guestScript,
    workerData: config,
    handler: options.handler ?? basicHandler(() => server),
    mode: options.mode ?? "async",
    ...(options.channel === undefined ? {} : { channel: options.channel }),
    ...(options.memory === undefined ? {} : { memory: options.memory }),
    stallMs: options.stallMs ?? 5000,
    budgetMs: options.budgetMs ?? 30_000,
    ...(options.onFault === undefined ? {} : { server: { onFault: options.onFault } }),
    onStart: (s) => {
      server = s;
      options.onServer?.(s);
    },
    onMessage: (m) => reports.push(m as TrapGuestReport),
  });
  return { result, reports };
}

/** The round-trip host: checks every request against the protocol, in order, and echoes. */
function roundtripHandler(errors: string[]): { handler: TrapHandler; count: () => number } {
  let n = 0;
  const handler: TrapHandler = (op, args, results) => {
    const i = n++;
    if (op !== opFor(i) && errors.length < 20)
      errors.push(`request ${i}: op ${op}, expected ${opFor(i)}`);
    const slots = usesInvoke(i) ? 16 : 6;
    for (let k = 0; k < slots; k++) {
      if (!Object.is(args[k], argFor(i, k)) && errors.length < 20) {
        errors.push(`request ${i}: arg ${k} is ${args[k]}, expected ${argFor(i, k)}`);
      }
    }
    results[1] = op;
    results[2] = -i;
    return args[i % 6]!;
  };
  return { handler, count: () => n };
}

describe("TrapChannel layout", () => {
  it("is created on one side and attached on the other; one guest per channel", () => {
    const channel = TrapChannel.create();
    expect(channel.buffer.byteLength).toBe(TRAP_CHANNEL_BYTES);
    const other = TrapChannel.attach(channel.buffer);
    expect(other.guestState).toBe(TrapGuestState.NEW);
    expect(channel.snapshot()).toMatchObject({ stateName: "new", inCall: false, heartbeat: 0 });
    other.port();
    expect(channel.guestState).toBe(TrapGuestState.RUNNING);
    expect(() => channel.port()).toThrow(/already has a guest \(state running\)/);
    expect(channel.describe()).toMatch(/^guest running, heartbeat 0, not in an exit/);
  });

  it("refuses buffers that are not a trap channel", () => {
    expect(() => TrapChannel.attach(new ArrayBuffer(4096) as unknown as SharedArrayBuffer)).toThrow(
      TypeError,
    );
    expect(() => TrapChannel.attach(new SharedArrayBuffer(64))).toThrow(/needs 2560 bytes/);
    expect(() => TrapChannel.attach(new SharedArrayBuffer(TRAP_CHANNEL_BYTES))).toThrow(/magic/);
    const channel = TrapChannel.create();
    channel.ctrl[TrapWord.VERSION] = 99;
    expect(() => TrapChannel.attach(channel.buffer)).toThrow(/version 99/);
  });

  it("keeps pending lines as bits the guest takes exactly once", () => {
    const channel = TrapChannel.create();
    const server = channel.server();
    const port = channel.port();
    expect(port.interruptPending).toBe(false);
    for (const line of [0, 31, 32, 100, 255]) server.raise(line);
    server.raise(31); // already pending: still one line
    expect(port.interruptPending).toBe(true);
    expect(pendingLines(port.takePending())).toEqual([0, 31, 32, 100, 255]);
    expect(pendingLines(port.takePending())).toEqual([]);
    expect(port.interruptPending).toBe(false);
    expect(() => server.raise(256)).toThrow(RangeError);
    expect(() => server.lower(-1)).toThrow(RangeError);
    expect(() => server.raise(1.5)).toThrow(RangeError);
  });

  it("halt returns at once for a pending line, a stop or a timeout", () => {
    const channel = TrapChannel.create();
    const server = channel.server();
    const port = channel.port();
    expect(port.halt(1)).toBe("timeout");
    server.raise(4);
    expect(port.halt()).toBe("interrupt");
    port.takePending();
    server.requestStop();
    expect(port.stopRequested).toBe(true);
    expect(port.halt()).toBe("stop");
    expect(channel.snapshot().heartbeat).toBe(6); // two beats per halt
    expect(channel.guestState).toBe(TrapGuestState.RUNNING);
  });

  it("poll answers one request and turns a handler exception into HANDLER_FAULT", () => {
    const channel = TrapChannel.create();
    const faults: unknown[] = [];
    const server = channel.server({ faultResult: -14, onFault: (e) => faults.push(e) });
    const c = channel.ctrl;
    expect(server.poll(() => 1)).toBe(false);
    // Post a request by hand, as a guest would.
    channel.f64[32] = 2 ** 53;
    c[TrapWord.OP] = -1; // op 0xffffffff
    Atomics.store(c, TrapWord.REQ_SEQ, 1);
    let seen: [number, number] = [0, 0];
    const answered = server.poll((op, args) => {
      seen = [op, args[0]!];
      return -(2 ** 53);
    });
    expect(answered).toBe(true);
    expect(seen).toEqual([0xffff_ffff, 2 ** 53]);
    expect(Atomics.load(c, TrapWord.RESP_SEQ)).toBe(1);
    expect(channel.f64[48]).toBe(-(2 ** 53));
    Atomics.store(c, TrapWord.REQ_SEQ, 2);
    expect(
      server.poll(() => {
        throw new Error("boom");
      }),
    ).toBe(true);
    expect(c[TrapWord.STATUS]).toBe(1);
    expect(channel.f64[48]).toBe(-14);
    expect(faults).toHaveLength(1);
    expect(server.faults).toBe(1);
  });
});

describe("trap channel across threads", () => {
  it("has Atomics.waitAsync on this Node", () => {
    expect(HAS_WAIT_ASYNC).toBe(true);
  });

  it.each(MODES)(
    "carries 20,000 exits in order with exact u32 ops and float64 arguments up to ±2^53 (%s host)",
    async (mode) => {
      const errors: string[] = [];
      const { handler, count } = roundtripHandler(errors);
      const ram = GuestMemory.create(1 << 20, { shared: true });
      const { result, reports } = await runGuest(
        { scenario: "roundtrip", calls: 20_000 },
        { mode, handler, memory: ram.regions[0]!.bytes.buffer as SharedArrayBuffer },
      );
      expect(result.error).toBeNull();
      expect(reports[0]?.errors).toEqual([]);
      expect(errors).toEqual([]);
      expect(result.ok).toBe(true);
      expect(count()).toBe(20_000);
      expect(result.served).toBe(20_000);
      expect(reports[0]?.calls).toBe(20_000);
      expect(ram.readU32(MEMORY_MARK_AT)).toBe(20_000); // guest RAM is shared, no exit needed
      expect(result.terminated).toBe(false);
    },
  );

  it.each([
    ["blocking", 0x7fff_fff0],
    ["async", 0x7fff_fff0],
    ["blocking", -16],
    ["async", -16],
  ] as const)("wraps sequence numbers safely (%s host, starting at %i)", async (mode, start) => {
    const errors: string[] = [];
    const { handler } = roundtripHandler(errors);
    const channel = TrapChannel.create({ sequenceStart: start });
    const { result, reports } = await runGuest(
      { scenario: "roundtrip", calls: 2000 },
      { mode, handler, channel },
    );
    expect(errors).toEqual([]);
    expect(reports[0]?.errors).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.snapshot.requestSeq).toBe((start + 2000) | 0);
    expect(result.snapshot.responseSeq).toBe((start + 2000) | 0);
  });

  it.each(MODES)(
    "an interrupt raised from a host callback wakes the halted guest, which takes exactly the raised lines (%s host)",
    async (mode) => {
      let raisedFromCallbacks = 0;
      let server: TrapServer | null = null;
      const base = basicHandler(() => server);
      const handler: TrapHandler = (op, args, results) => {
        if (op !== OP_ARM) return base(op, args, results);
        const round = args[0]!;
        // An asynchronous back-end completes later, outside the exit.
        const fire = (): void => {
          raisedFromCallbacks++;
          for (const line of linesFor(round)) server!.raise(line);
        };
        if (round % 2 === 0) setImmediate(fire);
        else setTimeout(fire, 2);
        return 0;
      };
      const { result, reports } = await runGuest(
        { scenario: "interrupts", rounds: 30 },
        { mode, handler, onServer: (s) => (server = s) },
      );
      expect(result.error).toBeNull();
      expect(reports[0]?.errors).toEqual([]);
      expect(result.ok).toBe(true);
      expect(raisedFromCallbacks).toBe(30);
      // Every round ended in a halt that a raise woke up, never a timeout.
      expect(reports[0]?.halts?.timeout ?? 0).toBe(0);
      expect(reports[0]?.halts?.interrupt).toBeGreaterThanOrEqual(30);
    },
  );

  it("requestStop() ends a halted guest", async () => {
    const { result, reports } = await runGuest(
      { scenario: "halt-stop" },
      {
        onServer: (s) => {
          setTimeout(() => s.requestStop(), 50);
        },
      },
    );
    expect(reports[0]?.errors).toEqual([]);
    expect(result.outcome).toBe("exited");
    expect(result.exitCode).toBe(STOPPED_EXIT);
    expect(result.snapshot.stopRequested).toBe(true);
    expect(result.terminated).toBe(false);
  });

  it("a host handler that throws answers the waiting guest with HANDLER_FAULT and serving goes on", async () => {
    const faults: [string, number][] = [];
    const { result, reports } = await runGuest(
      { scenario: "handler-fault" },
      { onFault: (e, op) => faults.push([(e as Error).message, op]) },
    );
    expect(reports[0]?.errors).toEqual([]);
    expect(reports[0]?.faultMessage).toContain(`exit op 0x3: Error: ${FAULT_TEXT}`);
    expect(result.ok).toBe(true);
    expect(result.faults).toBe(1);
    expect(faults).toEqual([[FAULT_TEXT, OP_FAULT]]);
  });

  it("a guest waiting for an answer from a host that closes gets TrapStatus.CLOSED", async () => {
    const channel = TrapChannel.create();
    const server = channel.server();
    const data: TrapWorkerData<TrapGuestConfig> = {
      channel: channel.buffer,
      memory: null,
      data: { scenario: "closed-host" },
    };
    const worker = new Worker(guestScript, { workerData: data });
    const reports: TrapGuestReport[] = [];
    worker.on("message", (m) => reports.push(m as TrapGuestReport));
    const exited = new Promise<number>((resolve) => worker.once("exit", resolve));
    // Nobody serves: wait until the guest is blocked in its exit, then close.
    const deadline = Date.now() + 10_000;
    while (!channel.snapshot().inCall && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(channel.snapshot()).toMatchObject({ inCall: true, op: OP_NOP, stateName: "running" });
    server.close();
    expect(await exited).toBe(0);
    expect(reports[0]?.errors).toEqual([]);
    expect(channel.snapshot()).toMatchObject({
      stateName: "exited",
      exitCode: 0,
      hostClosed: true,
    });
  });
});

describe("a guest that misbehaves does not take the host down", () => {
  it.each(MODES)(
    "a guest spinning without exits is stopped by the watchdog, its worker terminated (%s host)",
    async (mode) => {
      const t0 = performance.now();
      const { result } = await runGuest({ scenario: "spin" }, { mode, stallMs: 300 });
      expect(result.outcome).toBe("stalled");
      expect(result.terminated).toBe(true);
      expect(result.workerExitCode).toBe(1);
      expect(result.error?.message).toMatch(
        /^guest stalled: no exit or heartbeat for \d+ ms \(guest running, heartbeat 0, not in an exit \(last op 0x4, seq 2\)\); worker terminated$/,
      );
      expect(result.error?.snapshot.stateName).toBe("running");
      expect(performance.now() - t0).toBeLessThan(10_000);
      // The host thread is alive and serves the next guest.
      const next = await runGuest(
        { scenario: "roundtrip", calls: 100 },
        {
          mode,
          handler: roundtripHandler([]).handler,
        },
      );
      expect(next.result.ok).toBe(true);
    },
  );

  it("a guest halted forever is stopped by the wall budget, naming its state", async () => {
    // Long enough for the worker to start and halt even on a loaded machine.
    const { result } = await runGuest({ scenario: "halt-stop" }, { budgetMs: 2000 });
    expect(result.outcome).toBe("budget");
    expect(result.terminated).toBe(true);
    expect(result.error?.message).toMatch(
      /^guest ran out of its 2000 ms budget \(guest halted, heartbeat 1,/,
    );
  });

  it("a guest that panics is reported with its message", async () => {
    const { result } = await runGuest({ scenario: "panic" });
    expect(result.outcome).toBe("panicked");
    expect(result.ok).toBe(false);
    expect(result.terminated).toBe(false);
    expect(result.error?.message).toBe(
      `guest panicked: Error: ${PANIC_TEXT} (guest panicked, heartbeat 0, not in an exit (last op 0x4, seq 1))`,
    );
    expect(result.error?.guestMessage).toMatch(/at TrapPort\.run/); // the stack came along
    expect(result.snapshot.panicMessage).toContain(PANIC_TEXT);
  });

  it("a guest that throws uncaught is reported as a panic with the error", async () => {
    const { result } = await runGuest({ scenario: "throw" });
    expect(result.outcome).toBe("panicked");
    expect(result.error?.message).toContain(`guest threw: RangeError: ${PANIC_TEXT}`);
    expect(result.workerExitCode).toBe(1);
  });

  it("a worker that ends without exit() or panic() is reported, not waited for", async () => {
    const { result } = await runGuest({ scenario: "die" }, { mode: "blocking" });
    expect(result.outcome).toBe("died");
    expect(result.error?.message).toMatch(
      /^guest worker ended \(code 3\) without exit\(\) or panic\(\)/,
    );
  });
});

describe("allocation on the guest's exit path", () => {
  it("a round trip allocates no object on the guest's heap", async () => {
    const { result, reports } = await runGuest({
      scenario: "measure",
      calls: 1000,
      repeats: 1,
      warmup: 20_000,
      allocCalls: 20_000,
    });
    expect(result.ok).toBe(true);
    expect(reports[0]?.bytesPerExit).not.toBeNull();
    // One object per exit would be at least 12 bytes (a boxed number). The measurement is
    // the median over windows of 1,024 exits; on a loaded machine a window can pick up a
    // kilobyte of the worker's own background work (~1 B/exit), which is not per exit.
    expect(reports[0]!.bytesPerExit!).toBeLessThan(4);
  });
});
