/**
 * The guest kernel's MMU operations (its `pv_ops.mmu`) in the three modes the bench
 * compares, behind one interface so the same workload runs on each:
 *
 * - `pv`: the guest's tables hold machine frames and every change is an `mmu_update`
 *   request, batched (one exit per batch, TLB flush folded into the batch by a multicall);
 *   roots are pinned and loaded with `mmuext_op`.
 * - `shadow`: the guest writes its tables directly; writes to tracked tables trap
 *   ({@link ShadowMmu}).
 * - `hap`: the guest writes its tables directly and nothing exits ({@link HapMmu}); TLB
 *   misses cost a 2-D walk.
 *
 * Table frames come from a guest-side pool of pseudo-physical frames; the guest keeps its
 * own book of which table hangs where (as Linux keeps `struct page` for page tables).
 *
 * @module
 */

import {
  DOMID_SELF,
  Hypercall,
  MMU_NORMAL_PT_UPDATE,
  MMUEXT_TLB_FLUSH_LOCAL,
  PAGE_SIZE,
  PTE_A,
  PTE_D,
  PTE_P,
  PTE_RW,
  PTE_US,
} from "./abi.js";
import { HypercallClient } from "./client.js";
import type { Domain } from "./domain.js";
import { HapMmu } from "./emulated/hap-mmu.js";
import { ShadowMmu } from "./emulated/shadow-mmu.js";
import { XenErrno } from "./errors.js";
import { GuestPhys } from "./guest-phys.js";
import type { Hypervisor } from "./hypervisor.js";
import { isCanonical, pteHi, pteLo, ptIndex, vaTo48 } from "./paging.js";
import { HypercallPort } from "./port.js";

const ENOMEM = -XenErrno.ENOMEM;
const EINVAL = -XenErrno.EINVAL;

/** Flags of a link to a lower table. */
const LINK_FLAGS = PTE_P | PTE_RW | PTE_US | PTE_A;

/** The three MMU modes. */
export type MmuMode = "pv" | "shadow" | "hap";

/** A guest kernel's page-table operations. */
export interface GuestMmu {
  /** Which mode. */
  readonly mode: MmuMode;
  /** Exits caused so far (hypercalls, trapped writes, intercepted CR3/INVLPG/#PF). */
  readonly exits: number;
  /** Memory references made by hardware page walks on TLB misses. */
  readonly memRefs: number;
  /** Creates an empty address space. @returns its root pfn or `-errno` */
  createAddressSpace(): number;
  /** Maps `va` to guest frame `pfn` (queued in pv mode). @returns 0 or `-errno` */
  map(root: number, va: number, pfn: number, writable: boolean): number;
  /** Changes the write permission of an existing mapping. @returns 0 or `-errno` */
  protect(root: number, va: number, writable: boolean): number;
  /** Removes a mapping. @returns 0 or `-errno` */
  unmap(root: number, va: number): number;
  /** Pushes queued changes and flushes stale translations. @returns 0 or `-errno` */
  commit(): number;
  /** Loads the address space (CR3). @returns 0 or `-errno` */
  activate(root: number): number;
  /** Releases an address space that is not loaded. @returns 0 or `-errno` */
  destroy(root: number): number;
  /** Translates like the CPU. @returns the machine address or a negative `FAULT_*` */
  translate(va: number, access: number): number;
  /** Table frames in use. */
  readonly tableFrames: number;
}

/** A pool of guest frames for page tables. */
export class PfnPool {
  private readonly free: number[] = [];

  /**
   * @param first - first pfn of the pool
   * @param count - number of frames
   */
  constructor(first: number, count: number) {
    for (let p = first + count - 1; p >= first; p--) this.free.push(p);
  }

  /** @returns a frame, or -1 when empty */
  take(): number {
    return this.free.pop() ?? -1;
  }

  /** Returns a frame. */
  give(pfn: number): void {
    this.free.push(pfn);
  }

