/**
 * Fuzz target `hypercall-tree`: hypercall sequences that build real 4-level page-table
 * trees on the validating {@link Hypervisor} (reference/xen-pv.md §2, Xen's
 * xen/arch/x86/mm.c), plus event channels and the single-shot timer.
 *
 * A case starts (usually) from a valid tree — L4 → L3 → L2 → L1 in slot 0, the L4 pinned
 * and loaded — then runs steps that are mostly valid (`mmu_update` batches filling L1–L4
 * entries, pins, unpins, base-pointer switches, `update_va_mapping` on the loaded tree,
 * `MMU_MACHPHYS_UPDATE`) and sometimes hostile: a writable mapping of a page-table frame,
 * self maps and same-level (linear) links, other domains' frames, Xen's frame, frames
 * beyond RAM, bad flags (PS/G/PCD above L1, PCD/PWT/PAT in L1), Xen's L4 slots, pins of
 * the wrong level or twice, unpins of tables still in use, unknown `mmu_update` commands
 * carried in the low bits of `ptr`, foreign `foreigndom`. An independent model of frame
 * types, type counts, general references, pins, linear counts and every page's contents
 * predicts each return code, `*pdone`, and the whole frame table and page contents after
 * every step (a rejected request changes nothing; earlier requests of a batch stay).
 *
 * Event-channel steps (bind_ipi, bind_virq, alloc_unbound, bind_interdomain, send,
 * mask/unmask, close) and single-shot timer steps are checked against a second model:
 * port allocation, error codes, pending and mask bits, and that a timer fires exactly once
 * at or after its deadline.
 *
 * @module
 */

import {
  BASE_DISALLOW_LO,
  DOMID_IO,
  DOMID_SELF,
  FASTPATH_WHITELIST_HI,
  FASTPATH_WHITELIST_LO,
  GuestPhys,
  HypercallClient,
  HypercallPort,
  Hypervisor,
  type HypervisorOptions,
  L1_DISALLOW_LO,
  LINEAR_PT_XEN_SLOT,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMUEXT_PIN_L1_TABLE,
  PAGE_SIZE,
  PTE_A,
  PTE_D,
  PTE_G,
  PTE_P,
  PTE_PCD,
  PTE_PS,
  PTE_PWT,
  PTE_RW,
  PTE_US,
  pteHi,
  pteLo,
  SharedInfoLayout,
  UVMF_INVLPG,
  VIRQ_DEBUG,
  VIRQ_DOM_EXC,
  VIRQ_TIMER,
  XenErrno,
} from "@pvkit/hypercall";
import * as fc from "fast-check";
import { expectModel, noThrow } from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

const EINVAL = -XenErrno.EINVAL;
const EPERM = -XenErrno.EPERM;
const EBUSY = -XenErrno.EBUSY;
const ESRCH = -XenErrno.ESRCH;
const ENOSYS = -XenErrno.ENOSYS;
const ENOENT = -XenErrno.ENOENT;
const EEXIST = -XenErrno.EEXIST;
const ENOSPC = -XenErrno.ENOSPC;

/** Pool frames the model tracks: pfn 1..POOL of the guest. */
const POOL = 10;
const PAGES = 32;
const MAX_PORTS = 8;

const W = 7; // PGT_writable_page
const XEN_FIRST = 256;
const XEN_LAST = 271;

// ── The case ──────────────────────────────────────────────────────────────────────

/**
 * Where an entry points: a pool pfn (1..POOL), the shared-info page, a frame of another
 * domain, Xen's frame 0, a frame beyond machine memory.
 */
type Target = number | "si" | "foreign" | "xen" | "beyond";

/** One `mmu_update` request. */
interface Update {
  readonly table: number | "foreign";
  readonly slot: number;
  /** null clears the entry. */
  readonly target: Target | null;
  readonly rw: boolean;
  /** Extra flag bits (hostile: PS, G, PCD, PWT) or 0. */
  readonly extra: number;
  /** The command in the low 3 bits of ptr (0 normal; 1 MACHPHYS; 4..7 unknown). */
  readonly cmd: number;
}

/** One step of a `hypercall-tree` case. */
export type HypercallStep =
  | { readonly k: "batch"; readonly updates: readonly Update[]; readonly foreigndom: number | null }
  | { readonly k: "pin"; readonly level: number; readonly pfn: Target }
  | { readonly k: "unpin"; readonly pfn: Target }
  | { readonly k: "baseptr"; readonly pfn: Target }
  | {
      readonly k: "uvm";
      readonly idx: readonly [number, number, number, number];
      readonly target: Target | null;
      readonly rw: boolean;
      readonly extra: number;
    }
  | { readonly k: "ipi"; readonly vcpu: number }
  | { readonly k: "virq"; readonly virq: number; readonly vcpu: number }
  | { readonly k: "unbound"; readonly remote: "self" | "other" | "none" }
  | { readonly k: "interdomain"; readonly port: number }
  | { readonly k: "send" | "unmask" | "close" | "mask"; readonly port: number }
  | { readonly k: "timer"; readonly deadline: number; readonly stop: boolean }
  | { readonly k: "time"; readonly advance: number };

