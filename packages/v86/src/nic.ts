/**
 * v86's own NICs (its NE2000 and its virtio-net, chosen with the emulator's
 * `net_device: { type: "ne2k" | "virtio" }` option) as a pvkit {@link NetBackend}, so they
 * can be plugged into an `EthernetSwitch` next to pvkit's NICs: frames the guest sends
 * leave v86 on its bus as `net<id>-send` events; frames for the guest enter with a
 * `net<id>-receive` event, which v86's NIC copies into its receive ring (or drops when the
 * ring is full: v86 counts nothing then).
 *
 * @module
 */

import {
  type NetBackend,
  type NetBackendStats,
  type NetEndpoint,
  type NetFrameMeta,
  type NetSendResult,
  newNetBackendStats,
} from "@pvkit/platform";

/** The part of a v86 emulator (`new V86(...)`) the NIC back-end uses: its bus. */
export interface V86NicEmulator {
  /** Registers a listener for an emulator bus event (v86's `add_listener`). */
  add_listener(event: string, listener: (value: Uint8Array) => void): void;
  /** Removes it (v86's `remove_listener`). */
  remove_listener(event: string, listener: (value: Uint8Array) => void): void;
  /** v86's emulator-side bus; `send` delivers an event to the devices synchronously. */
  readonly bus: { send(event: string, value: unknown): void };
}

/**
 * A {@link NetBackend} whose other end is v86's own NIC `net<id>`: plug it into a switch
 * with `EthernetSwitch.connect`. `send` hands a frame to v86's NIC (the guest receives it);
 * frames the guest transmits reach the attached endpoint. v86 keeps no checksum metadata,
 * so `checksumOffload` is false (the switch completes partial checksums first).
 *
 * @param emulator - the emulator (after `emulator-loaded`, so its devices exist)
 * @param id - the NIC's number (`net_device.id`, default 0)
 * @example
 * ```ts
 * const emulator = new V86({ ..., net_device: { type: "virtio" } });
 * emulator.add_listener("emulator-loaded", () => {
 *   sw.connect(v86NicBackend(emulator));
 *   emulator.run();
 * });
 * ```
 */
export function v86NicBackend(emulator: V86NicEmulator, id = 0): NetBackend {
  if (!Number.isInteger(id) || id < 0) throw new RangeError(`bad v86 NIC id ${id}`);
  const stats: NetBackendStats = newNetBackendStats();
  const sendEvent = `net${id}-send`;
  const receiveEvent = `net${id}-receive`;
  let endpoint: NetEndpoint | null = null;
  const fromGuest = (frame: Uint8Array): void => {
    if (endpoint === null) {
      stats.drops++;
      return;
    }
    stats.rxFrames++;
    stats.rxBytes += frame.length;
    endpoint.receive(frame, null);
  };
  return {
    name: `v86-net${id}`,
    checksumOffload: false,
    linkUp: true,
    stats,
    attach(e: NetEndpoint): void {
      if (endpoint === null) emulator.add_listener(sendEvent, fromGuest);
      endpoint = e;
    },
    detach(): void {
      if (endpoint !== null) emulator.remove_listener(sendEvent, fromGuest);
      endpoint = null;
    },
    send(frame: Uint8Array, _meta: NetFrameMeta | null): NetSendResult {
      // v86's NICs keep the array they are given (ne2k copies, virtio-net copies into a
      // new buffer with its header): hand over a copy, as the caller reuses its buffer.
      stats.txFrames++;
      stats.txBytes += frame.length;
      emulator.bus.send(receiveEvent, frame.slice());
      return "sent";
    },
  };
}
