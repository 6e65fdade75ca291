/** `v86NicBackend`: v86's own NIC as a pvkit network back-end, on a fake v86 bus. */

import { EthernetSwitch, HostResponder } from "@pvkit/platform";
import { describe, expect, it } from "vitest";
import { type V86NicEmulator, v86NicBackend } from "../src/index.js";

/** A v86-like emulator bus: `add_listener` on the emulator side, `bus.send` to the devices. */
function fakeEmulator() {
  const listeners = new Map<string, Set<(v: Uint8Array) => void>>();
  const toDevice: { event: string; value: Uint8Array }[] = [];
  const emulator: V86NicEmulator = {
    add_listener: (e, l) => {
      if (!listeners.has(e)) listeners.set(e, new Set());
      listeners.get(e)!.add(l);
    },
    remove_listener: (e, l) => {
      listeners.get(e)?.delete(l);
    },
    bus: { send: (event, value) => toDevice.push({ event, value: value as Uint8Array }) },
  };
  /** What v86's NIC does when the guest transmits. */
  const guestSends = (frame: Uint8Array, id = 0) => {
    for (const l of listeners.get(`net${id}-send`) ?? []) l(frame);
  };
  return { emulator, toDevice, guestSends, listeners };
}

function arpRequest(target: number[]): Uint8Array {
  const mac = [0x00, 0x22, 0x15, 1, 2, 3];
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  f.set(
    [0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, ...mac, 10, 0, 4, 15, 0, 0, 0, 0, 0, 0, ...target],
    12,
  );
  return f;
}

describe("v86NicBackend", () => {
  it("carries the guest's frames into a switch and the answers back to v86's NIC", () => {
    const { emulator, toDevice, guestSends } = fakeEmulator();
    const sw = new EthernetSwitch();
    const host = new HostResponder({ ip: "10.0.4.2" });
    host.attachTo(sw.createPort("host"));
    const backend = v86NicBackend(emulator);
    const port = sw.connect(backend);
    guestSends(arpRequest([10, 0, 4, 2]));
    expect(host.stats.arpReplies).toBe(1);
    expect(toDevice).toHaveLength(1);
    expect(toDevice[0]!.event).toBe("net0-receive");
    const reply = toDevice[0]!.value;
    expect([...reply.subarray(0, 6)]).toEqual([0x00, 0x22, 0x15, 1, 2, 3]);
    expect([...reply.subarray(20, 22)]).toEqual([0, 2]); // ARP reply
    expect(backend.stats).toMatchObject({ rxFrames: 1, txFrames: 1, drops: 0 });
    expect(port.portStats.rxFrames).toBe(1);
  });

  it("hands v86 a copy, uses the NIC id, and stops listening when detached", () => {
    const { emulator, toDevice, guestSends, listeners } = fakeEmulator();
    const backend = v86NicBackend(emulator, 2);
    const got: Uint8Array[] = [];
    backend.attach({ receive: (f) => got.push(f) });
    const frame = new Uint8Array(60).fill(7);
    expect(backend.send(frame, null)).toBe("sent");
    frame.fill(0);
    expect(toDevice[0]!.event).toBe("net2-receive");
    expect(toDevice[0]!.value.every((b) => b === 7)).toBe(true);
    guestSends(new Uint8Array(60), 0); // another NIC's frames are not ours
    guestSends(new Uint8Array(60), 2);
    expect(got).toHaveLength(1);
    backend.detach();
    expect(listeners.get("net2-send")?.size).toBe(0);
    guestSends(new Uint8Array(60), 2);
    expect(got).toHaveLength(1);
    expect(() => v86NicBackend(emulator, -1)).toThrow(RangeError);
  });
});
