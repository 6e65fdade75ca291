/**
 * Exit counts match the model exactly, in-process. Each expectation is derived from first
 * principles — what the kernel does per operation and which of those acts exit in each
 * mode — not from a previous run:
 *
 * - pv: every `mmu_update` batch, `mmuext_op`, multicall, timer or block is one hypercall
 *   exit; batches hold 32 requests (Linux `MC_ARGS`); a pending TLB flush rides in the
 *   batch's multicall; a page fault bounces through Xen (one exit, SOSP'03 §3.3).
 * - shadow: a store to a shadowed table, a CR3 load, an INVLPG, a full flush and a #PF
 *   are one exit each; tables of an address space that is not loaded are not shadowed.
 * - hap: nothing MMU-related exits.
 * - devices: every register access is one exit.
 */

import { describe, expect, it } from "vitest";
import {
  DEFAULT_MMU_BATCH,
  type GuestKernelVm,
  TLB_SINGLE_PAGE_FLUSH_CEILING,
  type WorkloadResult,
} from "../src/index.js";
import { boot } from "./helpers.js";

const B = DEFAULT_MMU_BATCH;
/** `mmu_update` exits a stream of `u` queued requests costs before its final commit. */
const autoFlushes = (u: number): number => Math.floor((u - 1) / B);

const SHADOW = { mmu: "shadow", time: "lapic", irq: "pic" } as const;
const HAP = { mmu: "hap", time: "lapic", irq: "pic" } as const;
const PV = { mmu: "pv", time: "pv", irq: "evtchn" } as const;

async function run(
  vm: GuestKernelVm,
  w: string,
  params: Record<string, number>,
): Promise<WorkloadResult> {
  const r = await vm.run(w, params);
  expect(r.exitStatus).toBe(0);
  // Both sides of the wall counted every exit of the run.
  expect(r.run.hostExits).toBe(r.run.guestExits);
  expect(r.run.rejectedExits).toBe(0);
  return r;
}

