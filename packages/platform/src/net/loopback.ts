/**
 * `LoopbackBackend`: a back-end for tests. In `"reflect"` mode every frame sent comes
 * straight back to the NIC; in `"sink"` mode frames are recorded. Frames can be injected,
 * the link pulled, and backpressure simulated (`setBusy`), so a NIC's retry path can be
 * exercised.
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
} from "./backend.js";

/** Options of {@link LoopbackBackend}. */
export interface LoopbackOptions {
  /** `"reflect"` (default): sent frames come back; `"sink"`: they are recorded. */
  readonly mode?: "reflect" | "sink";
  /** Whether the back-end carries checksum metadata (default false). */
  readonly checksumOffload?: boolean;
  /** In sink mode, most frames kept in {@link LoopbackBackend.sent} (default 65536; older ones are dropped). */
  readonly keep?: number;
  /** A name for statistics. */
  readonly name?: string;
}

/** A recorded frame (copied) with its metadata (copied). */
export interface RecordedFrame {
  readonly frame: Uint8Array;
  readonly meta: NetFrameMeta | null;
}

/** A back-end that reflects or records frames. */
export class LoopbackBackend implements NetBackend {
  readonly name: string;
  readonly checksumOffload: boolean;
  readonly stats: NetBackendStats = newNetBackendStats();
  /** Frames sent, in sink mode. */
  readonly sent: RecordedFrame[] = [];
  private readonly mode: "reflect" | "sink";
  private readonly keep: number;
  private endpoint: NetEndpoint | null = null;
  private link = true;
  private busy = false;

  constructor(options: LoopbackOptions = {}) {
    this.name = options.name ?? "loopback";
    this.mode = options.mode ?? "reflect";
    this.checksumOffload = options.checksumOffload ?? false;
    this.keep = options.keep ?? 65536;
  }

  get linkUp(): boolean {
    return this.link;
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }

  detach(): void {
    this.endpoint = null;
  }

  send(frame: Uint8Array, meta: NetFrameMeta | null): NetSendResult {
    const s = this.stats;
    if (!this.link) {
      s.drops++;
      return "dropped";
    }
    if (this.busy) {
      s.busy++;
      return "busy";
    }
    s.txFrames++;
    s.txBytes += frame.length;
    if (this.mode === "sink") {
      if (this.sent.length >= this.keep) this.sent.shift();
      this.sent.push({ frame: frame.slice(), meta: meta === null ? null : { ...meta } });
    } else this.inject(frame, meta);
    return "sent";
  }

  /** Hands a frame to the NIC as if it arrived from the wire. @returns whether a NIC took it */
  inject(frame: Uint8Array, meta: NetFrameMeta | null = null): boolean {
    const e = this.endpoint;
    if (e === null || !this.link) {
      this.stats.drops++;
      return false;
    }
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
    e.receive(frame, meta);
    return true;
  }

  /** Sets the link state and tells the NIC. */
  setLink(up: boolean): void {
    if (up === this.link) return;
    this.link = up;
    this.endpoint?.linkChange?.(up);
  }

  /** While busy, `send` answers `"busy"`; clearing it tells the NIC it may retry. */
  setBusy(busy: boolean): void {
    if (busy === this.busy) return;
    this.busy = busy;
    if (!busy) this.endpoint?.writable?.();
  }
}
