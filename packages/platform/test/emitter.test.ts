import { EventEmitter } from "node:events";
import { Emitter, type TypedEmitter } from "@pvkit/platform";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

type TestEvents = {
  ping: (n: number) => void;
  pair: (a: string, b: boolean) => void;
  bare: () => void;
};

/** An emitter of {@link TestEvents}, the way devices subclass it. */
class Pinger extends Emitter<TestEvents> {
  ping(n: number): boolean {
    return this.emit("ping", n);
  }
}

describe("Emitter", () => {
  it("calls listeners in the order added, with the arguments, and this = the emitter", () => {
    const e = new Pinger();
    const log: string[] = [];
    let self: unknown;
    e.on("pair", (a, b) => log.push(`1:${a}:${b}`));
    e.addListener("pair", function (this: unknown, a, b) {
      self = this;
      log.push(`2:${a}:${b}`);
    });
    e.prependListener("pair", (a) => log.push(`0:${a}`));
    expect(e.emit("pair", "x", true)).toBe(true);
    expect(log).toEqual(["0:x", "1:x:true", "2:x:true"]);
    expect(self).toBe(e);
  });

  it("returns false from emit without listeners, and chains every registration call", () => {
    const e = new Pinger();
    expect(e.ping(1)).toBe(false);
    const f = (): void => {};
    expect(e.on("bare", f).once("bare", f).off("bare", f).removeAllListeners("bare")).toBe(e);
    expect(e.emit("bare")).toBe(false);
  });

  it("runs a once listener once, removed before it runs", () => {
    const e = new Pinger();
    const seen: number[] = [];
    e.once("ping", (n) => {
      expect(e.listenerCount("ping")).toBe(0);
      seen.push(n);
    });
    expect(e.listenerCount("ping")).toBe(1);
    e.ping(1);
    e.ping(2);
    expect(seen).toEqual([1]);
    expect(e.listenerCount("ping")).toBe(0);
  });

  it("runs a once listener once even when a listener before it re-emits the event", () => {
    const e = new Pinger();
    const seen: number[] = [];
    e.on("ping", (n) => {
      if (n === 1) e.ping(2);
    });
    e.once("ping", (n) => seen.push(n));
    e.ping(1);
    // The nested emit (2) fired the once listener; the outer emit's snapshot still held
    // it, and must not fire it again.
    expect(seen).toEqual([2]);
  });

  it("prependOnceListener runs first, once", () => {
    const e = new Pinger();
    const log: string[] = [];
    e.on("ping", () => log.push("on"));
    e.prependOnceListener("ping", () => log.push("first"));
    e.ping(1);
    e.ping(2);
    expect(log).toEqual(["first", "on", "on"]);
  });

  it("off removes the most recent registration, including a once registration", () => {
    const e = new Pinger();
    const log: string[] = [];
    const a = (n: number): void => {
      log.push(`a${n}`);
    };
    const b = (n: number): void => {
      log.push(`b${n}`);
    };
    e.on("ping", a).on("ping", b).on("ping", a);
    e.off("ping", a);
    e.ping(1);
    expect(log).toEqual(["a1", "b1"]);
    e.once("ping", b);
    e.removeListener("ping", b); // the once registration: the later one
    e.off("ping", (_n: number) => {}); // not registered: nothing happens
    log.length = 0;
    e.ping(2);
    expect(log).toEqual(["a2", "b2"]);
    expect(e.listenerCount("ping")).toBe(2);
  });

  it("emit works on the listeners registered when it started (removal during emit)", () => {
    const e = new Pinger();
    const log: string[] = [];
    const second = (): void => {
      log.push("second");
    };
    const late = (): void => {
      log.push("late");
    };
    e.on("bare", () => {
      log.push("first");
      e.off("bare", second); // still runs in this emit
      e.on("bare", late); // runs from the next emit
    });
    e.on("bare", second);
    e.emit("bare");
    expect(log).toEqual(["first", "second"]);
    log.length = 0;
    e.emit("bare");
    expect(log).toEqual(["first", "late"]);
  });

  it("a listener may remove itself while being called", () => {
    const e = new Pinger();
    const log: number[] = [];
    const self = (n: number): void => {
      log.push(n);
      e.off("ping", self);
    };
    e.on("ping", self);
    e.on("ping", (n) => log.push(n * 10));
    e.ping(1);
    e.ping(2);
    expect(log).toEqual([1, 10, 20]);
  });

  it("counts listeners per event, and a function added twice runs twice", () => {
    const e = new Pinger();
    let calls = 0;
    const f = (): void => {
      calls++;
    };
    e.on("bare", f).on("bare", f).once("bare", f);
    expect(e.listenerCount("bare")).toBe(3);
    expect(e.listenerCount("ping")).toBe(0);
    e.emit("bare");
    expect(calls).toBe(3);
    expect(e.listenerCount("bare")).toBe(2);
  });

  it("lists listeners (unwrapped), raw listeners (once wrappers) and event names", () => {
    const e = new Pinger();
    const a = (): void => {};
    const b = (): void => {};
    e.on("bare", a)
      .once("bare", b)
      .on("ping", () => {});
    expect(e.listeners("bare")).toEqual([a, b]);
    const raw = e.rawListeners("bare");
    expect(raw[0]).toBe(a);
    expect(raw[1]).not.toBe(b);
    expect((raw[1] as unknown as { listener: unknown }).listener).toBe(b);
    expect(e.eventNames()).toEqual(["bare", "ping"]);
    // Copies: changing them does not change the emitter.
    e.listeners("bare").length = 0;
    expect(e.listenerCount("bare")).toBe(2);
    // Calling a raw once wrapper runs the listener once and removes it, as in Node.
    let bCalls = 0;
    const e2 = new Pinger();
    e2.once("bare", () => {
      bCalls++;
    });
    const [wrapper] = e2.rawListeners("bare");
    wrapper?.();
    wrapper?.();
    expect(bCalls).toBe(1);
    expect(e2.listenerCount("bare")).toBe(0);
  });

  it("does not mistake a listener's own `listener` property for a once wrapper", () => {
    const e = new Pinger();
    const inner = (): void => {};
    const outer = Object.assign((): void => {}, { listener: inner });
    e.on("bare", outer);
    e.off("bare", inner);
    expect(e.listenerCount("bare")).toBe(1);
    expect(e.listeners("bare")).toEqual([outer]);
  });

  it("removeAllListeners clears one event or all of them", () => {
    const e = new Pinger();
    e.on("bare", () => {}).on("ping", () => {});
    e.removeAllListeners("bare");
    expect(e.eventNames()).toEqual(["ping"]);
    e.on("bare", () => {});
    e.removeAllListeners();
    expect(e.eventNames()).toEqual([]);
    expect(e.ping(1)).toBe(false);
  });

  it("propagates an exception thrown by a listener and stays usable", () => {
    const e = new Pinger();
    const log: number[] = [];
    e.on("ping", (n) => log.push(n));
    e.once("ping", (n) => {
      if (n === 1) throw new Error("listener failed");
    });
    e.on("ping", (n) => log.push(n * 10));
    expect(() => e.ping(1)).toThrow("listener failed");
    // The listener after the throwing one did not run for that emit.
    expect(log).toEqual([1]);
    // The once listener was removed before it threw; the others keep working.
    expect(e.listenerCount("ping")).toBe(2);
    e.ping(2);
    expect(log).toEqual([1, 2, 20]);
  });

  it("rejects a listener that is not a function", () => {
    const e = new Pinger();
    const bad = 42 as unknown as () => void;
    expect(() => e.on("bare", bad)).toThrow(TypeError);
    expect(() => e.once("bare", bad)).toThrow(TypeError);
    expect(() => e.off("bare", bad)).toThrow(TypeError);
    expect(e.listenerCount("bare")).toBe(0);
  });

  it("keeps max listeners for compatibility, and validates it", () => {
    const e = new Pinger();
    expect(e.getMaxListeners()).toBe(10);
    expect(e.setMaxListeners(0).getMaxListeners()).toBe(0);
    expect(() => e.setMaxListeners(-1)).toThrow(RangeError);
    expect(() => e.setMaxListeners(Number.NaN)).toThrow(RangeError);
    // No leak warning, however many listeners.
    for (let i = 0; i < 20; i++) e.on("bare", () => {});
    expect(e.listenerCount("bare")).toBe(20);
  });

  it("keeps listener state per instance", () => {
    const a = new Pinger();
    const b = new Pinger();
    a.on("bare", () => {});
    expect(b.listenerCount("bare")).toBe(0);
  });

  it("is a TypedEmitter, and works with node:events once()", async () => {
    const e: TypedEmitter<TestEvents> = new Pinger();
    const next = EventEmitter.once(e as unknown as EventEmitter, "ping");
    e.emit("ping", 7);
    await expect(next).resolves.toEqual([7]);
    expect(e.listenerCount("ping")).toBe(0);
  });

  it("types events and arguments", () => {
    const e = new Pinger();
    // @ts-expect-error: no such event
    e.on("nope", () => {});
    // @ts-expect-error: wrong argument type
    e.emit("ping", "1");
    // @ts-expect-error: missing argument
    e.emit("pair", "a");
    e.on("pair", (a: string, b: boolean) => {
      expect(typeof a + typeof b).toBe("stringboolean");
    });
    e.emit("pair", "a", false);
  });
});

