/**
 * `VirtioNetDriver`: the guest side of virtio-net (§5.1), doing what Linux's
 * `virtio_net` does: negotiate, read the configuration, keep every receive queue full of
 * buffers, take frames in a NAPI-like budgeted poll with that queue's interrupts off
 * while polling, reassemble MRG_RXBUF frames from `num_buffers` buffers, batch transmits
 * (one notification per batch, and only when the device asks), reclaim transmit buffers
 * without interrupts, spread flows over several queue pairs, and send control commands.
 *
 * The device is not trusted: used lengths are bounded by `DriverQueue`, and a header
 * with an impossible `num_buffers` or length is counted and the buffers are recycled.
 *
 * @module
 */

import { Emitter, type GuestMemory } from "@pvkit/platform";
import {
  bindVirtioDriver,
  checkDriverArguments,
  checkVirtioUnbound,
  DriverError,
  type DriverVirtqueue,
  featureMask,
  type GuestAllocator,
  hasFeature,
  initVirtioDevice,
  readConfigStable,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_INT_CONFIG,
  VirtioDeviceId,
  type VirtioDriverTransport,
  VirtioErrorCode,
} from "@pvkit/virtio-core";
import { flowHash } from "../flow.js";
import {
  VirtioNetConfig as C,
  ETH_HLEN,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_MIN_RX_BUFFER,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  VLAN_HLEN,
} from "../spec.js";

/** What the driver tells the frame handler along with a frame. */
export interface NetFrameInfo {
  /** The queue pair it arrived on. */
  pair: number;
  /** The header flags (NEEDS_CSUM / DATA_VALID, §5.1.6.4). */
  flags: number;
  /** With NEEDS_CSUM: csum_start. */
  csumStart: number;
  /** With NEEDS_CSUM: csum_offset. */
  csumOffset: number;
  /** Receive buffers the frame occupied (num_buffers). */
  buffers: number;
}

/** A receive-filter command of class VIRTIO_NET_CTRL_RX (§5.1.6.5.1). */
export type NetRxMode = "promisc" | "allmulti" | "alluni" | "nomulti" | "nouni" | "nobcast";

const RX_MODE_CMD: Record<NetRxMode, number> = {
  promisc: 0,
  allmulti: 1,
  alluni: 2,
  nomulti: 3,
  nouni: 4,
  nobcast: 5,
};

/** Options of {@link VirtioNetDriver.create}. */
export interface VirtioNetDriverOptions {
  /** Guest memory. */
  readonly memory: GuestMemory;
  /** Guest allocator for rings and buffers. */
  readonly allocator: GuestAllocator;
  /** Receive and transmit queue size to ask for (0 = the device's maximum). */
  readonly queueSize?: number;
  /** Most queue pairs to use with MQ (default 8); set with VQ_PAIRS_SET at start. */
  readonly maxQueuePairs?: number;
  /** Feature bits to leave out of negotiation. */
  readonly withoutFeatures?: bigint;
  /** Size of each receive buffer with MRG_RXBUF (default 1536; at least 12 + 1). */
  readonly rxBufferSize?: number;
  /** Put the header and the frame in separate descriptors (an indirect chain when negotiated; default false). */
  readonly splitHeader?: boolean;
  /** Ask for transmit-completion interrupts (default false: buffers are reclaimed when sending). */
  readonly txInterrupts?: boolean;
  /** Frames (buffers) per queue per poll round (NAPI weight, default 64). */
  readonly budget?: number;
  /** How a further poll round is scheduled (default `queueMicrotask`). */
  readonly schedule?: (task: () => void) => void;
  /**
   * Called for every received frame. The view points into guest memory (or a reassembly
   * buffer) and is valid only during the call: copy it to keep it.
   */
  readonly onFrame?: (frame: Uint8Array, info: NetFrameInfo) => void;
}