  /** Frames left. */
  get available(): number {
    return this.free.length;
  }
}

/** What the guest remembers about one table: children (levels 2..4) or mapped pfns (L1). */
interface TableBook {
  readonly level: number;
  readonly entries: Int32Array;
  readonly writable: Uint8Array;
}

abstract class GuestMmuBase implements GuestMmu {
  abstract readonly mode: MmuMode;
  abstract readonly exits: number;
  abstract readonly memRefs: number;
  protected readonly book = new Map<number, TableBook>();
  protected readonly roots = new Set<number>();
  protected dirtyTlb = false;

  constructor(protected readonly pool: PfnPool) {}

  get tableFrames(): number {
    return this.book.size;
  }

  protected abstract zeroTable(pfn: number): number;
  protected abstract writeEntry(tablePfn: number, index: number, lo: number, hi: number): number;
  protected abstract frameOf(pfn: number): number;
  abstract commit(): number;
  abstract activate(root: number): number;
  abstract translate(va: number, access: number): number;
  protected abstract releaseRoot(root: number): number;

  protected newTable(level: number): number {
    const pfn = this.pool.take();
    if (pfn < 0) return ENOMEM;
    const rc = this.zeroTable(pfn);
    if (rc < 0) {
      this.pool.give(pfn);
      return rc;
    }
    this.book.set(pfn, {
      level,
      entries: new Int32Array(512).fill(-1),
      writable: new Uint8Array(level === 1 ? 512 : 0),
    });
    return pfn;
  }

  createAddressSpace(): number {
    const root = this.newTable(4);
    if (root < 0) return root;
    this.roots.add(root);
    return root;
  }

  /**
   * Walks the book of address space `root` to the L1 for `va`, creating tables when `create`.
   *
   * @returns the L1's pfn, or `-EINVAL` for a non-canonical `va`, an unknown root or (unless
   *   `create`) a missing table, or the error of creating one
   */
  private l1For(root: number, va: number, create: boolean): number {
    if (!isCanonical(va) || !this.roots.has(root)) return EINVAL;
    const lin = vaTo48(va);
    let table = root;
    for (let level = 4; level >= 2; level--) {
      const t = this.book.get(table);
      if (t === undefined) return EINVAL;
      const i = ptIndex(lin, level);
      let child = t.entries[i]!;
      if (child < 0) {
        if (!create) return EINVAL;
        child = this.newTable(level - 1);
        if (child < 0) return child;
        const f = this.frameOf(child);
        const rc = this.writeEntry(table, i, pteLo(f, LINK_FLAGS), pteHi(f));
        if (rc < 0) return rc;
        t.entries[i] = child;
      }
      table = child;
    }
    return table;
  }

  private leaf(pfn: number, writable: boolean): [number, number] {
    const f = this.frameOf(pfn);
    const flags = PTE_P | PTE_US | PTE_A | (writable ? PTE_RW | PTE_D : 0);
    return [pteLo(f, flags), pteHi(f)];
  }

  map(root: number, va: number, pfn: number, writable: boolean): number {
    const l1 = this.l1For(root, va, true);
    if (l1 < 0) return l1;
    const t = this.book.get(l1)!;
    const i = ptIndex(vaTo48(va), 1);
    if (t.entries[i]! >= 0) this.dirtyTlb = true;
    const [lo, hi] = this.leaf(pfn, writable);
    const rc = this.writeEntry(l1, i, lo, hi);
    if (rc < 0) return rc;
    t.entries[i] = pfn;
    t.writable[i] = writable ? 1 : 0;
    return 0;
  }

  protect(root: number, va: number, writable: boolean): number {
    const l1 = this.l1For(root, va, false);
    if (l1 < 0) return l1;
    const t = this.book.get(l1)!;
    const i = ptIndex(vaTo48(va), 1);
    const pfn = t.entries[i]!;
    if (pfn < 0) return EINVAL;
    const [lo, hi] = this.leaf(pfn, writable);
    const rc = this.writeEntry(l1, i, lo, hi);
    if (rc < 0) return rc;
    t.writable[i] = writable ? 1 : 0;
    this.dirtyTlb = true;
    return 0;
  }

