import { defer, yieldToEventLoop } from "@pvkit/platform";
import { afterEach, describe, expect, it, vi } from "vitest";

/** Resolves once `n` chained deferrals have run; each defers the next. */
function chain(deferFn: (task: () => void) => void, n: number, log: number[]): Promise<void> {
  return new Promise<void>((resolve) => {
    let i = 0;
    const step = (): void => {
      log.push(i++);
      if (i < n) deferFn(step);
      else resolve();
    };
    deferFn(step);
  });
}

describe("defer", () => {
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllGlobals();
    vi.resetModules();
  });

  it("runs tasks later, in order, and never through setTimeout", async () => {
    const timeout = vi.spyOn(globalThis, "setTimeout");
    const log: string[] = [];
    defer(() => log.push("a"));
    defer(() => log.push("b"));
    log.push("sync");
    expect(log).toEqual(["sync"]);
    await yieldToEventLoop();
    expect(log).toEqual(["sync", "a", "b"]);
    const steps: number[] = [];
    await chain(defer, 1000, steps);
    expect(steps).toHaveLength(1000);
    expect(steps[999]).toBe(999);
    expect(timeout).not.toHaveBeenCalled();
  });

  it("runs a deferral before a 0 ms timer set up in the same I/O callback", async () => {
    // In an I/O callback Node runs the check phase (setImmediate) before the next timers
    // phase, so a deferral that were a clamped timer could not come first.
    const order = await new Promise<string[]>((resolve) => {
      const seen: string[] = [];
      const { port1, port2 } = new MessageChannel();
      port1.onmessage = () => {
        setTimeout(() => {
          seen.push("timeout");
          port1.close();
          resolve(seen);
        }, 0);
        defer(() => seen.push("defer"));
      };
      port2.postMessage(0);
    });
    expect(order).toEqual(["defer", "timeout"]);
  });

  it("falls back to a MessageChannel post where setImmediate is missing (browsers)", async () => {
    vi.stubGlobal("setImmediate", undefined);
    vi.resetModules();
    const fresh = await import("../src/defer.js");
    const timeout = vi.spyOn(globalThis, "setTimeout");
    const log: number[] = [];
    await chain(fresh.defer, 200, log);
    expect(log).toEqual(Array.from({ length: 200 }, (_, i) => i));
    await fresh.yieldToEventLoop();
    expect(timeout).not.toHaveBeenCalled();
  });
});