/** Events of {@link VirtioNetDriver}. */
export type VirtioNetDriverEvents = {
  /** The link state changed (VIRTIO_NET_S_LINK_UP, §5.1.4). */
  link: (up: boolean) => void;
  /** The device asked for an announcement; the driver sent one and acknowledged it. */
  announce: () => void;
  /** Transmit buffers became free after {@link VirtioNetDriver.enqueue} answered false. */
  writable: () => void;
};

/** Driver counters. */
export interface VirtioNetDriverStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Notifications sent (kicks). */
  kicks: number;
  /** Interrupt handler runs. */
  interrupts: number;
  /** Poll rounds. */
  polls: number;
  /** Poll rounds that used up their budget (more were scheduled). */
  budgetExhausted: number;
  /** `enqueue` refused: the transmit ring was full. */
  txFull: number;
  /** `enqueue` refused: the frame was empty or larger than MTU + 18. */
  txTooBig: number;
  /** Received buffers shorter than a header (the device returned them empty). */
  rxShort: number;
  /** Headers with an impossible num_buffers. */
  rxBadNumBuffers: number;
  /** Merged frames longer than the largest frame. */
  rxOversize: number;
  /** Configuration-change interrupts handled. */
  configChanges: number;
}

interface CtrlToken {
  readonly slot: number;
  readonly resolve: (ack: number) => void;
}

interface MutableBuffer {
  addr: number;
  len: number;
}

const EMPTY: readonly MutableBuffer[] = [];
const CTRL_SLOT = 4096;

const WANTED = featureMask(
  VIRTIO_F_VERSION_1,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED, // §2.8: packed rings when the device offers them
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
);

/** Per receive queue. */
class RxRing {
  /** Merged-frame state: buffers still to come, bytes gathered, buffers in it. */
  remaining = 0;
  length = 0;
  buffers = 0;
  bad = false;
  flags = 0;
  csumStart = 0;
  csumOffset = 0;
  constructor(
    readonly queue: DriverVirtqueue<number>,
    readonly base: number,
    readonly bufLen: number,
    readonly bufs: MutableBuffer[][],
    readonly assembly: Uint8Array,
  ) {}
}

/** Per transmit queue. */
class TxRing {
  readonly free: number[] = [];
  dirty = false;
  stalled = false;
  constructor(
    readonly queue: DriverVirtqueue<number>,
    readonly base: number,
    readonly slotLen: number,
    readonly outs: MutableBuffer[][],
  ) {}
}

/** The guest's virtio-net driver. */
export class VirtioNetDriver extends Emitter<VirtioNetDriverEvents> {
  /** Negotiated features. */
  readonly features: bigint;
  /** The MTU (from config with VIRTIO_NET_F_MTU, else 1500). */
  readonly mtu: number;
  /** Queue pairs set up (≤ max_virtqueue_pairs). */
  readonly queuePairs: number;
  /** Counters. */
  readonly stats: VirtioNetDriverStats = {
    txFrames: 0,
    txBytes: 0,
    rxFrames: 0,
    rxBytes: 0,
    kicks: 0,
    interrupts: 0,
    polls: 0,
    budgetExhausted: 0,
    txFull: 0,
    txTooBig: 0,
    rxShort: 0,
    rxBadNumBuffers: 0,
    rxOversize: 0,
    configChanges: 0,
  };
  /** The frame handler (see {@link VirtioNetDriverOptions.onFrame}). */
  onFrame: (frame: Uint8Array, info: NetFrameInfo) => void;

  private macAddr: Uint8Array;
  private link: boolean;
  private pairs = 1;
  private readonly rx: RxRing[];
  private readonly tx: TxRing[];
  private readonly ctrl: DriverVirtqueue<CtrlToken> | null;
  private readonly ctrlBase: number;
  private readonly ctrlFree: number[] = [];
  private readonly mrg: boolean;
  private readonly maxFrame: number;
  private readonly budget: number;
  private readonly schedule: (task: () => void) => void;
  private readonly hdr = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly info: NetFrameInfo = {
    pair: 0,
    flags: 0,
    csumStart: 0,
    csumOffset: 0,
    buffers: 1,
  };
  private pollScheduled = false;
  private readonly pollTask = (): void => {
    this.pollScheduled = false;
    if (this.pollRound(this.budget)) this.schedulePoll();
  };
  private rxPair = 0;
  private readonly rxFn = (token: number, len: number): void =>
    this.rxUsed(this.rx[this.rxPair]!, token, len);
  private txRing: TxRing | null = null;
  private readonly txFn = (token: number): void => {
    this.txRing!.free.push(token);
  };
  private readonly ctrlFn = (t: CtrlToken, len: number): void => this.ctrlDone(t, len);