  unmap(root: number, va: number): number {
    const l1 = this.l1For(root, va, false);
    if (l1 < 0) return l1;
    const t = this.book.get(l1)!;
    const i = ptIndex(vaTo48(va), 1);
    if (t.entries[i]! < 0) return 0;
    const rc = this.writeEntry(l1, i, 0, 0);
    if (rc < 0) return rc;
    t.entries[i] = -1;
    this.dirtyTlb = true;
    return 0;
  }

  destroy(root: number): number {
    if (!this.roots.has(root)) return EINVAL;
    const rc = this.releaseRoot(root);
    if (rc < 0) return rc;
    this.roots.delete(root);
    this.freeTree(root);
    return 0;
  }

  private freeTree(pfn: number): void {
    const t = this.book.get(pfn);
    if (t === undefined) return;
    this.book.delete(pfn);
    if (t.level > 1) for (const c of t.entries) if (c >= 0) this.freeTree(c);
    this.pool.give(pfn);
  }
}

/** The PV mode: `mmu_update` batches through a {@link HypercallClient}. */
export class PvGuestMmu extends GuestMmuBase {
  readonly mode = "pv" as const;
  private active = -1;

  /**
   * @param client - the guest's hypercall client
   * @param pool - frames for page tables
   */
  constructor(
    readonly client: HypercallClient,
    pool: PfnPool,
  ) {
    super(pool);
  }

  get exits(): number {
    return this.client.port.exits;
  }

  get memRefs(): number {
    return this.client.port.vcpu.walkRefs;
  }

  protected frameOf(pfn: number): number {
    return this.client.phys.domain.pfnToMfn(pfn);
  }

  protected zeroTable(pfn: number): number {
    return this.client.phys.zeroPage(pfn);
  }

  protected writeEntry(tablePfn: number, index: number, lo: number, hi: number): number {
    const ma = this.frameOf(tablePfn) * PAGE_SIZE + index * 8;
    return this.client.queueUpdate(ma + MMU_NORMAL_PT_UPDATE, lo, hi);
  }

  override createAddressSpace(): number {
    const root = super.createAddressSpace();
    if (root < 0) return root;
    const rc = this.client.pin(4, this.frameOf(root));
    if (rc < 0) {
      this.roots.delete(root);
      this.book.delete(root);
      this.pool.give(root);
      return rc;
    }
    return root;
  }

  /**
   * Sends the queued updates; when mappings changed, the TLB flush rides in the same
   * multicall (one exit, as Linux's lazy MMU mode does).
   */
  commit(): number {
    const c = this.client;
    if (c.queued === 0) {
      if (!this.dirtyTlb) return 0;
      this.dirtyTlb = false;
      return c.flushTlb();
    }
    if (!this.dirtyTlb) return c.flushUpdates();
    this.dirtyTlb = false;
    const n = c.queued;
    const ext = c.prepareMmuext(MMUEXT_TLB_FLUSH_LOCAL);
    if (ext < 0) return ext;
    c.discardUpdates();
    c.mcQueue(Hypercall.mmu_update, c.batchGpa, n, c.doneGpa, DOMID_SELF);
    c.mcQueue(Hypercall.mmuext_op, ext, 1, 0, DOMID_SELF);
    const rc = c.mcFlush();
    if (rc < 0) return rc;
    const r0 = c.mcResult(0);
    if (r0 < 0) return r0;
    return c.mcResult(1);
  }

  activate(root: number): number {
    const rc = this.commit();
    if (rc < 0) return rc;
    const r = this.client.newBaseptr(this.frameOf(root));
    if (r === 0) this.active = root;
    return r;
  }

