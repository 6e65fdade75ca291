import {
  ACCESS_WRITE,
  CONSOLEIO_read,
  EVTCHNOP_status,
  errnoName,
  GuestPhys,
  Hypercall,
  HypercallClient,
  HypercallPort,
  ManualClock,
  nsToTsc,
  PAGE_SIZE,
  PERIODIC_TIMER_MIN_NS,
  PvClockReader,
  PvClockWriter,
  pvclockScale,
  pvclockScaleDelta,
  SHUTDOWN_poweroff,
  VCPUOP_is_up,
  VIRQ_CONSOLE,
  VIRQ_DEBUG,
  VIRQ_TIMER,
  XEN_PVCLOCK_TSC_STABLE_BIT,
  XENVER_capabilities,
  XENVER_extraversion,
  XENVER_get_features,
  XENVER_pagesize,
  XENVER_version,
  XenErrno,
} from "@pvkit/hypercall";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { setupPv } from "./helpers.js";

function timeEnv(vcpus = 1) {
  const clock = new ManualClock(1_000_000_000);
  const env = setupPv({ clock });
  // A second vCPU needs its own domain in this helper; tests that need it build one below.
  void vcpus;
  return { ...env, clock };
}

/** Binds VIRQ_TIMER and records (time, port) of every event the guest's handler sees. */
function recordTimerEvents(env: ReturnType<typeof timeEnv>) {
  const port = env.client.bindVirq(VIRQ_TIMER, 0);
  expect(port).toBeGreaterThan(0);
  const seen: number[] = [];
  env.v.onUpcall = () => {
    env.client.scanEvents((p) => {
      if (p === port) seen.push(env.clock.nowNs());
    });
  };
  env.client.setUpcallMask(false);
  return { port, seen };
}

describe("set_timer_op", () => {
  test("fires VIRQ_TIMER at the absolute deadline, once", () => {
    const env = timeEnv();
    const { seen } = recordTimerEvents(env);
    expect(env.client.setTimerOp(1_000_500_000)).toBe(0);
    env.hv.runUntil(1_000_499_999);
    expect(seen).toEqual([]);
    env.hv.runUntil(2_000_000_000);
    expect(seen).toEqual([1_000_500_000]);
    expect(env.v.timerEvents).toBe(1);
  });

  test("timeout 0 cancels", () => {
    const env = timeEnv();
    const { seen } = recordTimerEvents(env);
    env.client.setTimerOp(1_100_000_000);
    expect(env.client.setTimerOp(0)).toBe(0);
    env.hv.runUntil(3_000_000_000);
    expect(seen).toEqual([]);
  });

  test("negative or ≥ 2^50 ns ahead becomes NOW + 100 ms; a past deadline fires at once", () => {
    for (const timeout of [-5, 1_000_000_000 + 2 ** 50, 2 ** 53 - 1]) {
      const env = timeEnv();
      const { seen } = recordTimerEvents(env);
      expect(env.client.setTimerOp(timeout)).toBe(0);
      env.hv.runUntil(5_000_000_000);
      expect(seen).toEqual([1_100_000_000]);
    }
    const env = timeEnv();
    const { seen } = recordTimerEvents(env);
    env.client.setTimerOp(1_000_000_000 + 2 ** 50 - 1); // just inside the limit: honoured
    env.client.setTimerOp(500); // in the past
    env.hv.poll();
    expect(seen).toEqual([1_000_000_000]);
  });

  test("no event when VIRQ_TIMER is not bound, and no upcall while upcalls are masked", () => {
    const env = timeEnv();
    env.client.setTimerOp(1_000_000_100);
    env.hv.runUntil(2_000_000_000);
    expect(env.v.timerEvents).toBe(1);
    expect(env.v.upcalls).toBe(0);
    const port = env.client.bindVirq(VIRQ_TIMER, 0);
    env.client.setUpcallMask(true);
    env.client.setTimerOp(2_000_000_100);
    env.hv.runUntil(3_000_000_000);
    expect(env.v.upcalls).toBe(0);
    expect(env.client.isPending(port)).toBe(true);
    expect(env.client.upcallPending).toBe(true);
  });
});