  private constructor(
    private readonly transport: VirtioDriverTransport,
    private readonly memory: GuestMemory,
    features: bigint,
    queues: DriverVirtqueue<unknown>[],
    pairs: number,
    options: VirtioNetDriverOptions,
    mtu: number,
    mac: Uint8Array,
    link: boolean,
  ) {
    super();
    this.features = features;
    this.mtu = mtu;
    this.queuePairs = pairs;
    this.macAddr = mac;
    this.link = link;
    this.mrg = hasFeature(features, VIRTIO_NET_F_MRG_RXBUF);
    this.maxFrame = mtu + ETH_HLEN + VLAN_HLEN;
    this.budget = Math.max(1, options.budget ?? 64);
    this.schedule = options.schedule ?? queueMicrotask;
    this.onFrame = options.onFrame ?? (() => {});
    const alloc = options.allocator;
    const rxLen = this.mrg
      ? Math.max(VIRTIO_NET_HDR_SIZE + 1, options.rxBufferSize ?? 1536)
      : Math.max(VIRTIO_NET_MIN_RX_BUFFER, VIRTIO_NET_HDR_SIZE + this.maxFrame);
    const txLen = VIRTIO_NET_HDR_SIZE + this.maxFrame;
    const split = options.splitHeader ?? false;
    this.rx = [];
    this.tx = [];
    for (let p = 0; p < pairs; p++) {
      const rq = queues[2 * p] as DriverVirtqueue<number>;
      const rbase = alloc.alloc(rq.size * rxLen, 64);
      if (rbase < 0)
        throw new DriverError(VirtioErrorCode.OUT_OF_MEMORY, "no guest memory for receive buffers");
      const bufs: MutableBuffer[][] = [];
      for (let i = 0; i < rq.size; i++) bufs.push([{ addr: rbase + i * rxLen, len: rxLen }]);
      this.rx.push(new RxRing(rq, rbase, rxLen, bufs, new Uint8Array(this.maxFrame)));
      const tq = queues[2 * p + 1] as DriverVirtqueue<number>;
      const tbase = alloc.alloc(tq.size * txLen, 64);
      if (tbase < 0)
        throw new DriverError(
          VirtioErrorCode.OUT_OF_MEMORY,
          "no guest memory for transmit buffers",
        );
      const outs: MutableBuffer[][] = [];
      for (let i = 0; i < tq.size; i++) {
        const a = tbase + i * txLen;
        outs.push(
          split
            ? [
                { addr: a, len: VIRTIO_NET_HDR_SIZE },
                { addr: a + VIRTIO_NET_HDR_SIZE, len: 0 },
              ]
            : [{ addr: a, len: 0 }],
        );
      }
      const ring = new TxRing(tq, tbase, txLen, outs);
      for (let i = tq.size - 1; i >= 0; i--) ring.free.push(i);
      if (!(options.txInterrupts ?? false)) tq.disableCallbacks();
      this.tx.push(ring);
    }
    if (hasFeature(features, VIRTIO_NET_F_CTRL_VQ)) {
      this.ctrl = queues[queues.length - 1] as DriverVirtqueue<CtrlToken>;
      this.ctrlBase = alloc.alloc(this.ctrl.size * CTRL_SLOT, 64);
      if (this.ctrlBase < 0)
        throw new DriverError(
          VirtioErrorCode.OUT_OF_MEMORY,
          "no guest memory for control commands",
        );
      for (let i = this.ctrl.size - 1; i >= 0; i--) this.ctrlFree.push(i);
    } else {
      this.ctrl = null;
      this.ctrlBase = -1;
    }
    for (const r of this.rx) this.fill(r);
  }