describe("pv_ops.mmu: exits per operation", () => {
  it("page-fault storm over P fresh pages", async () => {
    const P = 48;
    // shadow: a #PF exit per page, a trapped leaf store per page, and the first fault links
    // an L3, an L2 and an L1 under the loaded (shadowed) root: 3 trapped stores.
    const sh = await run(await boot(SHADOW), "pagefault", { pages: P });
    expect(sh.exitsByKind).toEqual({ page_fault: P, pte_write: P + 3 });
    // pv: a #PF bounce per page and one mmu_update per fault (the first carries the links).
    const pv = await run(await boot(PV), "pagefault", { pages: P });
    expect(pv.exitsByKind).toEqual({ page_fault: P, hypercall: P });
    expect(pv.hypercalls).toEqual({ mmu_update: P });
    // hap: none.
    expect((await run(await boot(HAP), "pagefault", { pages: P })).exits).toBe(0);
  });

  for (const P of [16, 40]) {
    it(`mmap + touch + munmap of ${P} pages`, async () => {
      const N = 3;
      const full = P > TLB_SINGLE_PAGE_FLUSH_CEILING;
      // shadow, per cycle: P faults, P trapped stores mapping, P trapped stores clearing,
      // then P INVLPGs (≤ 33 pages) or one full flush; the first cycle links 3 tables.
      const sh = await run(await boot(SHADOW), "mmap", { iterations: N, pages: P });
      expect(sh.exitsByKind).toEqual({
        page_fault: N * P,
        pte_write: N * 2 * P + 3,
        ...(full ? { tlb_flush: N } : { invlpg: N * P }),
      });
      // pv, per cycle: P bounces, P single-request mmu_updates, the P clears in batches of
      // 32 whose last is a multicall with the flush.
      const pv = await run(await boot(PV), "mmap", { iterations: N, pages: P });
      expect(pv.exitsByKind).toEqual({
        page_fault: N * P,
        hypercall: N * (P + autoFlushes(P) + 1),
      });
      expect(pv.hypercalls).toEqual({ mmu_update: N * (P + autoFlushes(P)), multicall: N });
      expect((await run(await boot(HAP), "mmap", { iterations: N, pages: P })).exits).toBe(0);
    });
  }

  it("fork + exit + wait of a populated address space", async () => {
    const P = 16;
    const params = { iterations: 1, pages: P, writes: 0, parentWrites: 0 };
    // The parent has init's text page (read-only), data page (writable) and P buffer pages.
    // shadow: P + 1 write-protecting stores in the loaded parent, one full flush, a CR3
    // load to the child and one back; the child's tables are built unloaded (no trap).
    const sh = await run(await boot(SHADOW), "fork-exit", params);
    expect(sh.exitsByKind).toEqual({ pte_write: P + 1, tlb_flush: 1, cr3_load: 2 });
    // pv: pin the child's root; queue 6 links (two regions × L3, L2, L1), P + 2 child
    // leaves and P + 1 write-protects; full batches go out as mmu_update, the last with
    // the flush as a multicall; NEW_BASEPTR to the child and back; UNPIN the dead child.
    const pv = await run(await boot(PV), "fork-exit", params);
    const U = 6 + (P + 2) + (P + 1);
    expect(pv.hypercalls).toEqual({
      mmuext_op: 4,
      multicall: 1,
      ...(autoFlushes(U) > 0 ? { mmu_update: autoFlushes(U) } : {}),
    });
    expect(pv.exits).toBe(1 + autoFlushes(U) + 1 + 2 + 1);
    expect((await run(await boot(HAP), "fork-exit", params)).exits).toBe(0);
  });

  it("copy-on-write faults after fork", async () => {
    const W = 3;
    const params = { iterations: 1, pages: 8, writes: W, parentWrites: 0 };
    const base = await run(await boot(SHADOW), "fork-exit", { ...params, writes: 0 });
    // shadow: each child write = #PF exit + trapped store of the copy + INVLPG.
    const sh = await run(await boot(SHADOW), "fork-exit", params);
    expect(sh.exits - base.exits).toBe(3 * W);
    expect(sh.exitsByKind.invlpg).toBe(W);
    // pv: each = #PF bounce + one multicall (mmu_update + TLB flush).
    const pvBase = await run(await boot(PV), "fork-exit", { ...params, writes: 0 });
    const pv = await run(await boot(PV), "fork-exit", params);
    expect(pv.exits - pvBase.exits).toBe(2 * W);
    expect(pv.hypercalls.multicall! - pvBase.hypercalls.multicall!).toBe(W);
  });

  it("exec-like build of an image", async () => {
    const N = 3;
    const T = 6;
    const D = 2;
    const params = { iterations: N, textPages: T, dataPages: D };
    // shadow, per exec: the new space is built unloaded (free), one CR3 load shadows it;
    // the entry then faults in bss (#PF + store into the shadowed L1) and the stack
    // (#PF + 3 links + the leaf): 1 + 2 + 5.
    const sh = await run(await boot(SHADOW), "exec", params);
    expect(sh.exitsByKind).toEqual({ cr3_load: N, page_fault: 2 * N, pte_write: 5 * N });
    // pv, per exec: pin, the populate batch (T + D leaves + 3 links) committed as one
    // mmu_update, NEW_BASEPTR, UNPIN of the old space, and the two faults (bounce +
    // mmu_update each).
    const pv = await run(await boot(PV), "exec", params);
    const per = 1 + autoFlushes(T + D + 3) + 1 + 1 + 1 + 2 * 2;
    expect(pv.exits).toBe(N * per);
    expect(pv.exitsByKind.page_fault).toBe(2 * N);
    expect((await run(await boot(HAP), "exec", params)).exits).toBe(0);
  });

  it("context switches in a pipe ping-pong", async () => {
    const N = 7;
    // Two switches per round trip: a CR3 load each under shadow paging, NEW_BASEPTR in pv
    // (plus UNPIN of the child that exits inside the measured part), nothing with hap.
    const sh = await run(await boot(SHADOW), "pipe", { roundTrips: N });
    expect(sh.exitsByKind).toEqual({ cr3_load: 2 * N });
    expect(sh.contextSwitches).toBe(2 * N);
    const pv = await run(await boot(PV), "pipe", { roundTrips: N });
    expect(pv.hypercalls).toEqual({ mmuext_op: 2 * N + 1 });
    const hap = await run(await boot(HAP), "pipe", { roundTrips: N });
    expect(hap.exits).toBe(0);
    expect(hap.contextSwitches).toBe(2 * N);
  });
});

