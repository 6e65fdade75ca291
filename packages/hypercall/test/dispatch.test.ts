import {
  GuestPhys,
  Hypercall,
  HypercallClient,
  HypercallPort,
  NR_HYPERCALLS,
  PAGE_SIZE,
  XENVER_version,
  XenErrno,
} from "@pvkit/hypercall";
import { describe, expect, test } from "vitest";
import { setupPv } from "./helpers.js";

/** The hypercalls the dispatcher implements, and the ones only a PV guest may make. */
const IMPLEMENTED: readonly number[] = [
  Hypercall.mmu_update,
  Hypercall.multicall,
  Hypercall.update_va_mapping,
  Hypercall.set_timer_op,
  Hypercall.xen_version,
  Hypercall.console_io,
  Hypercall.iret,
  Hypercall.vcpu_op,
  Hypercall.mmuext_op,
  Hypercall.sched_op,
  Hypercall.event_channel_op,
];
const PV_ONLY: readonly number[] = [
  Hypercall.mmu_update,
  Hypercall.update_va_mapping,
  Hypercall.iret,
  Hypercall.mmuext_op,
];

function hvmGuest() {
  const env = setupPv();
  const dom = env.hv.createDomain({ pages: 64, kind: "hvm" });
  const v = dom.vcpus[0]!;
  const port = new HypercallPort(env.hv, v);
  const client = new HypercallClient(port, new GuestPhys(env.hv, dom), 56 * PAGE_SIZE, 4);
  return { ...env, dom, hvmV: v, hvmPort: port, hvmClient: client };
}

describe("dispatch table", () => {
  test("every unimplemented or out-of-range number is -ENOSYS and changes nothing", () => {
    const env = setupPv();
    const before = env.snap();
    const unknown = [-1, 1.5, NR_HYPERCALLS, 2 ** 40, Number.NaN];
    for (let op = 0; op < NR_HYPERCALLS; op++) if (!IMPLEMENTED.includes(op)) unknown.push(op);
    for (const op of unknown) {
      expect(env.port.call(op, 1, 2, 3, 4, 5), `op ${op}`).toBe(-XenErrno.ENOSYS);
      expect(env.hv.lastError).toBe(`hypercall ${op} is not implemented`);
    }
    expect(env.snap()).toEqual(before);
  });

  test("an HVM guest gets -ENOSYS for the PV-only hypercalls, named in the refusal", () => {
    const env = hvmGuest();
    for (const op of PV_ONLY) {
      expect(env.hvmPort.call(op, 0, 0, 0, 0, 0)).toBe(-XenErrno.ENOSYS);
      expect(env.hv.lastError).toMatch(/ is PV-only$/);
    }
    expect(env.hv.lastError).toBe("mmuext_op is PV-only");
    expect(env.hvmPort.call(Hypercall.xen_version, XENVER_version, 0)).toBe((4 << 16) | 20);
  });

  test("multicall entries go through the same table, per guest type", () => {
    const env = hvmGuest();
    const c = env.hvmClient;
    c.mcQueue(Hypercall.xen_version, XENVER_version, 0);
    c.mcQueue(Hypercall.mmu_update, 0, 0, 0, 0x7ff0);
    c.mcQueue(Hypercall.set_gdt, 0, 0);
    c.mcQueue(Hypercall.xen_version, XENVER_version, 0);
    expect(c.mcFlush()).toBe(0);
    expect(c.mcResult(0)).toBe((4 << 16) | 20);
    expect(c.mcResult(1)).toBe(-XenErrno.ENOSYS);
    expect(c.mcResult(2)).toBe(-XenErrno.ENOSYS);
    expect(c.mcResult(3)).toBe((4 << 16) | 20);
  });

  test("counts every hypercall by number, refused ones included", () => {
    const env = setupPv();
    const counts = env.hv.hypercallCounts;
    const xv = counts[Hypercall.xen_version]!;
    const gdt = counts[Hypercall.set_gdt]!;
    env.port.call(Hypercall.xen_version, XENVER_version, 0);
    env.port.call(Hypercall.set_gdt, 0, 0);
    expect(counts[Hypercall.xen_version]).toBe(xv + 1);
    expect(counts[Hypercall.set_gdt]).toBe(gdt + 1);
  });
});
