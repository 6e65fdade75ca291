import { describe, expect, it } from "vitest";
import {
  bootInProcess,
  CONFIG_NAMES,
  CONFIG_PRESETS,
  GuestKernelError,
  GuestKernelErrorCode,
  resolveConfig,
} from "../src/index.js";
import { boot } from "./helpers.js";

describe("configurations", () => {
  it("names the three presets after the taxonomy", () => {
    expect(CONFIG_NAMES).toEqual(["full-emulation", "hw-assist+pv-io", "full-pv"]);
    expect(resolveConfig("full-emulation")).toMatchObject({
      mmu: "shadow",
      time: "hpet",
      irq: "pic",
      net: "rtl8139",
    });
    expect(resolveConfig("full-emulation").blk).toBeUndefined();
    expect(resolveConfig("hw-assist+pv-io")).toMatchObject({
      mmu: "hap",
      time: "lapic",
      irq: "pic",
      net: "virtio",
      blk: "virtio",
    });
    expect(resolveConfig("full-pv")).toMatchObject({
      mmu: "pv",
      time: "pv",
      irq: "evtchn",
      net: "virtio",
      blk: "virtio",
    });
  });

  it("names an object after its preset, or after its fields", () => {
    expect(resolveConfig({ ...CONFIG_PRESETS["full-pv"] }).name).toBe("full-pv");
    expect(resolveConfig({ mmu: "hap", time: "pv", irq: "evtchn" }).name).toBe(
      "mmu=hap,time=pv,irq=evtchn",
    );
  });

  it("refuses an unknown preset name, listing the known ones", () => {
    let err: unknown;
    try {
      resolveConfig("paravirt-max");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GuestKernelError);
    expect((err as GuestKernelError).code).toBe(GuestKernelErrorCode.UNKNOWN_CONFIG);
    expect((err as Error).message).toMatch(
      /unknown configuration "paravirt-max".*"full-emulation", "hw-assist\+pv-io", "full-pv"/,
    );
  });

  it("refuses fields out of range and impossible combinations", () => {
    expect(() => resolveConfig({ mmu: "ept" as never, time: "pv", irq: "evtchn" })).toThrow(
      /mmu must be one of "pv", "shadow", "hap", got "ept"/,
    );
    expect(() => resolveConfig({ mmu: "pv", time: "pv", irq: "pic" })).toThrow(
      /time "pv" needs irq "evtchn"/,
    );
    expect(() => resolveConfig({ mmu: "pv", time: "tsc" as never, irq: "pic" })).toThrow(
      GuestKernelError,
    );
    expect(() =>
      resolveConfig({ mmu: "pv", time: "lapic", irq: "pic", blk: "ide" as never }),
    ).toThrow(/blk must be one of "virtio"/);
  });

  it("bootInProcess reports the same errors", async () => {
    await expect(bootInProcess({ config: "nope" })).rejects.toMatchObject({
      code: "UNKNOWN_CONFIG",
    });
    await expect(
      bootInProcess({ config: "full-pv", clock: "sundial" as never }),
    ).rejects.toMatchObject({ code: "BAD_CONFIG" });
  });
});

describe("misuse of a booted guest", () => {
  it("says clearly that full emulation has no emulated disk", async () => {
    const vm = await boot("full-emulation");
    const err = await vm.run("disk-rand").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestKernelError);
    expect((err as GuestKernelError).code).toBe(GuestKernelErrorCode.MISSING_DEVICE);
    expect((err as Error).message).toMatch(
      /"disk-rand" needs a disk; configuration "full-emulation" has no disk \(there is no emulated disk yet/,
    );
    // The refusal did not disturb the guest.
    expect((await vm.run("gettimeofday", { iterations: 3 })).exitStatus).toBe(0);
  });

  it("says which device a network workload lacks", async () => {
    const vm = await boot({ mmu: "hap", time: "lapic", irq: "pic" });
    await expect(vm.run("net-rr")).rejects.toThrow(
      /"net-rr" needs a NIC; configuration "mmu=hap,time=lapic,irq=pic" has none/,
    );
  });

  it("refuses unknown workloads and bad parameters", async () => {
    const vm = await boot("full-pv");
    await expect(vm.run("lat_ctx")).rejects.toMatchObject({ code: "UNKNOWN_WORKLOAD" });
    await expect(vm.run("lat_ctx")).rejects.toThrow(/known: fork-exit, exec, mmap/);
    await expect(vm.run("mmap", { pages: 0 })).rejects.toThrow(/"pages" of "mmap".*1…65536, got 0/);
    await expect(vm.run("mmap", { pagez: 3 })).rejects.toThrow(
      /no parameter "pagez"; it has iterations, pages/,
    );
    await expect(vm.run("mmap", { pages: 1.5 })).rejects.toMatchObject({ code: "BAD_PARAMS" });
  });

  it("runs one workload at a time", async () => {
    const vm = await boot("full-pv");
    const first = vm.run("sleep", { iterations: 3 });
    await expect(vm.run("gettimeofday")).rejects.toMatchObject({ code: "BUSY" });
    expect((await first).exitStatus).toBe(0);
  });
});