describe("vcpu_op timers", () => {
  test("single-shot and periodic timers fire in deadline order", () => {
    const env = timeEnv();
    const { seen } = recordTimerEvents(env);
    expect(env.client.setPeriodicTimer(10_000_000)).toBe(0);
    expect(env.client.setSingleshotTimer(1_025_000_000)).toBe(0);
    env.hv.runUntil(1_045_000_000);
    expect(seen).toEqual([
      1_010_000_000, 1_020_000_000, 1_025_000_000, 1_030_000_000, 1_040_000_000,
    ]);
    expect(env.client.stopPeriodicTimer()).toBe(0);
    env.hv.runUntil(1_200_000_000);
    expect(seen.length).toBe(5);
  });

  test("random timer programs fire in non-decreasing time order, each at its deadline", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 50_000_000 }), { minLength: 1, maxLength: 30 }),
        (deltas) => {
          const env = timeEnv();
          const { seen } = recordTimerEvents(env);
          const deadlines: number[] = [];
          for (const d of deltas) {
            // Re-arm the one-shot timer each time it fires, as a clockevent driver does.
            const at = env.clock.nowNs() + d;
            deadlines.push(at);
            expect(env.client.setSingleshotTimer(at)).toBe(0);
            env.hv.runUntil(at + 1);
          }
          expect(seen).toEqual(deadlines);
        },
      ),
      { seed: 42, numRuns: 50 },
    );
  });

  test("limits: period < 1 ms -EINVAL, > STIME_DELTA_MAX -EINVAL, other vCPU -EINVAL, no vCPU -ENOENT", () => {
    const env = timeEnv();
    expect(env.client.setPeriodicTimer(PERIODIC_TIMER_MIN_NS - 1)).toBe(-XenErrno.EINVAL);
    expect(env.client.setPeriodicTimer(PERIODIC_TIMER_MIN_NS)).toBe(0);
    expect(env.client.setPeriodicTimer(2 ** 63)).toBe(-XenErrno.EINVAL);
    expect(env.client.setSingleshotTimer(5, 0, 3)).toBe(-XenErrno.ENOENT);
    const two = env.hv.createDomain({ pages: 64, vcpus: 2 });
    const c = new HypercallClient(
      new HypercallPort(env.hv, two.vcpus[0]!),
      new GuestPhys(env.hv, two),
      56 * PAGE_SIZE,
      8,
    );
    expect(c.setSingleshotTimer(2_000_000_000, 0, 1)).toBe(-XenErrno.EINVAL);
    expect(c.stopSingleshotTimer(1)).toBe(-XenErrno.EINVAL);
    expect(c.setPeriodicTimer(PERIODIC_TIMER_MIN_NS, 1)).toBe(0); // allowed on another vCPU
    expect(c.port.call(Hypercall.vcpu_op, VCPUOP_is_up, 1, 0)).toBe(1);
    expect(c.port.call(Hypercall.vcpu_op, 77, 0, 0)).toBe(-XenErrno.ENOSYS);
    expect(c.port.call(Hypercall.vcpu_op, 8, 0, 2 ** 40)).toBe(-XenErrno.EFAULT);
  });
});

describe("pvclock", () => {
  test("scale: mul in [2^31, 2^32) and delta conversion within 1 ns for common TSC rates", () => {
    for (const hz of [1e9, 2.5e9, 3.6e9, 100e6, 4_000_000_123]) {
      const { mul, shift } = pvclockScale(hz);
      expect(mul).toBeGreaterThanOrEqual(2 ** 31);
      expect(mul).toBeLessThan(2 ** 32);
      for (const delta of [1, 12345, 1e9, 3e12]) {
        const exact = (delta * 1e9) / hz;
        // floor, the shift (which halves the rate and the delta) and the 32-bit fraction.
        expect(Math.abs(pvclockScaleDelta(delta, mul, shift) - exact)).toBeLessThanOrEqual(
          2 + exact * 2 ** -30,
        );
      }
    }
  });

  test("the guest's reader agrees with hypervisor time with zero exits", () => {
    const env = timeEnv();
    const reader = env.client.pvclock();
    const exits = env.port.exits;
    for (const step of [0, 1, 999, 123_456_789, 876_543_210, 10 ** 12, 5]) {
      env.clock.advance(step);
      env.hv.poll(); // Xen re-publishes the record at least once per second
      expect(Math.abs(reader.read() - env.clock.nowNs())).toBeLessThanOrEqual(2);
    }
    expect(env.port.exits).toBe(exits);
    expect(reader.tscStable).toBe(true);
  });

  test("a reader never returns a value while the version is odd, and gives up when it stays odd", () => {
    const buf = new Int32Array(16);
    const writer = new PvClockWriter(buf, 0);
    writer.publish(100, 5000, pvclockScale(1e9), XEN_PVCLOCK_TSC_STABLE_BIT);
    expect(writer.version % 2).toBe(0);
    const reader = new PvClockReader(buf, 0, () => 100, 10);
    expect(reader.read()).toBe(5000);
    Atomics.store(buf, 0, Atomics.load(buf, 0) + 1); // writer "died" mid-update
    expect(reader.read()).toBe(-1);
    expect(reader.retries).toBe(11);
  });
});