  protected releaseRoot(root: number): number {
    if (root === this.active) return EINVAL;
    const rc = this.commit();
    if (rc < 0) return rc;
    return this.client.unpin(this.frameOf(root));
  }

  translate(va: number, access: number): number {
    return this.client.port.vcpu.translate(va, access);
  }
}

/** The shadow (`"shadow"`) and hardware-assisted (`"hap"`) modes: direct table writes. */
export class EmulatedGuestMmu extends GuestMmuBase {
  private active = -1;

  /**
   * @param mode - `"shadow"` or `"hap"`
   * @param mmu - the hypervisor side
   * @param pool - frames for page tables
   */
  constructor(
    readonly mode: "shadow" | "hap",
    readonly mmu: ShadowMmu | HapMmu,
    pool: PfnPool,
  ) {
    super(pool);
  }

  private get hw(): ShadowMmu | HapMmu {
    return this.mmu;
  }

  get exits(): number {
    return this.mmu.stats.exits;
  }

  get memRefs(): number {
    return this.mmu.stats.memRefs;
  }

  protected frameOf(pfn: number): number {
    return pfn;
  }

  protected zeroTable(pfn: number): number {
    return this.hw.guestZeroPage(pfn);
  }

  protected writeEntry(tablePfn: number, index: number, lo: number, hi: number): number {
    return this.hw.guestWrite64(tablePfn * PAGE_SIZE + index * 8, lo, hi);
  }

  commit(): number {
    if (this.dirtyTlb) {
      this.dirtyTlb = false;
      this.hw.flushTlb();
    }
    return 0;
  }

  activate(root: number): number {
    this.commit();
    this.hw.loadCr3(root);
    this.active = root;
    return 0;
  }

  protected releaseRoot(root: number): number {
    return root === this.active ? EINVAL : 0;
  }

  translate(va: number, access: number): number {
    return this.hw.translate(va, access);
  }
}

/** Where {@link createGuestMmu} puts a guest's pages. */
export interface GuestMmuLayout {
  /** Pseudo-physical pages of the new domain. */
  readonly pages: number;
  /** Pages at the top of the domain that the PV hypercall client uses as scratch (pv mode). */
  readonly scratchPages: number;
  /** Frames for the guest's page tables. */
  readonly pool: PfnPool;
}

/** A guest kernel's MMU and the domain it runs in. */
export interface GuestMmuSetup {
  /** The guest's page-table operations. */
  readonly mmu: GuestMmu;
  /** The new domain. */
  readonly domain: Domain;
}

/**
 * Creates a domain on `hv` and the guest MMU of a mode for it: in `pv` mode a PV domain and a
 * {@link PvGuestMmu} whose hypercall client uses the domain's top `scratchPages` pages; in
 * `shadow` / `hap` mode an HVM domain and an {@link EmulatedGuestMmu} over a
 * {@link ShadowMmu} / {@link HapMmu}.
 *
 * @param hv - the hypervisor
 * @param mode - which MMU mode
 * @param layout - the domain's size, the PV scratch pages and the table-frame pool
 * @returns the MMU and its domain
 */
export function createGuestMmu(
  hv: Hypervisor,
  mode: MmuMode,
  layout: GuestMmuLayout,
): GuestMmuSetup {
  const { pages, scratchPages, pool } = layout;
  if (mode === "pv") {
    const domain = hv.createDomain({ pages });
    const port = new HypercallPort(hv, domain.vcpus[0]!);
    const scratch = (pages - scratchPages) * PAGE_SIZE;
    const client = new HypercallClient(port, new GuestPhys(hv, domain), scratch, scratchPages);
    return { mmu: new PvGuestMmu(client, pool), domain };
  }
  const domain = hv.createDomain({ pages, kind: "hvm" });
  const hw = mode === "shadow" ? new ShadowMmu(hv, domain) : new HapMmu(hv, domain);
  return { mmu: new EmulatedGuestMmu(mode, hw, pool), domain };
}