/** A `hypercall-tree` case. */
export interface HypercallCase {
  readonly prebuilt: boolean;
  readonly steps: readonly HypercallStep[];
}

const pfnArb = fc.integer({ min: 1, max: POOL });
const targetArb: fc.Arbitrary<Target> = fc.oneof(
  { weight: 12, arbitrary: pfnArb },
  { weight: 1, arbitrary: fc.constantFrom<Target>("si", "foreign", "xen", "beyond") },
);
const slotArb = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 3 }) },
  fc.constantFrom(255, 256, LINEAR_PT_XEN_SLOT, 271, 272, 511),
);
const extraArb = fc.oneof(
  { weight: 10, arbitrary: fc.constant(0) },
  fc.constantFrom(PTE_PS, PTE_G, PTE_PCD, PTE_PWT, PTE_D),
);
const updateArb: fc.Arbitrary<Update> = fc.record({
  table: fc.oneof({ weight: 15, arbitrary: pfnArb }, fc.constant("foreign" as const)),
  slot: slotArb,
  target: fc.oneof({ weight: 8, arbitrary: targetArb }, fc.constant(null)),
  rw: fc.boolean(),
  extra: extraArb,
  cmd: fc.oneof({ weight: 15, arbitrary: fc.constant(0) }, fc.constantFrom(1, 4, 5, 7)),
});
const portArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 5 }) },
  fc.constantFrom(0, 7, 8, 4096, -1),
);

const stepArb: fc.Arbitrary<HypercallStep> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      k: fc.constant("batch" as const),
      updates: fc.array(updateArb, { minLength: 1, maxLength: 3 }),
      foreigndom: fc.oneof(
        { weight: 20, arbitrary: fc.constant(null) },
        fc.constantFrom(1, 2, 7, DOMID_IO),
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("pin" as const),
      level: fc.integer({ min: 1, max: 4 }),
      pfn: targetArb,
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("unpin" as const), pfn: targetArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("baseptr" as const), pfn: targetArb }) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("uvm" as const),
      idx: fc.tuple(
        fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, fc.constantFrom(1, 257)),
        fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.constant(1)),
        fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.constant(1)),
        fc.integer({ min: 0, max: 3 }),
      ),
      target: fc.oneof({ weight: 8, arbitrary: targetArb }, fc.constant(null)),
      rw: fc.boolean(),
      extra: extraArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant("ipi" as const), vcpu: fc.constantFrom(0, 0, 0, 3) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("virq" as const),
      virq: fc.constantFrom(VIRQ_TIMER, VIRQ_TIMER, VIRQ_DEBUG, VIRQ_DOM_EXC, 24, 99),
      vcpu: fc.constantFrom(0, 0, 0, 1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("unbound" as const),
      remote: fc.constantFrom("self" as const, "other" as const, "none" as const),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("interdomain" as const), port: portArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constantFrom("send" as const, "unmask" as const, "close" as const, "mask" as const),
      port: portArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("timer" as const),
      deadline: fc.oneof(fc.integer({ min: 0, max: 5_000_000 }), fc.constantFrom(0, 1, 2 ** 53)),
      stop: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("time" as const),
      advance: fc.integer({ min: 0, max: 3_000_000 }),
    }),
  },
);

/** The generator of `hypercall-tree` cases. */
export const hypercallTreeArbitrary: fc.Arbitrary<HypercallCase> = fc.record({
  prebuilt: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false)),
  steps: fc.array(stepArb, { minLength: 1, maxLength: 30 }),
});

// ── The MMU model ─────────────────────────────────────────────────────────────────

/** One frame as the model sees it: Xen's `page_info` (count, type, type count, flags). */
interface MFrame {
  count: number;
  type: number;
  tc: number;
  valid: boolean;
  pinned: boolean;
  linear: number;
  special: boolean;
  /** Page contents: slot → [lo, hi] for non-zero entries. */
  entries: Map<number, [number, number]>;
}

/** The model's state; copied before each request so a failure is simply dropped. */
interface MState {
  /** Index: pool pfn 1..POOL, POOL + 1 = the shared-info page. */
  frames: MFrame[];
  cr3: number;
}

const SI = POOL + 1;

/** Puts `saved` back into `s` in place, so references to frame objects stay valid. */
function restoreState(s: MState, saved: MState): void {
  s.cr3 = saved.cr3;
  for (let i = 0; i < s.frames.length; i++) Object.assign(s.frames[i]!, saved.frames[i]!);
}

function cloneState(s: MState): MState {
  return {
    cr3: s.cr3,
    frames: s.frames.map((f) => ({
      ...f,
      entries: new Map([...f.entries].map(([k, v]) => [k, [v[0], v[1]]])),
    })),
  };
}

/** The model's view of machine frames: mfn ↔ model index. */
interface Geometry {
  readonly mfnOf: (i: number) => number;
  /** Model index of a machine frame, or -1 for one the model does not own. */
  readonly indexOf: (mfn: number) => number;
  /** Whether a machine frame exists at all. */
  readonly valid: (mfn: number) => boolean;
}

