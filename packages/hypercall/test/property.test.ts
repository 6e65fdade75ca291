/**
 * Random mmu_update / mmuext_op sequences (fast-check, seeded) checked against an
 * independent recomputation of Xen's invariants from the page tables themselves.
 */
import {
  FRAME_PINNED,
  type Hypervisor,
  isPageTableType,
  MMU_PT_UPDATE_PRESERVE_AD,
  PAGE_SIZE,
  PGT_l1_page_table,
  PGT_l4_page_table,
  PGT_writable_page,
  PTE_A,
  PTE_D,
  PTE_G,
  PTE_P,
  PTE_PS,
  PTE_RW,
  PTE_US,
  pteFrame,
  pteHi,
  pteLo,
} from "@pvkit/hypercall";
import fc from "fast-check";
import { expect, test } from "vitest";
import { setupPv } from "./helpers.js";

/**
 * Recomputes, for every frame, the type references and general references its current
 * users hold (validated tables' entries, pins, CR3s, the shared-info page), and checks:
 * - no present RW L1 entry of a live L1 maps a frame whose live type is a page table;
 * - every live page-table frame is validated;
 * - type counts and general counts equal the recomputed reference counts.
 */
function checkInvariants(hv: Hypervisor): void {
  const f = hv.frames;
  const n = f.frames;
  const typeRefs = new Uint32Array(n);
  const refs = new Uint32Array(n);
  const view = hv.machineView;
  for (let m = 0; m < n; m++) {
    if (f.owner[m]! !== -1) refs[m]! += 1; // allocation reference (PGC_allocated)
    if ((f.flags[m]! & 4) !== 0) typeRefs[m]! += 1; // shared info held by Xen
    if ((f.flags[m]! & FRAME_PINNED) !== 0) {
      typeRefs[m]! += 1;
      refs[m]! += 1;
    }
  }
  for (const d of hv.allDomains) {
    for (const v of d.vcpus) {
      if (v.cr3 >= 0) {
        typeRefs[v.cr3]! += 1;
        refs[v.cr3]! += 1;
      }
    }
  }
  for (let m = 0; m < n; m++) {
    const type = f.type[m]!;
    if (f.typeCount[m]! === 0 || !isPageTableType(type)) continue;
    expect((f.flags[m]! & 1) !== 0, `live table ${m} not validated`).toBe(true);
    for (let i = 0; i < 512; i++) {
      if (type === PGT_l4_page_table && i >= 256 && i <= 271) continue;
      const lo = view.getUint32(m * PAGE_SIZE + i * 8, true);
      if ((lo & PTE_P) === 0) continue;
      const target = pteFrame(lo, view.getUint32(m * PAGE_SIZE + i * 8 + 4, true));
      if (type === PGT_l1_page_table) {
        refs[target]! += 1;
        if ((lo & PTE_RW) !== 0) {
          typeRefs[target]! += 1;
          const tt = f.type[target]!;
          expect(f.typeCount[target]! > 0 && tt === PGT_writable_page, `RW map of ${target}`).toBe(
            true,
          );
        }
      } else if (target !== m) {
        refs[target]! += 1;
        typeRefs[target]! += 1;
      }
    }
  }
  for (let m = 0; m < n; m++) {
    expect(f.typeCount[m], `type count of frame ${m}`).toBe(typeRefs[m]);
    expect(f.count[m], `general count of frame ${m}`).toBe(refs[m]);
  }
}

type Op =
  | {
      kind: "update";
      table: number;
      index: number;
      target: number;
      flags: number;
      preserve: boolean;
    }
  | { kind: "pin"; level: number; frame: number }
  | { kind: "unpin"; frame: number }
  | { kind: "baseptr"; frame: number };

const FRAMES = 12;
const flagBits = [PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS, PTE_G];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("update" as const),
      table: fc.integer({ min: 1, max: FRAMES }),
      index: fc.constantFrom(0, 1, 2, 256, 300),
      target: fc.integer({ min: 0, max: FRAMES + 1 }),
      flags: fc.oneof(
        fc.constantFrom(
          PTE_P | PTE_RW | PTE_US | PTE_A,
          PTE_P | PTE_US | PTE_A,
          PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D,
          0,
        ),
        fc.subarray(flagBits, { minLength: 0 }).map((bits) => bits.reduce((a, b) => a | b, 0)),
      ),
      preserve: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("pin" as const),
      level: fc.integer({ min: 1, max: 4 }),
      frame: fc.integer({ min: 1, max: FRAMES }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("unpin" as const),
      frame: fc.integer({ min: 1, max: FRAMES }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("baseptr" as const),
      frame: fc.integer({ min: 1, max: FRAMES }),
    }),
  },
);