  /**
   * Probes and initialises a virtio-net device (§3.1.1, §5.1.5): negotiates, sets up the
   * queues, fills every receive queue, and with MQ asks for the queue pairs it set up.
   *
   * @returns the driver, or why it could not bind (`ALREADY_BOUND` when another driver
   *   drives the device and it was not reset since: `transport.reset()` releases it)
   * @throws TypeError when `transport` is not a driver-side transport or `options` lacks
   *   `memory` / `allocator`
   */
  static create(
    transport: VirtioDriverTransport,
    options: VirtioNetDriverOptions,
  ): VirtioNetDriver | DriverError {
    checkDriverArguments("VirtioNetDriver.create", transport, options);
    if (transport.deviceId !== VirtioDeviceId.NET) {
      return new DriverError(
        VirtioErrorCode.WRONG_DEVICE,
        `device id ${transport.deviceId} is not virtio-net (1)`,
      );
    }
    // One driver per device: refuse before initVirtioDevice resets the other driver's device.
    const busy = checkVirtioUnbound(transport);
    if (busy !== undefined) return busy;
    let wanted = WANTED & ~(options.withoutFeatures ?? 0n);
    const offered = transport.readDeviceFeatures();
    // §5.1.3.1: without CTRL_VQ, none of the features that need it.
    if (!hasFeature(offered & wanted, VIRTIO_NET_F_CTRL_VQ)) {
      wanted &= ~featureMask(
        VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_RX_EXTRA,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_CTRL_MAC_ADDR,
      );
    }
    const mq = hasFeature(offered & wanted, VIRTIO_NET_F_MQ);
    const devPairs = mq ? Math.max(1, transport.readConfig(C.MAX_VIRTQUEUE_PAIRS, 2)) : 1;
    const pairs = Math.min(devPairs, Math.max(1, options.maxQueuePairs ?? 8));
    const size = options.queueSize ?? 0;
    const ctrl = hasFeature(offered & wanted, VIRTIO_NET_F_CTRL_VQ);
    // Every queue up to the control queue is set up; pairs beyond `pairs` get tiny rings.
    const sizes: number[] = [];
    for (let p = 0; p < devPairs; p++) sizes.push(p < pairs ? size : 2, p < pairs ? size : 2);
    if (ctrl) sizes.push(16);
    const dev = initVirtioDevice<unknown>(transport, {
      wanted,
      memory: options.memory,
      allocator: options.allocator,
      queueSizes: sizes,
      indirectEntries: 4,
    });
    if (dev instanceof DriverError) return dev;
    const f = dev.features;
    const cfg = readConfigStable(transport, (t) => {
      const mac = new Uint8Array(6);
      for (let i = 0; i < 6; i++) mac[i] = t.readConfig(C.MAC + i, 1);
      return {
        mac,
        status: t.readConfig(C.STATUS, 2),
        mtu: t.readConfig(C.MTU, 2),
      };
    });
    if (cfg instanceof DriverError) return cfg;
    // §5.1.5: without VIRTIO_NET_F_MAC the driver makes up a locally administered address.
    const mac = hasFeature(f, VIRTIO_NET_F_MAC) ? cfg.mac : randomLocalMac();
    const mtu = hasFeature(f, VIRTIO_NET_F_MTU) && cfg.mtu >= 68 ? cfg.mtu : 1500;
    const link = hasFeature(f, VIRTIO_NET_F_STATUS)
      ? (cfg.status & VIRTIO_NET_S_LINK_UP) !== 0
      : true;
    let driver: VirtioNetDriver;
    try {
      driver = new VirtioNetDriver(
        transport,
        options.memory,
        f,
        dev.queues,
        pairs,
        options,
        mtu,
        mac,
        link,
      );
    } catch (e) {
      if (e instanceof DriverError) return e;
      throw e;
    }
    const taken = bindVirtioDriver(transport, "VirtioNetDriver");
    if (taken !== undefined) return taken;
    if (mq && pairs > 1) void driver.setQueuePairs(pairs);
    return driver;
  }