/** One step of the differential test. */
type Op =
  | {
      kind: "on" | "once" | "prependListener" | "prependOnceListener" | "off";
      event: 0 | 1;
      fn: number;
    }
  | { kind: "emit"; event: 0 | 1 }
  | { kind: "removeAll"; event: 0 | 1 | null };

const EVENTS = ["a", "b"] as const;
type DiffEvents = { a: (depth: number) => void; b: (depth: number) => void };

describe("Emitter against node:events", () => {
  it("logs the same calls as Node's EventEmitter for any sequence of operations", () => {
    const event = fc.constantFrom(0 as const, 1 as const);
    const registration = fc.record({
      kind: fc.constantFrom(
        "on" as const,
        "once" as const,
        "prependListener" as const,
        "prependOnceListener" as const,
        "off" as const,
      ),
      event,
      fn: fc.integer({ min: 0, max: 4 }),
    });
    const op: fc.Arbitrary<Op> = fc.oneof(
      { arbitrary: registration, weight: 5 },
      { arbitrary: fc.record({ kind: fc.constant("emit" as const), event }), weight: 3 },
      {
        arbitrary: fc.record({
          kind: fc.constant("removeAll" as const),
          event: fc.constantFrom(0 as const, 1 as const, null),
        }),
        weight: 1,
      },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60, size: "max" }), (ops) => {
        /** Runs `ops` on `target`; listeners log themselves, and some act during an emit. */
        const run = (target: TypedEmitter<DiffEvents>): string[] => {
          const log: string[] = [];
          const fns: ((depth: number) => void)[] = [];
          for (let i = 0; i < 5; i++) {
            fns.push((depth) => {
              log.push(`fn${i}@${depth}`);
              if (depth > 0) return;
              if (i === 3) target.off("a", fns[0] as (depth: number) => void); // removal during emit
              if (i === 4) target.emit("a", depth + 1); // re-entrant emit
            });
          }
          for (const o of ops) {
            const name = EVENTS[o.event ?? 0];
            if (o.kind === "emit") log.push(`emit ${name} -> ${target.emit(name, 0)}`);
            else if (o.kind === "removeAll") {
              if (o.event === null) target.removeAllListeners();
              else target.removeAllListeners(name);
            } else target[o.kind](name, fns[o.fn] as (depth: number) => void);
            log.push(`names: ${target.eventNames().join(",")}`);
            for (const ev of EVENTS) {
              log.push(
                `${ev}: ${target.listenerCount(ev)} ${target.listeners(ev).map((f) => fns.indexOf(f))}`,
              );
            }
          }
          return log;
        };
        const ours = run(new Emitter<DiffEvents>());
        const node = run(new EventEmitter() as unknown as TypedEmitter<DiffEvents>);
        expect(ours).toEqual(node);
      }),
      { numRuns: 500 },
    );
  });
});