const isTable = (t: number): boolean => t >= 1 && t <= 4;
const frameOf = (lo: number, hi: number): number => (hi & 0xfffff) * 2 ** 20 + (lo >>> 12);

/** The PV MMU rules, written from reference/xen-pv.md §2 and Xen's mm.c. */
class MmuModel {
  constructor(
    readonly g: Geometry,
    readonly s: MState,
  ) {}

  private f(i: number): MFrame {
    return this.s.frames[i]!;
  }

  getType(i: number, t: number): number {
    const f = this.f(i);
    if (f.tc === 0) {
      if (f.special && t !== W) return EINVAL;
      if (f.type === t && f.valid) {
        f.tc = 1;
        return 0;
      }
      f.type = t;
      f.valid = false;
      f.tc = 1;
      if (isTable(t)) {
        const rc = this.validate(i, t);
        if (rc < 0) return rc; // the caller drops the whole state copy
      }
      f.valid = true;
      return 0;
    }
    if (f.type !== t || !f.valid) return EINVAL;
    f.tc++;
    return 0;
  }

  putType(i: number): void {
    const f = this.f(i);
    if (f.tc === 0) return;
    if (f.tc === 1 && isTable(f.type) && f.valid) {
      f.tc = 0;
      f.valid = false;
      for (const [slot, [lo, hi]] of [...f.entries]) {
        if (f.type === 4 && slot >= XEN_FIRST && slot <= XEN_LAST) continue;
        if (lo & PTE_P) this.putEntry(f.type, lo, hi, i);
      }
      return;
    }
    f.tc--;
  }

  getPage(i: number): boolean {
    if (i < 0) return false;
    this.f(i).count++;
    return true;
  }

  putPage(i: number): void {
    if (i >= 0 && this.f(i).count > 0) this.f(i).count--;
  }

  validate(i: number, level: number): number {
    const f = this.f(i);
    const slots = [...f.entries.keys()].sort((a, b) => a - b);
    for (const slot of slots) {
      if (level === 4 && slot >= XEN_FIRST && slot <= XEN_LAST) continue;
      const [lo, hi] = f.entries.get(slot)!;
      if (!(lo & PTE_P)) continue;
      const rc = level === 1 ? this.getL1(lo, hi) : this.getLN(level, lo, hi, i);
      if (rc < 0) return rc;
    }
    if (level === 4) {
      // Xen owns L4 slots 256..271 and installs its linear self map in slot 258.
      for (let s = XEN_FIRST; s <= XEN_LAST; s++) f.entries.delete(s);
      const m = this.g.mfnOf(i);
      f.entries.set(LINEAR_PT_XEN_SLOT, [pteLo(m, PTE_P | PTE_RW | PTE_A | PTE_D) >>> 0, pteHi(m)]);
    }
    return 0;
  }

  getL1(lo: number, hi: number): number {
    if (lo & L1_DISALLOW_LO) return EINVAL;
    const mfn = frameOf(lo, hi);
    if (!this.g.valid(mfn)) return EPERM;
    const t = this.g.indexOf(mfn);
    if (t < 0) return EBUSY;
    this.getPage(t);
    if (lo & PTE_RW && this.getType(t, W) < 0) return EBUSY;
    return 0;
  }

  putL1(lo: number, hi: number): void {
    if (!(lo & PTE_P)) return;
    const t = this.g.indexOf(frameOf(lo, hi));
    if (t < 0) return;
    if (lo & PTE_RW) this.putType(t);
    this.putPage(t);
  }

  getLN(level: number, lo: number, hi: number, table: number): number {
    if (lo & BASE_DISALLOW_LO) return EINVAL;
    const mfn = frameOf(lo, hi);
    if (!this.g.valid(mfn)) return EINVAL;
    const t = this.g.indexOf(mfn);
    let rc = EINVAL;
    if (t >= 0) {
      const saved = cloneState(this.s);
      this.getPage(t);
      rc = this.getType(t, level - 1);
      if (rc < 0)
        restoreState(this.s, saved); // a failed promotion leaves no trace
      else return 0;
    }
    if (rc === EINVAL && this.linear(level, lo, t, table)) return 0;
    return rc;
  }

  /** A read-only same-level link (XSA-240 single-level rules), or a self map. */
  private linear(level: number, lo: number, t: number, table: number): boolean {
    if (lo & PTE_RW) return false;
    if (t === table) return true;
    if (t < 0) return false;
    const tf = this.f(t);
    const bf = this.f(table);
    if (bf.linear < 0) return false; // the table is itself a linear target
    if (tf.linear > 0) return false; // the target holds linear entries
    if (tf.tc === 0 || tf.type !== level || !tf.valid) return false;
    tf.count++;
    bf.linear++;
    tf.linear--;
    tf.tc++;
    return true;
  }