  /** The MAC address in use. */
  get mac(): Uint8Array {
    return this.macAddr.slice();
  }
  /** Whether the link is up (as last reported by the device). */
  get linkUp(): boolean {
    return this.link;
  }
  /** Queue pairs in use for transmit (after VQ_PAIRS_SET). */
  get activeQueuePairs(): number {
    return this.pairs;
  }
  /** The largest frame the driver sends or accepts (MTU + 14 + 4). */
  get maxFrameLength(): number {
    return this.maxFrame;
  }
  /** Low-level access to the receive queue of `pair` (tests, diagnostics). */
  rxQueue(pair = 0): DriverVirtqueue<number> {
    return this.rx[pair]!.queue;
  }
  /** Low-level access to the transmit queue of `pair`. */
  txQueue(pair = 0): DriverVirtqueue<number> {
    return this.tx[pair]!.queue;
  }

  // ── Transmit ─────────────────────────────────────────────────────────────────

  /**
   * Puts a frame on a transmit queue without notifying (call {@link commit} after a
   * batch). The frame is copied into a guest buffer behind a 12-byte header.
   *
   * @param frame - an Ethernet frame, 14 ≤ length ≤ MTU + 18
   * @param options - `pair`: the queue pair (default: by flow hash); `csum`: offload the
   *   TCP/UDP checksum (needs VIRTIO_NET_F_CSUM; the field must hold the pseudo-header sum)
   * @returns false when the ring is full (retry after the `writable` event) or the frame is invalid
   */
  enqueue(
    frame: Uint8Array,
    options?: { pair?: number; csum?: { csumStart: number; csumOffset: number } },
  ): boolean {
    const len = frame.length;
    if (len < ETH_HLEN || len > this.maxFrame) {
      this.stats.txTooBig++;
      return false;
    }
    const p =
      options?.pair !== undefined
        ? options.pair % this.pairs
        : this.pairs === 1
          ? 0
          : flowHash(frame) % this.pairs;
    const ring = this.tx[p]!;
    let slot = ring.free.pop();
    if (slot === undefined) {
      this.reclaim(ring);
      slot = ring.free.pop();
      if (slot === undefined) {
        this.stats.txFull++;
        ring.stalled = true;
        // Ask for an interrupt once most of the ring is done (Linux `virtqueue_enable_cb_delayed`).
        if (!ring.queue.enableCallbacksDelayed()) this.reclaim(ring);
        slot = ring.free.pop();
        if (slot === undefined) return false;
      }
    }
    const addr = ring.base + slot * ring.slotLen;
    const h = this.hdrView;
    const csum = options?.csum;
    const offload = csum !== undefined && hasFeature(this.features, VIRTIO_NET_F_CSUM);
    h.setUint8(0, offload ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0);
    h.setUint8(1, 0);
    h.setUint16(2, 0, true);
    h.setUint16(4, 0, true);
    h.setUint16(6, offload ? csum.csumStart : 0, true);
    h.setUint16(8, offload ? csum.csumOffset : 0, true);
    h.setUint16(10, 0, true); // §5.1.6.2: num_buffers is 0 on transmit
    this.memory.write(addr, this.hdr);
    this.memory.write(addr + VIRTIO_NET_HDR_SIZE, frame);
    const out = ring.outs[slot]!;
    if (out.length === 1) out[0]!.len = VIRTIO_NET_HDR_SIZE + len;
    else out[1]!.len = len;
    const head = ring.queue.add(out, EMPTY, slot);
    if (head instanceof DriverError) {
      ring.free.push(slot);
      this.stats.txFull++;
      return false;
    }
    ring.dirty = true;
    this.stats.txFrames++;
    this.stats.txBytes += len;
    return true;
  }

  /** Notifies every transmit queue that got frames since the last commit, if the device wants it. */
  commit(): void {
    for (const ring of this.tx) {
      if (!ring.dirty) continue;
      ring.dirty = false;
      if (ring.queue.kick()) this.stats.kicks++;
    }
  }