describe("event channels (2-level)", () => {
  // shared: machine memory in a SharedArrayBuffer, the bits updated with Atomics (threaded runtime).
  test.each([false, true])(
    "send on an IPI port: pending bit, selector, upcall; masked port: no upcall until unmask (shared %s)",
    (shared) => {
      const env = setupPv({ shared });
      const seen: number[] = [];
      env.v.onUpcall = () => env.client.scanEvents((p) => seen.push(p));
      env.client.setUpcallMask(false);
      const a = env.client.bindIpi(0);
      const b = env.client.bindIpi(0);
      expect([a, b]).toEqual([1, 2]);
      expect(env.client.send(a)).toBe(0);
      expect(seen).toEqual([a]);
      env.client.maskPort(b);
      expect(env.client.send(b)).toBe(0);
      expect(seen).toEqual([a]);
      expect(env.client.isPending(b)).toBe(true);
      expect(env.client.upcallPending).toBe(false);
      // A second send while pending is coalesced; unmask then delivers once.
      expect(env.client.send(b)).toBe(0);
      expect(env.client.unmask(b)).toBe(0);
      expect(env.client.yield()).toBe(0); // upcalls are delivered on the way back to the guest
      expect(seen).toEqual([a, b]);
      expect(env.v.upcalls).toBe(2);
    },
  );

  test.each([false, true])(
    "interdomain channel delivers to the other domain; closing unbinds (shared %s)",
    (shared) => {
      const env = setupPv({ shared });
      const dom2 = env.hv.createDomain({ pages: 64 });
      const c2 = new HypercallClient(
        new HypercallPort(env.hv, dom2.vcpus[0]!),
        new GuestPhys(env.hv, dom2),
        56 * PAGE_SIZE,
        8,
      );
      const unbound = c2.allocUnbound(env.dom.id);
      expect(unbound).toBeGreaterThan(0);
      expect(env.client.bindInterdomain(dom2.id, unbound + 5)).toBe(-XenErrno.EINVAL);
      expect(env.client.bindInterdomain(99, unbound)).toBe(-XenErrno.ESRCH);
      const local = env.client.bindInterdomain(dom2.id, unbound);
      expect(local).toBeGreaterThan(0);
      const got: number[] = [];
      dom2.vcpus[0]!.onUpcall = () => c2.scanEvents((p) => got.push(p));
      c2.setUpcallMask(false);
      expect(env.client.send(local)).toBe(0);
      expect(got).toEqual([unbound]);
      expect(env.client.close(local)).toBe(0);
      expect(env.client.send(local)).toBe(-XenErrno.EINVAL);
      expect(c2.send(unbound)).toBe(0); // back to unbound: dropped silently
    },
  );

  test("bind_virq errors: out of range, global VIRQ on vCPU≠0, bad vCPU, already bound", () => {
    const env = setupPv();
    expect(env.client.bindVirq(24, 0)).toBe(-XenErrno.EINVAL);
    expect(env.client.bindVirq(VIRQ_CONSOLE, 1)).toBe(-XenErrno.EINVAL);
    expect(env.client.bindVirq(VIRQ_DEBUG, 5)).toBe(-XenErrno.ENOENT);
    expect(env.client.bindVirq(VIRQ_TIMER, 0)).toBeGreaterThan(0);
    expect(env.client.bindVirq(VIRQ_TIMER, 0)).toBe(-XenErrno.EEXIST);
    const virqPort = env.v.virqToPort[VIRQ_TIMER]!;
    expect(env.client.send(virqPort)).toBe(-XenErrno.EINVAL);
    expect(env.client.send(0)).toBe(-XenErrno.EINVAL);
    expect(env.client.send(4096)).toBe(-XenErrno.EINVAL);
    expect(env.client.unmask(999)).toBe(-XenErrno.EINVAL);
    expect(env.port.call(Hypercall.event_channel_op, EVTCHNOP_status, 0)).toBe(-XenErrno.ENOSYS);
    expect(env.port.call(Hypercall.event_channel_op, 1, 2 ** 45)).toBe(-XenErrno.EFAULT);
  });

  test("port exhaustion: -ENOSPC once all 4095 usable ports are taken", () => {
    const env = setupPv();
    for (let i = 1; i < 4096; i++) expect(env.client.bindIpi(0)).toBe(i);
    expect(env.client.bindIpi(0)).toBe(-XenErrno.ENOSPC);
  });

  test.each([false, true])(
    "SCHEDOP_block re-enables upcalls and wakes on an event (shared %s)",
    (shared) => {
      const env = setupPv({ shared });
      const port = env.client.bindIpi(0);
      expect(env.client.block()).toBe(0);
      expect(env.v.blocked).toBe(true);
      env.hv.setPending(env.dom, port);
      expect(env.v.blocked).toBe(false);
    },
  );
});