describe("pv_ops.time: exits per operation", () => {
  it("gettimeofday: pvclock and the TSC are free, HPET is one MMIO read, PIT three port accesses", async () => {
    const K = 25;
    const cases = [
      [PV, {}],
      [HAP, {}], // LAPIC time: TSC clocksource
      [{ mmu: "hap", time: "hpet", irq: "pic" }, { mmio_read: K }],
      [
        { mmu: "hap", time: "pit", irq: "pic" },
        { pio_write: K, pio_read: 2 * K },
      ],
    ] as const;
    for (const [config, expected] of cases) {
      const r = await run(await boot(config), "gettimeofday", { iterations: K });
      expect(r.exitsByKind, JSON.stringify(config)).toEqual(expected);
    }
  });

  it("a short sleep: program the timer, idle, take the interrupt", async () => {
    const K = 6;
    // pv: set_timer_op + SCHEDOP_block; the VIRQ_TIMER upcall needs no exit and no EOI.
    const pv = await run(await boot(PV), "sleep", { iterations: K });
    expect(pv.hypercalls).toEqual({ set_timer_op: K, sched_op: K });
    expect(pv.exits).toBe(2 * K);
    expect(pv.interrupts).toBe(K);
    // LAPIC: TMICT write, HLT, LAPIC EOI (the TSC reads are free).
    const lapic = await run(await boot(HAP), "sleep", { iterations: K });
    expect(lapic.exitsByKind).toEqual({ mmio_write: 2 * K, halt: K });
    // HPET: 5 clock reads (before, the sleep's deadline, the programming's delta, expiry,
    // after) + 2 reads around the comparator write, HLT, PIC EOI.
    const hpet = await run(await boot({ mmu: "hap", time: "hpet", irq: "pic" }), "sleep", {
      iterations: K,
    });
    expect(hpet.exitsByKind).toEqual({ mmio_read: 7 * K, mmio_write: K, pio_write: K, halt: K });
    // PIT: 5 clock reads × (latch + 2 reads), 2 writes programming, 2 re-arming the
    // run-out counter at expiry, HLT, PIC EOI.
    const pit = await run(await boot({ mmu: "hap", time: "pit", irq: "pic" }), "sleep", {
      iterations: K,
    });
    expect(pit.exitsByKind).toEqual({ pio_read: 10 * K, pio_write: (5 + 2 + 2 + 1) * K, halt: K });
  });
});

describe("pv_ops.irq and the devices: exits per operation", () => {
  it("virtio: one notification per request, ISR read + ack per interrupt, an EOI only with the emulated controller", async () => {
    const K = 5;
    const withEvtchn = await boot("full-pv");
    const withPic = await boot("hw-assist+pv-io");
    for (const [vm, eoi] of [
      [withEvtchn, 0],
      [withPic, 1],
    ] as const) {
      const rr = await run(vm, "net-rr", { iterations: K });
      expect(rr.exits, vm.config.name).toBe(K * (1 + 2 + eoi));
      expect(rr.notifications).toBe(K);
      expect(rr.interrupts).toBe(K);
      const disk = await run(vm, "disk-rand", { requests: K });
      expect(disk.exits, vm.config.name).toBe(K * (1 + 2 + eoi));
      expect(disk.notifications).toBe(K);
    }
  });

  it("virtio-net bulk: one notification per sendmmsg batch, no interrupt", async () => {
    const vm = await boot("full-pv");
    const r = await run(vm, "net-stream", { frames: 100, batch: 25 });
    expect(r.exitsByKind).toEqual({ mmio_write: 4 });
    expect(r.interrupts).toBe(0);
    expect(r.hostResults.udpDatagrams).toBe(100);
  });

  it("RTL8139 (8139too): the per-packet register accesses of reference rtl8139.md §2", async () => {
    const K = 4;
    // TX: TSD write + read-back (2). One interrupt (TOK and ROK): ISR read, ack of the
    // non-RX bits, IMR mask write + flush, one TSD read (5). NAPI poll: ISR read, per
    // packet CR read + CAPR write + ISR read + ISR write + flush (5), the final CR read,
    // IMR unmask write + flush (9). 16 per echo, + the PIC EOI.
    const r = await run(await boot("full-emulation"), "net-rr", { iterations: K });
    expect(r.exits).toBe(K * (2 + 5 + 9 + 1));
    expect(r.exitsByKind.pio_write).toBe(K);
  });
});