  /** {@link enqueue} then {@link commit}. */
  send(
    frame: Uint8Array,
    options?: { pair?: number; csum?: { csumStart: number; csumOffset: number } },
  ): boolean {
    const ok = this.enqueue(frame, options);
    this.commit();
    return ok;
  }

  /** Transmit buffers free on `pair` (after reclaiming completions). */
  txFree(pair = 0): number {
    const ring = this.tx[pair]!;
    this.reclaim(ring);
    return ring.free.length;
  }

  private reclaim(ring: TxRing): void {
    this.txRing = ring;
    ring.queue.drainUsed(this.txFn);
    this.txRing = null;
  }

  // ── Receive ──────────────────────────────────────────────────────────────────

  /** Posts every receive buffer (at start; afterwards each is reposted as it is used). */
  private fill(r: RxRing): void {
    const q = r.queue;
    // The token is the buffer index.
    for (let i = 0; i < r.bufs.length; i++) q.add(EMPTY, r.bufs[i]!, i);
    if (q.kick()) this.stats.kicks++;
  }

  /** Gives buffer `i` back to the device. */
  private repost(r: RxRing, i: number): void {
    r.queue.add(EMPTY, r.bufs[i]!, i);
  }

  /** One used receive buffer (§5.1.6.4). */
  private rxUsed(r: RxRing, i: number, len: number): void {
    const addr = r.base + i * r.bufLen;
    if (r.remaining === 0) {
      if (len < VIRTIO_NET_HDR_SIZE) {
        this.stats.rxShort++;
        this.repost(r, i);
        return;
      }
      this.memory.read(addr, this.hdr);
      const h = this.hdrView;
      const n = this.mrg ? h.getUint16(10, true) : 1;
      if (n < 1 || n > r.queue.size) {
        this.stats.rxBadNumBuffers++;
        this.repost(r, i);
        return;
      }
      r.flags = h.getUint8(0);
      r.csumStart = h.getUint16(6, true);
      r.csumOffset = h.getUint16(8, true);
      r.buffers = n;
      const flen = len - VIRTIO_NET_HDR_SIZE;
      if (n === 1) {
        const view = this.memory.slice(addr + VIRTIO_NET_HDR_SIZE, flen);
        this.repostAfter(r, i, view instanceof Uint8Array ? view : null);
        return;
      }
      r.bad = flen > r.assembly.length;
      if (!r.bad) this.memory.read(addr + VIRTIO_NET_HDR_SIZE, r.assembly.subarray(0, flen));
      r.length = flen;
      r.remaining = n - 1;
      this.repost(r, i);
      return;
    }
    // A continuation buffer of a merged frame: no header, just data.
    if (!r.bad && r.length + len <= r.assembly.length) {
      this.memory.read(addr, r.assembly.subarray(r.length, r.length + len));
    } else r.bad = true;
    r.length += len;
    r.remaining--;
    this.repost(r, i);
    if (r.remaining > 0) return;
    if (r.bad) {
      this.stats.rxOversize++;
      r.bad = false;
      return;
    }
    this.deliver(r, r.assembly.subarray(0, r.length));
  }

  /** Delivers a single-buffer frame straight from guest memory, then reposts its buffer. */
  private repostAfter(r: RxRing, i: number, view: Uint8Array | null): void {
    if (view !== null) this.deliver(r, view);
    this.repost(r, i);
  }

  private deliver(r: RxRing, frame: Uint8Array): void {
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
    const info = this.info;
    info.pair = this.rxPair;
    info.flags = r.flags;
    info.csumStart = r.csumStart;
    info.csumOffset = r.csumOffset;
    info.buffers = r.buffers;
    this.onFrame(frame, info);
  }