function makeEnv(strict: boolean) {
  const env = setupPv({ strictBasePtr: strict, machinePages: 80 }, 64);
  const other = env.hv.createDomain({ pages: 2 });
  /** Frame FRAMES+1 is another domain's: hostile targets. */
  const frameOf = (i: number) => (i === FRAMES + 1 ? other.p2m[0]! : i === 0 ? 0 : env.mfn(i));
  return { ...env, frameOf };
}

function apply(env: ReturnType<typeof makeEnv>, op: Op): number {
  switch (op.kind) {
    case "update": {
      const ptr =
        env.frameOf(op.table) * PAGE_SIZE +
        op.index * 8 +
        (op.preserve ? MMU_PT_UPDATE_PRESERVE_AD : 0);
      const t = env.frameOf(op.target);
      env.client.queueUpdate(ptr, pteLo(t, op.flags), pteHi(t));
      return env.client.flushUpdates();
    }
    case "pin":
      return env.client.pin(op.level, env.frameOf(op.frame));
    case "unpin":
      return env.client.unpin(env.frameOf(op.frame));
    case "baseptr":
      return env.client.newBaseptr(env.frameOf(op.frame));
  }
}

test("random single operations: invariants hold and a rejected operation changes nothing", () => {
  let accepted = 0;
  let rejected = 0;
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(opArb, { minLength: 1, maxLength: 60, size: "medium" }),
      (strict, ops) => {
        const env = makeEnv(strict);
        for (const op of ops) {
          const before = env.snap();
          const rc = apply(env, op);
          if (rc < 0) {
            rejected++;
            expect(env.snap()).toEqual(before);
          } else accepted++;
          checkInvariants(env.hv);
        }
      },
    ),
    { seed: 0x5eed, numRuns: 80 },
  );
  // The generator must exercise both outcomes substantially.
  expect(accepted).toBeGreaterThan(0.1 * (accepted + rejected));
  expect(rejected).toBeGreaterThan(0.1 * (accepted + rejected));
});

test("random batches stop at the first failure with the success count, like one-by-one", () => {
  const updateArb = opArb.filter((o): o is Extract<Op, { kind: "update" }> => o.kind === "update");
  fc.assert(
    fc.property(
      fc.array(opArb, { maxLength: 20 }),
      fc.array(updateArb, { minLength: 1, maxLength: 30 }),
      (setup, batch) => {
        const a = makeEnv(false);
        const b = makeEnv(false);
        for (const op of setup) {
          apply(a, op);
          apply(b, op);
        }
        // A: one hypercall per entry, stopping at the first failure.
        let firstFailure = -1;
        let failRc = 0;
        for (let i = 0; i < batch.length; i++) {
          const rc = apply(a, batch[i]!);
          if (rc < 0) {
            firstFailure = i;
            failRc = rc;
            break;
          }
        }
        // B: the whole batch in one hypercall.
        for (const op of batch) {
          const t = b.frameOf(op.target);
          const ptr =
            b.frameOf(op.table) * PAGE_SIZE +
            op.index * 8 +
            (op.preserve ? MMU_PT_UPDATE_PRESERVE_AD : 0);
          b.client.queueUpdate(ptr, pteLo(t, op.flags), pteHi(t));
        }
        const exits = b.port.exits;
        const rc = b.client.flushUpdates();
        expect(b.port.exits - exits).toBe(1);
        expect(rc).toBe(firstFailure < 0 ? 0 : failRc);
        expect(b.client.lastDone).toBe(firstFailure < 0 ? batch.length : firstFailure);
        expect(b.snap()).toEqual(a.snap());
        checkInvariants(b.hv);
      },
    ),
    { seed: 0xba7c4, numRuns: 80 },
  );
});
