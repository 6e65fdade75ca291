/**
 * Each pv_op does what its mode says, seen from the host's side of the wall.
 */

import {
  ECS_INTERDOMAIN,
  ECS_VIRQ,
  ManualClock,
  PGT_l4_page_table,
  PGT_writable_page,
  PTE_P,
  PTE_RW,
  pteFrame,
} from "@pvkit/hypercall";
import { describe, expect, it } from "vitest";
import { nonBlocking, type SyscallRequest, type User } from "../src/index.js";
import { boot } from "./helpers.js";

type Gen = Generator<SyscallRequest, number, number>;
const PAGE = 4096;

describe("pv_ops.mmu", () => {
  it("pv: the loaded root is a pinned, Xen-validated L4 and the tables hold machine frames", async () => {
    const vm = await boot("full-pv");
    const hv = vm.host.hypervisor;
    const seen: Record<string, unknown> = {};
    await vm.runProgram(
      nonBlocking((u: User) => {
        const va = u.mmap(PAGE);
        u.store32(va, 0x1234_5678);
        const cr3 = vm.host.vcpu.cr3; // machine frame loaded with MMUEXT_NEW_BASEPTR
        const root = hv.frames.info(cr3);
        seen.rootType = root.type;
        seen.rootPinned = root.pinned;
        // Walk the guest's own tables in machine memory: L4 slot 254 → … → the leaf.
        let table = cr3;
        for (let level = 4; level >= 1; level--) {
          const index = Math.floor(va / PAGE / 512 ** (level - 1)) % 512;
          const lo = hv.machineView.getUint32(table * PAGE + index * 8, true);
          const hi = hv.machineView.getUint32(table * PAGE + index * 8 + 4, true);
          expect(lo & PTE_P).toBe(PTE_P);
          if (level === 1) seen.leafWritable = (lo & PTE_RW) !== 0;
          table = pteFrame(lo, hi);
        }
        seen.dataType = hv.frames.info(table).type;
        seen.value = hv.machineView.getUint32(table * PAGE, true);
        seen.isMachineFrame = hv.m2p[table] !== table && hv.m2p[table]! >= 0;
        return 0;
      }),
    );
    expect(seen).toEqual({
      rootType: PGT_l4_page_table,
      rootPinned: true,
      leafWritable: true,
      dataType: PGT_writable_page,
      value: 0x1234_5678,
      isMachineFrame: true,
    });
  });

  it("shadow: the host shadows the loaded root and write-protects exactly the loaded tables", async () => {
    const vm = await boot("full-emulation");
    const shadow = vm.host.shadow!;
    const wp = vm.host.controls.writeProtect!;
    const seen: number[] = [];
    await vm.runProgram(function* (u: User): Gen {
      const va = u.mmap(PAGE);
      u.store8(va, 1);
      seen.push(shadow.root, wp[shadow.root]!, shadow.trackedFrames);
      let protectedFrames = 0;
      for (const b of wp) protectedFrames += b === 0 ? 0 : 1;
      seen.push(protectedFrames);
      const pid = yield u.fork(
        nonBlocking((c: User) => {
          c.load8(va);
          return shadow.root;
        }),
      );
      seen.push(yield u.wait(pid));
      return 0;
    });
    const [root, rootProtected, tracked, protectedFrames, childRoot] = seen;
    expect(rootProtected).toBe(1);
    // Root, and L3-L2-L1 for the text/data area and for the mmap area: 7 tables.
    expect(tracked).toBe(7);
    expect(protectedFrames).toBe(tracked);
    expect(childRoot).not.toBe(root);
  });

  it("hap: no table is write-protected, a CR3 load is not intercepted", async () => {
    const vm = await boot("hw-assist+pv-io");
    expect(vm.host.controls).toMatchObject({
      writeProtect: null,
      cr3LoadExits: false,
      nestedPaging: true,
    });
    const r = await vm.run("fork-exit", { iterations: 2 });
    expect(r.exits).toBe(0);
    // The cost moved to the TLB: a two-dimensional walk per miss.
    expect(r.walkRefs).toBe(24 * r.tlbMisses);
  });
});