  /**
   * The interrupt handler: acknowledges the interrupt, handles a configuration change
   * (link, announce), turns off receive interrupts and schedules a poll (NAPI), reclaims
   * transmit buffers and completes control commands.
   *
   * @returns whether the interrupt was ours
   */
  onInterrupt(): boolean {
    const cause = this.transport.ackInterrupt();
    this.stats.interrupts++;
    if (cause & VIRTIO_INT_CONFIG) this.configChanged();
    for (const r of this.rx) r.queue.disableCallbacks();
    this.schedulePoll();
    this.txReclaimAll();
    if (this.ctrl !== null) this.ctrl.drainUsed(this.ctrlFn);
    return cause !== 0;
  }

  private schedulePoll(): void {
    if (this.pollScheduled) return;
    this.pollScheduled = true;
    this.schedule(this.pollTask);
  }

  /**
   * Polls every receive queue once with at most `budget` buffers each, interrupts off
   * while polling; a queue that finishes under budget turns its interrupts back on (and
   * goes on if buffers arrived meanwhile, closing the race as Linux's
   * `virtqueue_napi_complete` does).
   *
   * @returns frames (buffers) taken
   */
  poll(budget = this.budget): number {
    let n = 0;
    for (let p = 0; p < this.rx.length; p++) n += this.pollQueue(p, budget);
    return n;
  }

  /** One NAPI round. @returns whether a queue used its whole budget (poll again) */
  private pollRound(budget: number): boolean {
    this.stats.polls++;
    let more = false;
    for (let p = 0; p < this.rx.length; p++) if (this.pollQueue(p, budget) >= budget) more = true;
    if (more) this.stats.budgetExhausted++;
    this.txReclaimAll();
    return more;
  }

  private pollQueue(p: number, budget: number): number {
    const r = this.rx[p]!;
    const q = r.queue;
    this.rxPair = p;
    let n = 0;
    q.disableCallbacks();
    for (;;) {
      n += q.drainUsed(this.rxFn, budget - n);
      if (n >= budget) break; // budget used: interrupts stay off, the caller polls again
      if (q.enableCallbacks()) break;
      q.disableCallbacks();
    }
    if (q.kick()) this.stats.kicks++;
    return n;
  }

  private txReclaimAll(): void {
    for (const ring of this.tx) {
      this.reclaim(ring);
      if (ring.stalled && ring.free.length > 0) {
        ring.stalled = false;
        ring.queue.disableCallbacks();
        this.emit("writable");
      }
    }
  }

  private configChanged(): void {
    this.stats.configChanges++;
    if (!hasFeature(this.features, VIRTIO_NET_F_STATUS)) return;
    const status = readConfigStable(this.transport, (t) => t.readConfig(C.STATUS, 2));
    if (status instanceof DriverError) return;
    const up = (status & VIRTIO_NET_S_LINK_UP) !== 0;
    if (up !== this.link) {
      this.link = up;
      this.emit("link", up);
    }
    if (status & VIRTIO_NET_S_ANNOUNCE && hasFeature(this.features, VIRTIO_NET_F_GUEST_ANNOUNCE)) {
      // §5.1.6.5.4: send gratuitous packets, then acknowledge. A RARP broadcast from our
      // MAC (what QEMU's self-announce sends) lets switches relearn where we are.
      this.send(rarpAnnounce(this.macAddr), { pair: 0 });
      void this.control(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK).then(() =>
        this.emit("announce"),
      );
    }
  }

  // ── Control queue ────────────────────────────────────────────────────────────

  /**
   * Sends a control command (§5.1.6.5) and resolves with the device's ack
   * (VIRTIO_NET_OK = 0, VIRTIO_NET_ERR = 1), or -1 when it could not be posted.
   */
  control(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): Promise<number> {
    const out = new Uint8Array(2 + data.length);
    out[0] = cls;
    out[1] = cmd;
    out.set(data, 2);
    return this.controlRaw(out, 1);
  }

