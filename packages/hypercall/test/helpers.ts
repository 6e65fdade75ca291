import { createHash } from "node:crypto";
import {
  GuestPhys,
  HypercallClient,
  HypercallPort,
  Hypervisor,
  type HypervisorOptions,
  MMU_NORMAL_PT_UPDATE,
  PAGE_SIZE,
  PTE_A,
  PTE_P,
  PTE_RW,
  PTE_US,
  pteHi,
  pteLo,
} from "@pvkit/hypercall";

/** Flags of an ordinary table link. */
export const LINK = PTE_P | PTE_RW | PTE_US | PTE_A;
/** Flags of a read-only table link (linear page tables need RO). */
export const LINK_RO = PTE_P | PTE_US | PTE_A;
/** Flags of an ordinary writable user mapping (the same bits as {@link LINK}). */
export const RW = LINK;
/** Flags of a read-only user mapping (the same bits as {@link LINK_RO}). */
export const RO = LINK_RO;

/** A PV guest wired to a hypervisor. */
export function setupPv(options: HypervisorOptions = {}, pages = 512) {
  const hv = new Hypervisor({ machinePages: 1024, ...options });
  const dom = hv.createDomain({ pages });
  const v = dom.vcpus[0]!;
  const port = new HypercallPort(hv, v);
  const phys = new GuestPhys(hv, dom);
  const client = new HypercallClient(port, phys, (pages - 8) * PAGE_SIZE, 8);
  let next = 1;
  const allocPfn = () => next++;
  const mfn = (pfn: number) => dom.p2m[pfn]!;
  /** Machine address of entry `index` of the table in pfn. */
  const slot = (tablePfn: number, index: number) => mfn(tablePfn) * PAGE_SIZE + index * 8;
  /** Applies one update now; returns the rc. */
  const update = (ptr: number, frame: number, flags: number, cmd = MMU_NORMAL_PT_UPDATE) => {
    client.queueUpdate(ptr + cmd, pteLo(frame, flags), pteHi(frame));
    return client.flushUpdates();
  };
  /** The guest's hypercall scratch pages (the guest writes them itself before each call). */
  const scratch = new Set<number>();
  for (let p = pages - 8; p < pages; p++) scratch.add(mfn(p));
  const snap = () => snapshot(hv, scratch);
  return { hv, dom, v, port, phys, client, allocPfn, mfn, slot, update, snap, scratch };
}

export type PvEnv = ReturnType<typeof setupPv>;

/**
 * Builds L4→L3→L2→L1 (slot 0 at every level: VA 0..2 MiB), pins the L4 and loads it.
 * Returns the table pfns.
 */
export function buildSpace(env: PvEnv) {
  const l4 = env.allocPfn();
  const l3 = env.allocPfn();
  const l2 = env.allocPfn();
  const l1 = env.allocPfn();
  const { client, mfn, slot } = env;
  client.queueUpdate(slot(l2, 0), pteLo(mfn(l1), LINK), pteHi(mfn(l1)));
  client.queueUpdate(slot(l3, 0), pteLo(mfn(l2), LINK), pteHi(mfn(l2)));
  client.queueUpdate(slot(l4, 0), pteLo(mfn(l3), LINK), pteHi(mfn(l3)));
  const rc = client.flushUpdates();
  if (rc !== 0) throw new Error(`build failed ${rc}`);
  if (client.pin(4, mfn(l4)) !== 0) throw new Error(`pin failed ${env.hv.lastError}`);
  if (client.newBaseptr(mfn(l4)) !== 0) throw new Error(`baseptr failed ${env.hv.lastError}`);
  return { l4, l3, l2, l1 };
}

/** Snapshot of every frame's bookkeeping and all machine memory, to assert "nothing changed". */
export function snapshot(hv: Hypervisor, exclude: ReadonlySet<number> = new Set()) {
  const f = hv.frames;
  const hash = createHash("sha1");
  for (let m = 0; m < f.frames; m++) {
    if (!exclude.has(m)) hash.update(hv.machineBytes.subarray(m * PAGE_SIZE, (m + 1) * PAGE_SIZE));
  }
  return {
    count: Array.from(f.count).join(),
    // A type (and its validated flag) with a zero type count is free: Xen leaves the stale
    // value in place and it means nothing, so only live types are compared.
    type: Array.from(f.type, (t, m) => (f.typeCount[m]! > 0 ? t : 0)).join(),
    typeCount: Array.from(f.typeCount).join(),
    flags: Array.from(f.flags, (x, m) => (f.typeCount[m]! > 0 ? x : x & ~1)).join(),
    linear: Array.from(f.linear).join(),
    memory: hash.digest("hex"),
    cr3: hv.allDomains.map((d) => d.vcpus.map((v) => v.cr3)),
  };
}