describe("pv_ops.time", () => {
  it("pv: the guest's clock is the host's, read from pvclock without an exit", async () => {
    const clock = new ManualClock(5_000_000_000);
    const vm = await boot("full-pv", { clock });
    const seen: number[] = [];
    const r = await vm.runProgram(
      nonBlocking((u: User) => {
        u.measureStart();
        seen.push(u.gettimeofday(), clock.nowNs());
        clock.advance(123_456_789);
        seen.push(u.gettimeofday(), clock.nowNs());
        u.measureStop();
        return 0;
      }),
    );
    expect(r.exits).toBe(0);
    expect(Math.abs(seen[0]! - seen[1]!)).toBeLessThanOrEqual(1);
    expect(Math.abs(seen[2]! - seen[3]!)).toBeLessThanOrEqual(1);
  });

  it("emulated: HPET and PIT clocks follow the host's clock to within a tick", async () => {
    for (const time of ["hpet", "pit", "lapic"] as const) {
      const clock = new ManualClock(2_000_000_000);
      const vm = await boot({ mmu: "hap", time, irq: "pic" }, { clock });
      const seen: number[] = [];
      await vm.runProgram(
        nonBlocking((u: User) => {
          const t0 = u.gettimeofday();
          clock.advance(20_000_000); // 20 ms: the PIT counter runs out and is re-armed
          seen.push(u.gettimeofday() - t0);
          clock.advance(700_000);
          seen.push(u.gettimeofday() - t0);
          return 0;
        }),
      );
      const tick = time === "pit" ? 1_000 : 100;
      expect(Math.abs(seen[0]! - 20_000_000), time).toBeLessThanOrEqual(tick);
      expect(Math.abs(seen[1]! - 20_700_000), time).toBeLessThanOrEqual(tick);
    }
  });
});

describe("pv_ops.irq", () => {
  it("evtchn: devices are interdomain channels to the backend, the PV timer is VIRQ_TIMER", async () => {
    const vm = await boot("full-pv");
    const d = vm.host.domain;
    const states = [...d.portState].filter((s) => s !== 0);
    expect(states.filter((s) => s === ECS_INTERDOMAIN)).toHaveLength(2); // NIC, disk
    expect(states.filter((s) => s === ECS_VIRQ)).toHaveLength(1); // timer
    const up0 = vm.host.vcpu.upcalls;
    const r = await vm.run("disk-rand", { requests: 5 });
    expect(r.interrupts).toBe(5);
    expect(vm.host.vcpu.upcalls - up0).toBeGreaterThanOrEqual(5);
  });

  it("pic: every interrupt handled is acknowledged with one EOI", async () => {
    const vm = await boot("hw-assist+pv-io");
    const pic = vm.host.pic!;
    const e0 = pic.eois;
    const r = await vm.run("disk-rand", { requests: 5 });
    expect(r.interrupts).toBe(5);
    expect(pic.eois - e0).toBe(5);
    expect(pic.isr).toBe(0);
  });

  it("pic + LAPIC timer: the timer interrupt is the LAPIC's own, acknowledged at the LAPIC", async () => {
    const vm = await boot("hw-assist+pv-io");
    const lapic = vm.host.timer as { eois: number };
    const e0 = lapic.eois;
    await vm.run("sleep", { iterations: 4 });
    expect(lapic.eois - e0).toBe(4);
  });
});

describe("the network stack", () => {
  for (const config of ["full-emulation", "full-pv"] as const) {
    it(`${config}: ARP resolves the host, echo replies come back intact`, async () => {
      const vm = await boot(config);
      const r = await vm.runProgram(function* (u: User): Gen {
        const va = u.mmap(PAGE);
        u.write(va, new TextEncoder().encode("paravirtual"));
        const n = yield u.ping(va, 11);
        u.report("n", n);
        u.report("text", new TextDecoder().decode(u.read(va, 11)));
        return 0;
      });
      expect(r.results).toEqual({ n: 11, text: "paravirtual" });
      expect(vm.host.responder.stats.arpReplies).toBe(1);
      expect(vm.host.responder.stats.echoReplies).toBe(1);
    });
  }
});
