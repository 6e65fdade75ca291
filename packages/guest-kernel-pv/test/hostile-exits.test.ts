/**
 * The host's one entry point answers anything a guest can send — unknown op codes,
 * arguments out of range, ops the configuration does not intercept — with an error value,
 * counts it, and never throws (DESIGN.md, "A hostile guest").
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EXIT_EINVAL, EXIT_ENOSYS, ExitOp, HostMachine, resolveConfig } from "../src/index.js";
import { boot } from "./helpers.js";

const host = (name: string): HostMachine =>
  new HostMachine({ config: resolveConfig(name), ramBytes: 16 << 20 });

describe("HostMachine.exit with hostile records", () => {
  it("unknown op codes answer -ENOSYS and are counted", () => {
    const h = host("full-pv");
    for (const op of [0, 12, 99, -1, 1.5, Number.NaN, 2 ** 53]) {
      expect(h.exit(op, 0, 0, 0, 0, 0, 0), String(op)).toBe(EXIT_ENOSYS);
    }
    expect(h.counters().rejected).toBe(7);
    expect(h.counters().exits).toBe(7);
  });

  it("arguments out of range answer -EINVAL and are counted", () => {
    const h = host("full-emulation");
    const bad: [number, number, number, number][] = [
      [ExitOp.PIO_READ, 0x1_0000, 1, 0], // port beyond 64 Ki
      [ExitOp.PIO_READ, 0x20, 3, 0], // size 3
      [ExitOp.PIO_WRITE, 0x20, 1, 2 ** 32], // value beyond u32
      [ExitOp.PIO_WRITE, -1, 1, 0],
      [ExitOp.MMIO_READ, Number.NaN, 4, 0],
      [ExitOp.MMIO_READ, 2 ** 53, 4, 0],
      [ExitOp.MMIO_WRITE, 0xfed0_0000, 8, 0], // 8-byte access
      [ExitOp.MMIO_WRITE, 0xfed0_0000, 4, -5],
      [ExitOp.HYPERCALL, 999, 0, 0], // no such hypercall slot
      [ExitOp.HYPERCALL, 1, 2 ** 60, 0], // a register that is not a safe integer
      [ExitOp.CR3_LOAD, 1e9, 0, 0], // beyond RAM
      [ExitOp.CR3_LOAD, 3.5, 0, 0],
      [ExitOp.INVLPG, Number.POSITIVE_INFINITY, 0, 0],
      [ExitOp.PTE_WRITE, 4100, 0, 0], // not 8-aligned
      [ExitOp.PTE_WRITE, 1 << 30, 0, 0], // beyond RAM
      [ExitOp.PTE_WRITE, 4096, -1, 0],
      [ExitOp.PAGE_FAULT, Number.NaN, 0, 0],
    ];
    for (const [op, a0, a1, a2] of bad) {
      expect(h.exit(op, a0, a1, a2, 0, 0, 0), `${op}(${a0}, ${a1}, ${a2})`).toBe(EXIT_EINVAL);
    }
    expect(h.counters().rejected).toBe(bad.length);
  });

  it("ops the configuration does not intercept are refused (no shadow MMU under hap or pv)", () => {
    for (const name of ["hw-assist+pv-io", "full-pv"]) {
      const h = host(name);
      for (const op of [ExitOp.CR3_LOAD, ExitOp.INVLPG, ExitOp.TLB_FLUSH, ExitOp.PTE_WRITE]) {
        expect(h.exit(op, 8, 0, 0, 0, 0, 0), `${name} op ${op}`).toBe(EXIT_EINVAL);
      }
    }
    // EPT-like paging does not bounce page faults either.
    expect(host("hw-assist+pv-io").exit(ExitOp.PAGE_FAULT, 4096, 4, 0, 0, 0, 0)).toBe(EXIT_EINVAL);
  });

  it("a hypercall with garbage pointers gets Xen's errno, not an exception", () => {
    const h = host("full-pv");
    // mmu_update of 10 requests at an address outside the domain; mmuext_op likewise.
    expect(h.exit(ExitOp.HYPERCALL, 1, 2 ** 40, 10, 0, 0x7ff0, 0)).toBeLessThan(0);
    expect(h.exit(ExitOp.HYPERCALL, 26, -4096, 1, 0, 0x7ff0, 0)).toBeLessThan(0);
    // A multicall list running past the domain's memory (sub-call failures would only go
    // into the entries' result fields: Xen's multicall itself returns 0 then).
    expect(h.exit(ExitOp.HYPERCALL, 13, 123, 1_000_000, 0, 0, 0)).toBeLessThan(0);
    expect(h.counters().hostFaults).toBe(0);
  });

  it("random records never throw, always answer a number, and the host still serves a guest after", async () => {
    const vm = await boot("full-emulation");
    const h = vm.host;
    const arg = fc.oneof(
      fc.integer({ min: -5, max: 0x1_0000 }),
      fc.constantFrom(0x20, 0x21, 0x40, 0xfed0_0000, 0xfed0_00f0, 0xfebf_0000, 4096, 8192),
      fc.double(),
      fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0, 2 ** 53, 2 ** 64),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: -2, max: 14 }),
        fc.array(arg, { minLength: 6, maxLength: 6 }),
        (op, a) => {
          const r = h.exit(op, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
          expect(typeof r).toBe("number");
          expect(Number.isNaN(r)).toBe(false);
        },
      ),
      { numRuns: 2000 },
    );
    expect(h.counters().hostFaults).toBe(0);
    // A well-formed access still works: the HPET's capabilities register.
    expect(h.exit(ExitOp.MMIO_READ, 0xfed0_0000, 4, 0, 0, 0, 0)).toBe(0x8086_a201);
  });

  it("a guest that only ever sends well-formed records sees no rejection", async () => {
    for (const name of ["full-emulation", "hw-assist+pv-io", "full-pv"]) {
      const vm = await boot(name);
      const before = vm.host.counters().rejected;
      await vm.run("fork-exit", { iterations: 2 });
      expect(vm.host.counters().rejected - before, name).toBe(0);
      expect(vm.host.counters().hostFaults, name).toBe(0);
    }
  });
});