describe("console_io, sched_op, xen_version", () => {
  test("console writes land in the domain's console; read needs privilege", () => {
    const env = setupPv();
    expect(env.client.consoleWrite("hello, xen\n")).toBe(0);
    expect(env.dom.console).toBe("hello, xen\n");
    expect(env.client.consoleWrite("x".repeat(5000))).toBe(0);
    expect(env.dom.console.length).toBe(5011);
    expect(env.port.call(Hypercall.console_io, CONSOLEIO_read, 10, 0)).toBe(-XenErrno.EPERM);
    expect(env.port.call(Hypercall.console_io, 0, 100, 2 ** 44)).toBe(-XenErrno.EFAULT);
  });

  test("xen_version reports the version, strings and features; unknown -ENOSYS", () => {
    const env = setupPv();
    expect(env.client.xenVersion(XENVER_version)).toBe((4 << 16) | 20);
    expect(env.client.xenVersion(XENVER_pagesize)).toBe(4096);
    const at = env.client.doneGpa + 64;
    expect(env.client.xenVersion(XENVER_extraversion, at)).toBe(0);
    expect(
      String.fromCharCode(
        ...Array.from({ length: 6 }, (_, i) => env.hv.machineBytes[env.dom.gpaToMa(at + i)]!),
      ),
    ).toBe("-pvkit");
    expect(env.client.xenVersion(XENVER_capabilities, 2 ** 44)).toBe(-XenErrno.EFAULT);
    env.phys.writeU32(at, 0);
    expect(env.client.xenVersion(XENVER_get_features, at)).toBe(0);
    expect(env.phys.readU32(at + 4)).toBe(1);
    expect(env.client.xenVersion(999)).toBe(-XenErrno.ENOSYS);
    expect(errnoName(-XenErrno.ENOSYS)).toBe("ENOSYS");
  });

  test("shutdown records the reason; yield returns 0; unknown hypercall -ENOSYS", () => {
    const env = setupPv();
    expect(env.client.shutdown(SHUTDOWN_poweroff)).toBe(0);
    expect(env.dom.shutdownReason).toBe(SHUTDOWN_poweroff);
    expect(env.client.yield()).toBe(0);
    expect(env.port.call(11)).toBe(-XenErrno.ENOSYS);
    expect(env.port.call(63)).toBe(-XenErrno.ENOSYS);
    expect(env.port.call(-1)).toBe(-XenErrno.ENOSYS);
    expect(env.port.call(Hypercall.sched_op, 9, 0)).toBe(-XenErrno.ENOSYS);
    void ACCESS_WRITE;
    void nsToTsc;
  });
});