  putEntry(level: number, lo: number, hi: number, table: number): void {
    if (level === 1) {
      this.putL1(lo, hi);
      return;
    }
    if (!(lo & PTE_P)) return;
    const t = this.g.indexOf(frameOf(lo, hi));
    if (t === table || t < 0) return;
    if (this.f(t).type === this.f(table).type) {
      this.f(t).linear++;
      this.f(table).linear--;
    }
    this.putType(t);
    this.putPage(t);
  }

  private changed(olo: number, ohi: number, lo: number, hi: number): boolean {
    return (
      ((olo ^ lo) & ~FASTPATH_WHITELIST_LO) !== 0 || ((ohi ^ hi) & ~FASTPATH_WHITELIST_HI) !== 0
    );
  }

  private write(i: number, slot: number, lo: number, hi: number): void {
    if (lo === 0 && hi === 0) this.f(i).entries.delete(slot);
    else this.f(i).entries.set(slot, [lo >>> 0, hi >>> 0]);
  }

  modEntry(i: number, level: number, slot: number, lo: number, hi: number): number {
    if (level === 4 && slot >= XEN_FIRST && slot <= XEN_LAST) return EINVAL;
    const [olo, ohi] = this.f(i).entries.get(slot) ?? [0, 0];
    if (lo & PTE_P) {
      if (lo & (level === 1 ? L1_DISALLOW_LO : BASE_DISALLOW_LO)) return EINVAL;
      if (olo & PTE_P && !this.changed(olo, ohi, lo, hi)) {
        this.write(i, slot, lo, hi);
        return 0;
      }
      const rc = level === 1 ? this.getL1(lo, hi) : this.getLN(level, lo, hi, i);
      if (rc < 0) return rc;
    }
    this.write(i, slot, lo, hi);
    this.putEntry(level, olo, ohi, i);
    return 0;
  }

  /** One `mmu_update` request on table `i` (-1: a frame the domain does not own). */
  update(cmd: number, i: number, slot: number, lo: number, hi: number): number {
    if (cmd === MMU_MACHPHYS_UPDATE) return i < 0 ? EINVAL : 0;
    if (cmd !== MMU_NORMAL_PT_UPDATE) return ENOSYS;
    if (i < 0) return EINVAL;
    const f = this.f(i);
    if (f.tc > 0 && f.valid) {
      if (isTable(f.type)) return this.modEntry(i, f.type, slot, lo, hi);
      if (f.type === W) {
        this.write(i, slot, lo, hi);
        return 0;
      }
      return EINVAL;
    }
    if (this.getType(i, W) < 0) return EINVAL;
    this.write(i, slot, lo, hi);
    this.putType(i);
    return 0;
  }

  pin(level: number, mfn: number): number {
    if (!this.g.valid(mfn)) return EINVAL;
    const i = this.g.indexOf(mfn);
    if (i < 0) return EINVAL;
    this.getPage(i);
    const rc = this.getType(i, level);
    if (rc < 0) return rc;
    if (this.f(i).pinned) return EINVAL;
    this.f(i).pinned = true;
    return 0;
  }

  unpin(mfn: number): number {
    const i = this.g.valid(mfn) ? this.g.indexOf(mfn) : -1;
    if (i < 0 || !this.f(i).pinned) return EINVAL;
    this.f(i).pinned = false;
    this.putType(i);
    this.putPage(i);
    return 0;
  }

  baseptr(mfn: number): number {
    const old = this.s.cr3;
    if (old >= 0 && this.g.mfnOf(old) === mfn) return 0;
    if (!this.g.valid(mfn)) return EINVAL;
    const i = this.g.indexOf(mfn);
    if (i < 0) return EINVAL;
    const f = this.f(i);
    if (f.type !== 4 || !f.pinned || !f.valid) return EINVAL;
    this.getPage(i);
    const rc = this.getType(i, 4);
    if (rc < 0) return rc;
    this.s.cr3 = i;
    if (old >= 0) {
      this.putType(old);
      this.putPage(old);
    }
    return 0;
  }

  /** `update_va_mapping`: walk the loaded tree to the L1 entry of `idx`. */
  uvm(idx: readonly number[], lo: number, hi: number): number {
    if (idx[0]! >= 256) return EINVAL; // non-canonical / Xen's range
    if (this.s.cr3 < 0) return EINVAL;
    let table = this.s.cr3;
    for (let level = 4; level >= 2; level--) {
      const [elo, ehi] = this.f(table).entries.get(idx[4 - level]!) ?? [0, 0];
      if (!(elo & PTE_P)) return EINVAL;
      const t = this.g.indexOf(frameOf(elo, ehi));
      if (t < 0) return EINVAL;
      table = t;
    }
    const f = this.f(table);
    if (f.type !== 1 || f.tc === 0) return EINVAL;
    return this.modEntry(table, 1, idx[3]!, lo, hi);
  }
}

// ── The run ───────────────────────────────────────────────────────────────────────

/** Options of {@link makeHypercallTreeTarget} (tests use them to prove the checks can fail). */
export interface HypercallTreeOptions {
  /** Hypervisor options (a test can turn a safety rule off to see the target notice). */
  readonly hypervisor?: HypervisorOptions;
  /** Called on the fresh hypervisor before the case runs (a test breaks a rule with it). */
  readonly mutate?: (hv: Hypervisor) => void;
}

