/**
 * fork + copy-on-write under a property test: random writes in a parent, its child and a
 * grandchild, interleaved at random yields, never leak across processes — in each MMU mode
 * (PV `mmu_update`, shadow paging with trapped stores, EPT-like hap).
 */

import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type GuestKernelVm,
  nonBlocking,
  type Program,
  type SyscallRequest,
  type User,
} from "../src/index.js";
import { boot } from "./helpers.js";

const PAGE = 4096;
type Gen = Generator<SyscallRequest, number, number>;

/** A write (page, word, value) or a yield of the CPU. */
type Step = { readonly page: number; readonly word: number; readonly value: number } | "yield";

const step = (pages: number): fc.Arbitrary<Step> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        page: fc.nat(pages - 1),
        word: fc.nat(1023),
        value: fc.nat(0xffff_ffff),
      }),
    },
    { weight: 1, arbitrary: fc.constant("yield" as const) },
  );

const spec = fc.integer({ min: 1, max: 10 }).chain((pages) =>
  fc.record({
    pages: fc.constant(pages),
    touched: fc.array(fc.boolean(), { minLength: pages, maxLength: pages }),
    parent: fc.array(step(pages), { maxLength: 16 }),
    child: fc.array(step(pages), { maxLength: 16 }),
    grandchild: fc.option(fc.array(step(pages), { maxLength: 10 }), { nil: null }),
  }),
);

type Model = Map<number, number>;
type Spec = typeof spec extends fc.Arbitrary<infer T> ? T : never;

/** Applies steps to memory and to the model. */
function* apply(u: User, buf: number, steps: readonly Step[], model: Model): Gen {
  for (const s of steps) {
    if (s === "yield") {
      yield u.yieldCpu();
      continue;
    }
    const va = buf + s.page * PAGE + s.word * 4;
    u.store32(va, s.value);
    model.set(va, s.value);
  }
  return 0;
}

/** Mismatches between memory and the model over every address anyone wrote. */
function check(u: User, model: Model, addresses: readonly number[]): number {
  let bad = 0;
  for (const va of addresses) if (u.load32(va) !== (model.get(va) ?? 0)) bad++;
  return Math.min(bad, 100);
}

function program(s: Spec, out: { parent: number; child: number }): Program {
  return function* (u: User): Gen {
    const buf = u.mmap(s.pages * PAGE);
    const base: Model = new Map();
    for (let i = 0; i < s.pages; i++) {
      if (!s.touched[i]) continue; // untouched pages stay demand-zero (the zero page after a read)
      u.store32(buf + i * PAGE, i + 1);
      base.set(buf + i * PAGE, i + 1);
    }
    const all = new Set<number>(base.keys());
    for (const list of [s.parent, s.child, s.grandchild ?? []]) {
      for (const st of list) if (st !== "yield") all.add(buf + st.page * PAGE + st.word * 4);
    }
    const addresses = [...all];
    // Read every page once before forking: some become zero-page mappings.
    for (let i = 0; i < s.pages; i++) u.load32(buf + i * PAGE + 8);
    const pid = yield u.fork(function* (c: User): Gen {
      const mine = new Map(base);
      yield* apply(c, buf, s.child, mine);
      if (s.grandchild !== null) {
        const gsteps = s.grandchild;
        const g = yield c.fork(function* (gc: User): Gen {
          const theirs = new Map(mine);
          yield* apply(gc, buf, gsteps, theirs);
          return check(gc, theirs, addresses);
        });
        const gs = yield c.wait(g);
        if (gs !== 0) return 100 + gs;
      }
      return check(c, mine, addresses);
    });
    const mine = new Map(base);
    yield* apply(u, buf, s.parent, mine);
    out.child = yield u.wait(pid);
    out.parent = check(u, mine, addresses);
    return 0;
  };
}

describe("fork + copy-on-write (property)", () => {
  const vms: GuestKernelVm[] = [];
  beforeAll(async () => {
    for (const mmu of ["pv", "shadow", "hap"] as const) {
      vms.push(
        await boot({
          mmu,
          time: mmu === "pv" ? "pv" : "lapic",
          irq: mmu === "pv" ? "evtchn" : "pic",
        }),
      );
    }
  });
  afterAll(() => {
    vms.length = 0;
  });

  it("random writes in parent, child and grandchild never leak across processes", async () => {
    await fc.assert(
      fc.asyncProperty(spec, async (s) => {
        for (const vm of vms) {
          const out = { parent: -1, child: -1 };
          const r = await vm.runProgram(program(s, out), "cow");
          expect(r.exitStatus, vm.config.name).toBe(0);
          expect(r.processErrors, vm.config.name).toEqual([]);
          expect({ config: vm.config.name, ...out }).toEqual({
            config: vm.config.name,
            parent: 0,
            child: 0,
          });
        }
      }),
      { numRuns: 40 },
    );
  }, 120_000);

  it("frees every frame the processes used (map counts return to zero)", async () => {
    for (const vm of vms) {
      await vm.runProgram(
        nonBlocking((u: User) => {
          return u.pid > 0 ? 0 : 1;
        }),
      );
      const free0 = vm.kernel.frames.free;
      const out = { parent: -1, child: -1 };
      const s = {
        pages: 6,
        touched: [true, false, true, true, false, true],
        parent: [{ page: 0, word: 1, value: 7 }, "yield" as const, { page: 1, word: 2, value: 9 }],
        child: [
          { page: 2, word: 3, value: 5 },
          { page: 1, word: 0, value: 1 },
        ],
        grandchild: [{ page: 0, word: 1, value: 3 }],
      };
      await vm.runProgram(program(s, out));
      expect(out).toEqual({ parent: 0, child: 0 });
      await vm.runProgram(
        nonBlocking((u: User) => {
          return u.pid > 0 ? 0 : 1;
        }),
      );
      expect(vm.kernel.frames.free, vm.config.name).toBe(free0);
    }
  });
});