  /**
   * Posts raw control bytes with `ackLength` writable bytes after them (tests build
   * malformed commands with it). @returns the first ack byte, or -1 when not posted or
   * the device wrote nothing
   */
  controlRaw(command: Uint8Array, ackLength = 1): Promise<number> {
    const q = this.ctrl;
    if (q === null || command.length + ackLength > CTRL_SLOT || command.length === 0)
      return Promise.resolve(-1);
    const slot = this.ctrlFree.pop();
    if (slot === undefined) return Promise.resolve(-1);
    const addr = this.ctrlBase + slot * CTRL_SLOT;
    this.memory.write(addr, command);
    const ackAt = addr + command.length;
    if (ackLength > 0) this.memory.fill(ackAt, ackLength, 0xff);
    return new Promise<number>((resolve) => {
      const token: CtrlToken = {
        slot,
        resolve: (used) => {
          const v = this.memory.readU8(ackAt);
          resolve(used > 0 && typeof v === "number" ? v : -1);
        },
      };
      const head = q.add(
        [{ addr, len: command.length }],
        ackLength > 0 ? [{ addr: ackAt, len: ackLength }] : [],
        token,
      );
      if (head instanceof DriverError) {
        this.ctrlFree.push(slot);
        resolve(-1);
        return;
      }
      if (q.kick()) this.stats.kicks++;
      // In-process the device answers during the notification; otherwise the interrupt does.
      q.drainUsed(this.ctrlFn);
    });
  }

  private ctrlDone(t: CtrlToken, len = 1): void {
    this.ctrlFree.push(t.slot);
    t.resolve(len);
  }

  /** VIRTIO_NET_CTRL_RX: turns one receive mode on or off. @returns whether the device accepted */
  async setRxMode(mode: NetRxMode, on: boolean): Promise<boolean> {
    return (
      (await this.control(VIRTIO_NET_CTRL_RX, RX_MODE_CMD[mode], Uint8Array.of(on ? 1 : 0))) ===
      VIRTIO_NET_OK
    );
  }

  /** VIRTIO_NET_CTRL_MAC_ADDR_SET (§5.1.6.5.2). @returns whether the device accepted */
  async setMac(mac: Uint8Array): Promise<boolean> {
    if (mac.length !== 6) return false;
    const ok =
      (await this.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mac)) ===
      VIRTIO_NET_OK;
    if (ok) this.macAddr = mac.slice();
    return ok;
  }

  /** VIRTIO_NET_CTRL_MAC_TABLE_SET: the unicast and multicast filter tables. */
  async setMacTable(
    unicast: readonly Uint8Array[],
    multicast: readonly Uint8Array[],
  ): Promise<boolean> {
    const data = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
    const v = new DataView(data.buffer);
    let at = 0;
    for (const table of [unicast, multicast]) {
      v.setUint32(at, table.length, true);
      at += 4;
      for (const m of table) {
        data.set(m.subarray(0, 6), at);
        at += 6;
      }
    }
    return (
      (await this.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, data)) ===
      VIRTIO_NET_OK
    );
  }

  /** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: use `n` queue pairs (1 ≤ n ≤ pairs set up). */
  async setQueuePairs(n: number): Promise<boolean> {
    const data = new Uint8Array(2);
    new DataView(data.buffer).setUint16(0, n, true);
    const ack = await this.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, data);
    if (ack === VIRTIO_NET_OK && n >= 1 && n <= this.queuePairs) {
      this.pairs = n;
      return true;
    }
    return false;
  }
}

/** The ack value of a refused command, for callers comparing {@link VirtioNetDriver.control} results. */
export const NET_CTRL_ERR = VIRTIO_NET_ERR;

function randomLocalMac(): Uint8Array {
  const mac = new Uint8Array(6);
  crypto.getRandomValues(mac);
  mac[0] = (mac[0]! & 0xfe) | 0x02; // unicast, locally administered
  return mac;
}

/** A RARP request announcing `mac` (EtherType 0x8035), padded to 60 bytes. */
function rarpAnnounce(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  f[12] = 0x80;
  f[13] = 0x35;
  const a = 14;
  f[a + 1] = 1; // hardware type Ethernet
  f[a + 2] = 0x08; // protocol IPv4
  f[a + 4] = 6; // hardware size
  f[a + 5] = 4; // protocol size
  f[a + 7] = 3; // opcode: reverse request
  f.set(mac, a + 8);
  f.set(mac, a + 18);
  return f;
}