/**
 * Outcomes seen per step kind (`"pin:0"`, `"batch:-22"`, …), summed over every case run in
 * this process: shows that success paths, not only refusals, are exercised.
 */
export const hypercallTreeOutcomes = new Map<string, number>();
const note = (kind: string, rc: number): void => {
  const key = `${kind}:${rc}`;
  hypercallTreeOutcomes.set(key, (hypercallTreeOutcomes.get(key) ?? 0) + 1);
};

/** Builds the `hypercall-tree` target. */
export function makeHypercallTreeTarget(
  options: HypercallTreeOptions = {},
): FuzzTarget<HypercallCase> {
  return {
    name: "hypercall-tree",
    description:
      "PV MMU hypercalls building real page-table trees (mmu_update, pin/unpin, baseptr, update_va_mapping) plus event channels and timers, against models of page types, references and ports",
    kind: "hypercall",
    arbitrary: hypercallTreeArbitrary,
    run: (c) => runHypercallTree(c, options),
  };
}

/** The `hypercall-tree` target. */
export const hypercallTreeTarget: FuzzTarget<HypercallCase> = makeHypercallTreeTarget();

function runHypercallTree(c: HypercallCase, options: HypercallTreeOptions): void {
  const hv = new Hypervisor({ machinePages: 96, maxPorts: MAX_PORTS, ...options.hypervisor });
  options.mutate?.(hv);
  const dom = hv.createDomain({ pages: PAGES });
  const other = hv.createDomain({ pages: 4 });
  const v = dom.vcpus[0]!;
  const port = new HypercallPort(hv, v);
  const phys = new GuestPhys(hv, dom);
  const client = new HypercallClient(port, phys, (PAGES - 8) * PAGE_SIZE, 8);
  const machinePages = hv.frames.frames;

  const mfnOf = (i: number): number => (i === SI ? dom.sharedInfoMa / PAGE_SIZE : dom.p2m[i]!);
  const byMfn = new Map<number, number>();
  for (let i = 1; i <= POOL; i++) byMfn.set(mfnOf(i), i);
  byMfn.set(mfnOf(SI), SI);
  const ownedOutsidePool = new Set<number>();
  for (let p = 0; p < PAGES; p++) if (!byMfn.has(dom.p2m[p]!)) ownedOutsidePool.add(dom.p2m[p]!);
  const geometry: Geometry = {
    mfnOf,
    indexOf: (m) => byMfn.get(m) ?? -1,
    valid: (m) => Number.isInteger(m) && m >= 0 && m < machinePages,
  };
  const mfnTarget = (t: Target): number =>
    t === "si"
      ? mfnOf(SI)
      : t === "foreign"
        ? other.p2m[1]!
        : t === "xen"
          ? 0
          : t === "beyond"
            ? machinePages + 5
            : mfnOf(t);

  const baseline = (i: number) => hv.frames.info(mfnOf(i));
  const state: MState = { cr3: -1, frames: [] };
  for (let i = 0; i <= SI; i++) {
    const info = i === 0 ? null : baseline(i);
    state.frames.push({
      count: 0,
      type: info?.type ?? 0,
      tc: info?.typeCount ?? 0,
      valid: info?.validated ?? false,
      pinned: false,
      linear: 0,
      special: i === SI,
      entries: new Map(),
    });
  }
  const baseCount = Array.from({ length: SI + 1 }, (_, i) => (i === 0 ? 0 : baseline(i).count));
  const model = new MmuModel(geometry, state);
  const outsideCounts = [...ownedOutsidePool].map((m) => hv.frames.info(m));

  /** Runs one model request on a copy; keeps the copy only when it succeeds. */
  const attempt = (f: (m: MmuModel) => number): number => {
    const saved = cloneState(model.s);
    const rc = f(model);
    if (rc < 0) restoreState(model.s, saved);
    return rc;
  };

  const compare = (what: string): void => {
    for (let i = 1; i <= SI; i++) {
      const mf = model.s.frames[i]!;
      const info = hv.frames.info(mfnOf(i));
      const problems: string[] = [];
      if (info.count !== baseCount[i]! + mf.count)
        problems.push(`count ${info.count} vs ${baseCount[i]! + mf.count}`);
      if (info.typeCount !== mf.tc) problems.push(`type count ${info.typeCount} vs ${mf.tc}`);
      if (mf.tc > 0 && info.type !== mf.type) problems.push(`type ${info.type} vs ${mf.type}`);
      if (mf.tc > 0 && info.validated !== mf.valid)
        problems.push(`validated ${info.validated} vs ${mf.valid}`);
      if (info.pinned !== mf.pinned) problems.push(`pinned ${info.pinned} vs ${mf.pinned}`);
      if (info.linear !== mf.linear) problems.push(`linear ${info.linear} vs ${mf.linear}`);
      if (problems.length > 0) {
        throw new FuzzFinding(
          "model",
          `${what}: frame ${i === SI ? "shared-info" : `pfn ${i}`} (mfn ${mfnOf(i)}): ${problems.join(", ")}`,
        );
      }
      if (i === SI) continue;
      // Page contents, entry by entry.
      const base = mfnOf(i) * PAGE_SIZE;
      const view = new DataView(
        hv.machineBytes.buffer,
        hv.machineBytes.byteOffset + base,
        PAGE_SIZE,
      );
      for (let s = 0; s < 512; s++) {
        const lo = view.getUint32(8 * s, true);
        const hi = view.getUint32(8 * s + 4, true);
        const [mlo, mhi] = mf.entries.get(s) ?? [0, 0];
        if (lo !== mlo || hi !== mhi) {
          throw new FuzzFinding(
            "model",
            `${what}: pfn ${i} slot ${s} holds ${hi.toString(16)}:${lo.toString(16)}, the model ${mhi.toString(16)}:${mlo.toString(16)}`,
          );
        }
      }
    }
    const cr3 = model.s.cr3 < 0 ? -1 : mfnOf(model.s.cr3);
    expectModel(v.cr3 === cr3, () => `${what}: cr3 is ${v.cr3}, the model ${cr3}`);
    // Nothing outside the pool changed its references.
    let k = 0;
    for (const m of ownedOutsidePool) {
      const now = hv.frames.info(m);
      const was = outsideCounts[k++]!;
      expectModel(
        now.count === was.count && now.typeCount === was.typeCount,
        () =>
          `${what}: frame ${m} outside the pool changed (count ${was.count}→${now.count}, type count ${was.typeCount}→${now.typeCount})`,
      );
    }
    const o = hv.frames.info(other.p2m[1]!);
    expectModel(
      o.count === 1 && o.typeCount === 0,
      () => `${what}: the other domain's frame gained references (${o.count}/${o.typeCount})`,
    );
  };

  const call = <T>(what: string, f: () => T): T => noThrow(what, f);

  const LINK = PTE_P | PTE_US | PTE_A;
  const entryFor = (t: Target | null, rw: boolean, extra: number): [number, number] => {
    if (t === null) return [0, 0];
    const m = mfnTarget(t);
    return [pteLo(m, LINK | (rw ? PTE_RW : 0) | extra) >>> 0, pteHi(m)];
  };

  if (c.prebuilt) {
    // L4(1) → L3(2) → L2(3) → L1(4) in slot 0, built with plain writes, then pin + load.
    const links: Array<[number, number]> = [
      [3, 4],
      [2, 3],
      [1, 2],
    ];
    for (const [tbl, tgt] of links) {
      const [lo, hi] = entryFor(tgt, true, 0);
      call("prebuild", () => client.queueUpdate(mfnOf(tbl) * PAGE_SIZE, lo, hi));
      const rc = attempt((m) => m.update(0, tbl, 0, lo, hi));
      if (rc !== 0) throw new Error(`prebuild model failed ${rc}`);
    }
    const rc = call("prebuild", () => client.flushUpdates());
    expectModel(
      rc === 0,
      () => `prebuild: mmu_update of three table links failed with ${rc} (${hv.lastError})`,
    );
    const prc = call("prebuild", () => client.pin(4, mfnOf(1)));
    expectModel(
      prc === attempt((m) => m.pin(4, mfnOf(1))),
      () => `prebuild: pin L4 gave ${prc} (${hv.lastError})`,
    );
    const brc = call("prebuild", () => client.newBaseptr(mfnOf(1)));
    expectModel(
      brc === attempt((m) => m.baseptr(mfnOf(1))),
      () => `prebuild: new_baseptr gave ${brc}`,
    );
    compare("prebuild");
  }

  // Event-channel model.
  type PortKind = "ipi" | "virq" | "unbound" | "inter";
  const ports = new Map<
    number,
    { kind: PortKind; virq?: number; remote?: number; peer?: number }
  >();
  const pending = new Set<number>();
  const masked = new Set<number>();
  const virqBound = new Map<number, number>();
  const lowestFree = (): number => {
    for (let p = 1; p < MAX_PORTS; p++) if (!ports.has(p)) return p;
    return -1;
  };
  const setPending = (p: number): void => {
    pending.add(p);
  };
  const maskedInMemory = (p: number): boolean => {
    const at = dom.sharedInfoMa + SharedInfoLayout.evtchn_mask;
    return (hv.machineBytes[at + (p >>> 3)]! & (1 << (p & 7))) !== 0;
  };
  const compareEvents = (what: string): void => {
    for (let p = 1; p < MAX_PORTS; p++) {
      const got = client.isPending(p);
      expectModel(
        got === pending.has(p),
        () => `${what}: port ${p} pending=${got}, the model ${pending.has(p)}`,
      );
      const gm = maskedInMemory(p);
      expectModel(
        gm === masked.has(p),
        () => `${what}: port ${p} masked=${gm}, the model ${masked.has(p)}`,
      );
      const st = dom.portState[p]!;
      expectModel(
        (st !== 0) === ports.has(p),
        () => `${what}: port ${p} state ${st}, the model ${ports.get(p)?.kind ?? "free"}`,
      );
    }
  };

  // Timer model.
  let deadline = -1;
  let fired = 0;
  const timerEvents = (): number => v.timerEvents;
  const startEvents = timerEvents();
  const timerCheck = (what: string): void => {
    const now = hv.clock.nowNs();
    if (deadline >= 0 && now >= deadline) {
      // Fires once, at or after its deadline; VIRQ_TIMER goes to its port.
      deadline = -1;
      fired++;
      const p = virqBound.get(VIRQ_TIMER);
      if (p !== undefined) setPending(p);
    }
    const got = timerEvents() - startEvents;
    expectModel(
      got === fired,
      () => `${what}: the timer fired ${got} time(s), the model ${fired} (now ${now} ns)`,
    );
  };

  for (let si = 0; si < c.steps.length; si++) {
    const s = c.steps[si]!;
    const what = `step ${si} (${s.k})`;
    switch (s.k) {
      case "batch": {
        // A batch: requests apply in order and stop at the first failure (*pdone counts).
        let expectRc = 0;
        let done = 0;
        const fd = s.foreigndom;
        const fdErr =
          fd === null
            ? 0
            : fd === DOMID_IO
              ? EPERM
              : hv.domainById(fd) === null
                ? ESRCH
                : fd === dom.id
                  ? 0
                  : EPERM;
        for (const u of s.updates) {
          const tblMfn = u.table === "foreign" ? other.p2m[2]! : mfnOf(u.table);
          const [lo, hi] = entryFor(u.target, u.rw, u.extra);
          call(what, () => client.queueUpdate(tblMfn * PAGE_SIZE + u.slot * 8 + u.cmd, lo, hi));
        }
        const rc = call(what, () => client.flushUpdates(fd ?? DOMID_SELF));
        if (fdErr < 0) expectRc = fdErr;
        else {
          for (const u of s.updates) {
            const [lo, hi] = entryFor(u.target, u.rw, u.extra);
            const i = u.table === "foreign" ? -1 : u.table;
            const r = attempt((m) => m.update(u.cmd, i, u.slot, lo, hi));
            if (r < 0) {
              expectRc = r;
              break;
            }
            done++;
          }
        }
        note("batch", rc);
        expectModel(
          rc === expectRc,
          () =>
            `${what}: mmu_update ${JSON.stringify(s.updates)} returned ${rc} (${hv.lastError}), the model expects ${expectRc}`,
        );
        if (fdErr === 0) {
          expectModel(
            client.lastDone === done,
            () => `${what}: *pdone ${client.lastDone}, the model ${done}`,
          );
        }
        compare(what);
        break;
      }
      case "pin": {
        const m = mfnTarget(s.pfn);
        const rc = call(what, () => client.mmuext(MMUEXT_PIN_L1_TABLE + s.level - 1, m));
        const want = attempt((x) => x.pin(s.level, m));
        note("pin", rc);
        expectModel(
          rc === want,
          () =>
            `${what}: pin L${s.level} of ${String(s.pfn)} returned ${rc} (${hv.lastError}), the model ${want}`,
        );
        compare(what);
        break;
      }
      case "unpin": {
        const m = mfnTarget(s.pfn);
        const rc = call(what, () => client.unpin(m));
        const want = attempt((x) => x.unpin(m));
        note("unpin", rc);
        expectModel(
          rc === want,
          () =>
            `${what}: unpin of ${String(s.pfn)} returned ${rc} (${hv.lastError}), the model ${want}`,
        );
        compare(what);
        break;
      }
      case "baseptr": {
        const m = mfnTarget(s.pfn);
        const rc = call(what, () => client.newBaseptr(m));
        const want = attempt((x) => x.baseptr(m));
        note("baseptr", rc);
        expectModel(
          rc === want,
          () =>
            `${what}: new_baseptr ${String(s.pfn)} returned ${rc} (${hv.lastError}), the model ${want}`,
        );
        compare(what);
        break;
      }
      case "uvm": {
        const [a, b, cc, d] = s.idx;
        const va = a * 2 ** 39 + b * 2 ** 30 + cc * 2 ** 21 + d * 2 ** 12;
        const [lo, hi] = entryFor(s.target, s.rw, s.extra);
        const rc = call(what, () => client.updateVaMapping(va, lo, hi, UVMF_INVLPG));
        const want = attempt((x) => x.uvm(s.idx, lo, hi));
        note("uvm", rc);
        expectModel(
          rc === want,
          () =>
            `${what}: update_va_mapping(${s.idx.join("/")}) returned ${rc} (${hv.lastError}), the model ${want}`,
        );
        compare(what);
        break;
      }
      case "ipi": {
        const rc = call(what, () => client.bindIpi(s.vcpu));
        let want: number;
        if (s.vcpu >= dom.vcpus.length) want = ENOENT;
        else {
          want = lowestFree();
          if (want < 0) want = ENOSPC;
          else ports.set(want, { kind: "ipi" });
        }
        expectModel(rc === want, () => `${what}: bind_ipi returned ${rc}, the model ${want}`);
        compareEvents(what);
        break;
      }
      case "virq": {
        const rc = call(what, () => client.bindVirq(s.virq, s.vcpu));
        let want: number;
        const perVcpu =
          s.virq === VIRQ_TIMER || s.virq === VIRQ_DEBUG || s.virq === 7 || s.virq === 13;
        if (s.virq >= 24) want = EINVAL;
        else if (!perVcpu && s.vcpu !== 0) want = EINVAL;
        else if (s.vcpu >= dom.vcpus.length) want = ENOENT;
        else if (virqBound.has(s.virq)) want = EEXIST;
        else {
          want = lowestFree();
          if (want < 0) want = ENOSPC;
          else {
            ports.set(want, { kind: "virq", virq: s.virq });
            virqBound.set(s.virq, want);
          }
        }
        expectModel(
          rc === want,
          () => `${what}: bind_virq ${s.virq} returned ${rc}, the model ${want}`,
        );
        compareEvents(what);
        break;
      }
      case "unbound": {
        const remote = s.remote === "self" ? dom.id : s.remote === "other" ? other.id : 77;
        const rc = call(what, () => client.allocUnbound(remote));
        let want: number;
        if (s.remote === "none") want = ESRCH;
        else {
          want = lowestFree();
          if (want < 0) want = ENOSPC;
          else ports.set(want, { kind: "unbound", remote });
        }
        expectModel(rc === want, () => `${what}: alloc_unbound returned ${rc}, the model ${want}`);
        compareEvents(what);
        break;
      }
      case "interdomain": {
        const rc = call(what, () => client.bindInterdomain(dom.id, s.port));
        const r = ports.get(s.port);
        let want: number;
        if (r === undefined || r.kind !== "unbound" || r.remote !== dom.id) want = EINVAL;
        else {
          want = lowestFree();
          if (want < 0) want = ENOSPC;
          else {
            ports.set(want, { kind: "inter", peer: s.port });
            ports.set(s.port, { kind: "inter", peer: want });
          }
        }
        expectModel(
          rc === want,
          () => `${what}: bind_interdomain to port ${s.port} returned ${rc}, the model ${want}`,
        );
        compareEvents(what);
        break;
      }
      case "mask":
        if (s.port >= 0 && s.port < 4096) {
          call(what, () => client.maskPort(s.port));
          if (s.port < MAX_PORTS) masked.add(s.port);
        }
        compareEvents(what);
        break;
      case "send":
      case "unmask":
      case "close": {
        const fn = s.k === "send" ? client.send : s.k === "unmask" ? client.unmask : client.close;
        const rc = call(what, () => fn.call(client, s.port));
        const p = ports.get(s.port);
        let want = 0;
        if (p === undefined) want = EINVAL;
        else if (s.k === "send") {
          if (p.kind === "ipi") setPending(s.port);
          else if (p.kind === "inter") setPending(p.peer!);
          else if (p.kind === "virq") want = EINVAL;
        } else if (s.k === "unmask") masked.delete(s.port);
        else {
          if (p.kind === "virq") virqBound.delete(p.virq!);
          if (p.kind === "inter" && p.peer !== s.port)
            ports.set(p.peer!, { kind: "unbound", remote: dom.id });
          ports.delete(s.port);
          pending.delete(s.port);
        }
        expectModel(
          rc === want,
          () => `${what}: ${s.k} of port ${s.port} returned ${rc}, the model ${want}`,
        );
        compareEvents(what);
        break;
      }
      case "timer": {
        const now = hv.clock.nowNs();
        const at = now + s.deadline;
        const rc = call(what, () =>
          s.stop ? client.stopSingleshotTimer() : client.setSingleshotTimer(at),
        );
        expectModel(rc === 0, () => `${what}: the single-shot timer hypercall returned ${rc}`);
        deadline = s.stop ? -1 : Math.max(Math.min(at, Number.MAX_SAFE_INTEGER), 1);
        call(what, () => hv.poll());
        timerCheck(what);
        compareEvents(what);
        break;
      }
      case "time": {
        const target = hv.clock.nowNs() + s.advance;
        // Stop just before the deadline first: it must not fire early.
        if (deadline > hv.clock.nowNs() && deadline - 1 <= target) {
          call(what, () => hv.runUntil(deadline - 1));
          timerCheck(`${what} (1 ns before the deadline)`);
        }
        call(what, () => hv.runUntil(target));
        timerCheck(what);
        compareEvents(what);
        break;
      }
    }
  }
  // The loaded tree still serves: a fresh data frame maps through update_va_mapping when the
  // prebuilt tree is intact, and the model agrees either way.
  const [lo, hi] = entryFor(10, false, 0);
  const rc = call("final", () => client.updateVaMapping(3 * PAGE_SIZE, lo, hi, 0));
  const want = attempt((x) => x.uvm([0, 0, 0, 3], lo, hi));
  expectModel(
    rc === want,
    () => `final update_va_mapping returned ${rc} (${hv.lastError}), the model ${want}`,
  );
  compare("final");
}
