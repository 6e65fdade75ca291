/**
 * `VirtioNetDevice`: the virtio network device (§5.1, device id 1) in front of any
 * {@link NetBackend} (an `EthernetSwitch` port, a UDP socket, a loopback).
 *
 * Receive: frames from the back-end are filtered (RX mode and MAC table, §5.1.6.5.1–2),
 * steered to a queue pair by flow hash (MQ, §5.1.6.5.5), and written into the guest's
 * posted buffers — one chain, or with MRG_RXBUF as many as needed with `num_buffers`
 * written little-endian in the first header and each chain's used length counting only
 * its own bytes (§5.1.6.4). When the guest has posted no buffers, frames wait in a
 * bounded queue (overflow is counted) and go out as soon as it refills; receive-queue
 * notifications are only asked for while frames wait.
 *
 * Transmit: a chain must hold the complete 12-byte header and a frame of 14 ≤ length ≤
 * MTU + 14 (+4 for a VLAN tag); anything else is dropped, counted, and the queue goes on
 * (§5.1.6.2). NEEDS_CSUM is passed on as metadata to a back-end that carries it, or
 * completed in software. A back-end answering "busy" keeps the chain until it is
 * writable again.
 *
 * Control queue (§5.1.6.5): RX modes, MAC table, MAC address, announce ack, queue pairs;
 * anything malformed or not negotiated is answered VIRTIO_NET_ERR and counted.
 *
 * @module
 */

import {
  checkGso,
  completeChecksum,
  ETH_HEADER_LEN,
  expectArgument,
  expectOptions,
  isNetBackendLike,
  NET_META_DATA_VALID,
  NET_META_NEEDS_CSUM,
  type NetBackend,
  type NetFrameMeta,
  type NetSendResult,
  parseMac,
  segmentGso,
} from "@pvkit/platform";
import {
  type DescriptorChain,
  type DeviceVirtqueue,
  featureMask,
  hasFeature,
  VirtioDeviceBase,
  type VirtioDeviceEvents,
  VirtioDeviceId,
  type VirtioError,
} from "@pvkit/virtio-core";
import { flowHash } from "../flow.js";
import {
  VirtioNetConfig as C,
  ctrlQueueIndex,
  ETH_HLEN,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_ALLUNI,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_NOMULTI,
  VIRTIO_NET_CTRL_RX_NOUNI,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_MIN_MTU,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  VirtioNetGso,
  VLAN_HLEN,
} from "../spec.js";

/** Why a frame was dropped. */
export type NetDropReason =
  /** TX: the chain has no device-readable bytes at all. */
  | "txNoHeader"
  /** TX: fewer than 12 readable bytes (§5.1.6.2: the header is always complete). */
  | "txShortHeader"
  /** TX: frame above MTU + 14 (+4 with a VLAN tag) (§5.1.6.2.1). */
  | "txOversize"
  /** TX: frame shorter than an Ethernet header. */
  | "txRunt"
  /**
   * TX: a GSO frame the device cannot take: a type not negotiated (§5.1.6.2.1), or one
   * that is not what its type says (not TCP, wrong IP version, NEEDS_CSUM missing or not
   * on the TCP checksum, gso_size 0, no payload, more than `GSO_MAX_SEGMENTS` segments).
   */
  | "txBadGso"
  /** TX: NEEDS_CSUM with csum_start / csum_offset outside the frame (§5.1.6.2.1). */
  | "txBadChecksum"
  /** TX: the link is down. */
  | "txLinkDown"
  /** TX: the back-end refused the frame. */
  | "txBackend"
  /** RX: the driver is not live (before DRIVER_OK, or NEEDS_RESET). */
  | "rxNotReady"
  /** RX: the link is down. */
  | "rxLinkDown"
  /** RX: refused by the RX mode / MAC filter (§5.1.6.5.1–2). */
  | "rxFiltered"
  /** RX: shorter than an Ethernet header. */
  | "rxRunt"
  /** RX: above MTU + 14 (+4) with MTU negotiated (§5.1.6.3.2). */
  | "rxOversize"
  /** RX: a GSO frame from the back-end that is not a well-formed TCP segment. */
  | "rxBadGso"
  /** RX: no buffers posted and the waiting queue is full. */
  | "rxQueueFull"
  /** RX: a posted chain too small for the frame (without MRG_RXBUF) or for a header; returned with used length 0. */
  | "rxBufferTooSmall";

/** Why a control command was answered VIRTIO_NET_ERR. */
export type NetControlError =
  | "noAckByte"
  | "truncated"
  | "unknownClass"
  | "unknownCommand"
  | "notNegotiated"
  | "badLength"
  | "badMacTable"
  | "badPairs";

/** Options of {@link VirtioNetDevice}; every feature is configurable. */
export interface VirtioNetOptions {
  /** Where frames go. */
  readonly backend: NetBackend;
  /** The MAC address (6 bytes or `aa:bb:…`; default 52:54:00:12:34:56). */
  readonly mac?: Uint8Array | string;
  /** Offer VIRTIO_NET_F_MAC (default true). */
  readonly offerMac?: boolean;
  /** The MTU (default 1500; 68..65535). */
  readonly mtu?: number;
  /** Offer VIRTIO_NET_F_MTU (default true). */
  readonly offerMtu?: boolean;
  /** Offer VIRTIO_NET_F_STATUS (default true). */
  readonly status?: boolean;
  /** Offer VIRTIO_NET_F_MRG_RXBUF (default true). */
  readonly mrgRxbuf?: boolean;
  /** Offer VIRTIO_NET_F_CSUM (default true). */
  readonly csum?: boolean;
  /** Offer VIRTIO_NET_F_GUEST_CSUM (default true). */
  readonly guestCsum?: boolean;
  /**
   * Offer VIRTIO_NET_F_HOST_TSO4, HOST_TSO6 and HOST_ECN (default true, only with `csum`):
   * the guest may send TCP segments up to 64 KiB; they go whole to a back-end that takes
   * GSO frames (`NetBackend.gso`) and are cut into MTU-sized frames otherwise.
   */
  readonly tso?: boolean;
  /**
   * Offer VIRTIO_NET_F_GUEST_TSO4, GUEST_TSO6 and GUEST_ECN (default true, only with
   * `guestCsum`): GSO frames from the back-end reach the guest whole; without these
   * negotiated the device cuts them first.
   */
  readonly guestTso?: boolean;
  /** Offer VIRTIO_NET_F_CTRL_VQ (default true); the next four need it. */
  readonly ctrlVq?: boolean;
  /** Offer CTRL_RX and CTRL_RX_EXTRA (default true). */
  readonly ctrlRx?: boolean;
  /** Offer CTRL_MAC_ADDR (default true). */
  readonly ctrlMacAddr?: boolean;
  /** Offer GUEST_ANNOUNCE (default true). */
  readonly guestAnnounce?: boolean;
  /** Queue pairs; MQ is offered when > 1 (default 1; at most 0x8000). */
  readonly maxQueuePairs?: number;
  /** QueueNumMax of the receive and transmit queues (default 256). */
  readonly queueSize?: number;
  /** QueueNumMax of the control queue (default 64). */
  readonly ctrlQueueSize?: number;
  /** Frames each receive queue holds while the guest has no buffers (default 256). */
  readonly rxPending?: number;
  /** MAC-table entries per class kept; beyond it the class is accepted wholesale (default 64). */
  readonly macTableEntries?: number;
  /** Start with the link up (default: the back-end's link state). */
  readonly linkUp?: boolean;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  readonly eventIdx?: boolean;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  readonly indirectDesc?: boolean;
  /** Offer VIRTIO_F_RING_PACKED (§2.8; default false): packed rings if the driver accepts them. */
  readonly ringPacked?: boolean;
}

/** Events of {@link VirtioNetDevice}. */
export type VirtioNetEvents = VirtioDeviceEvents & {
  /** The link went up or down. */
  link: (up: boolean) => void;
  /** A frame was transmitted to the back-end or delivered to the guest (only emitted with listeners). */
  frame: (direction: "tx" | "rx", frame: Uint8Array, queue: number) => void;
  /** A frame was dropped. */
  drop: (reason: NetDropReason, queue: number) => void;
  /** A control command was answered (`ack` 0 = OK, 1 = ERR with `error`). */
  control: (cls: number, cmd: number, ack: number, error: NetControlError | null) => void;
};

/** Counters of {@link VirtioNetDevice}. */
export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Receive buffers (chains) used, counting each merged buffer. */
  rxBuffers: number;
  /** Checksums completed in software (NEEDS_CSUM towards a back-end or guest without offload). */
  checksumsCompleted: number;
  /** GSO frames (TSO) the guest sent. */
  txGsoFrames: number;
  /** GSO frames the device cut into MTU-sized frames (towards a back-end or guest that cannot take them). */
  gsoSegmented: number;
  /** GSO frames delivered to the guest whole. */
  rxGsoFrames: number;
  /** Times the back-end said "busy". */
  txBusy: number;
  /** Control commands answered OK. */
  controlOk: number;
  /** Drops by reason. */
  readonly drops: Record<NetDropReason, number>;
  /** Control errors by reason. */
  readonly controlErrors: Record<NetControlError, number>;
}

const DEFAULT_MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/** The largest TSO frame: a 64 KiB IP packet behind an Ethernet header and a VLAN tag. */
const GSO_MAX_FRAME = 65535 + ETH_HLEN + VLAN_HLEN;

/**
 * The `gso_type` values a side may use under features `f`: bit 0 TCPV4, bit 2 TCPV6, bit 7
 * ECN (the VirtioNetGso values, so a type is allowed when `(type & ~allowed) === 0`).
 */
function gsoBits(f: bigint, tso4: number, tso6: number, ecn: number): number {
  let bits = 0;
  if (hasFeature(f, tso4)) bits |= VirtioNetGso.TCPV4;
  if (hasFeature(f, tso6)) bits |= VirtioNetGso.TCPV6;
  if (bits !== 0 && hasFeature(f, ecn)) bits |= VirtioNetGso.ECN;
  return bits;
}

/** The RX filter state (§5.1.6.5.1–2), as QEMU keeps it. */
interface RxMode {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  uni: number[];
  multi: number[];
  uniOverflow: boolean;
  multiOverflow: boolean;
}

function defaultRxMode(): RxMode {
  // QEMU's reset state: promiscuous until the driver says otherwise.
  return {
    promisc: true,
    allmulti: false,
    alluni: false,
    nomulti: false,
    nouni: false,
    nobcast: false,
    uni: [],
    multi: [],
    uniOverflow: false,
    multiOverflow: false,
  };
}

interface Waiting {
  frame: Uint8Array;
  flags: number;
  csumStart: number;
  csumOffset: number;
  /** virtio `gso_type` (NONE for an ordinary frame). */
  gsoType: number;
  /** virtio `gso_size` (0 for an ordinary frame). */
  gsoSize: number;
  /** virtio `hdr_len`: bytes of headers before the TCP payload (0 for an ordinary frame). */
  hdrLen: number;
}

/** Per receive queue: frames waiting for buffers and chains held for a merged frame. */
class RxState {
  readonly waiting: Waiting[] = [];
  head = 0;
  readonly held: DescriptorChain[] = [];
  heldBytes = 0;
  get pending(): number {
    return this.waiting.length - this.head;
  }
  clear(): void {
    this.waiting.length = 0;
    this.head = 0;
    this.held.length = 0;
    this.heldBytes = 0;
  }
}

function macKey(b: Uint8Array, off: number): number {
  return (
    ((b[off]! << 8) | b[off + 1]!) * 0x1_0000_0000 +
    (((b[off + 2]! << 24) | (b[off + 3]! << 16) | (b[off + 4]! << 8) | b[off + 5]!) >>> 0)
  );
}

/** The virtio network device. */
export class VirtioNetDevice extends VirtioDeviceBase<VirtioNetEvents> {
  /** The back-end. */
  readonly backend: NetBackend;
  /** The most queue pairs (max_virtqueue_pairs). */
  readonly maxQueuePairs: number;
  /** The configured MTU. */
  readonly mtu: number;
  /** Counters. */
  readonly stats: VirtioNetStats;

  private readonly initialMac: Uint8Array;
  private readonly rxPendingMax: number;
  private readonly macTableEntries: number;
  private readonly rx: RxState[];
  private readonly txBlocked: (DescriptorChain | null)[];
  private link: boolean;
  private pairs = 1;
  private mode: RxMode = defaultRxMode();
  // Negotiated, set at DRIVER_OK.
  private mrg = false;
  private csum = false;
  private guestCsum = false;
  /** Negotiated HOST_TSO4 / HOST_TSO6 / HOST_ECN, as VirtioNetGso type bits the guest may send. */
  private hostGso = 0;
  /** Negotiated GUEST_TSO4 / GUEST_TSO6 / GUEST_ECN, as VirtioNetGso type bits the guest takes. */
  private guestGso = 0;
  private mtuNegotiated = false;
  private ctrlIndex = -1;
  private mq = false;
  private rxExtra = false;
  private ctrlRxOn = false;
  // Scratch (no allocation per frame).
  private readonly hdr = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private txBuf: Uint8Array;
  private readonly txMtuBytes: number;
  /** Where GSO frames are cut (headers + one MSS). */
  private gsoScratch = new Uint8Array(0);
  private readonly meta: NetFrameMeta = { flags: 0, csumStart: 0, csumOffset: 0 };
  private readonly rxNow: Waiting = {
    frame: new Uint8Array(0),
    flags: 0,
    csumStart: 0,
    csumOffset: 0,
    gsoType: 0,
    gsoSize: 0,
    hdrLen: 0,
  };
  private readonly gsoMeta: NetFrameMeta = {
    flags: 0,
    csumStart: 0,
    csumOffset: 0,
    gsoType: 0,
    gsoSize: 0,
  };
  private readonly ctrlBuf = new Uint8Array(6);
  private readonly ackByte = new Uint8Array(1);

  /**
   * @param options - the back-end and what to offer
   * @throws TypeError when `options` is not an object or `options.backend` is not a
   *   `NetBackend` (the message names the option, the type expected and the value
   *   given); RangeError on an MTU, queue-pair count or MAC out of range
   */
  constructor(options: VirtioNetOptions) {
    expectOptions("new VirtioNetDevice", options, "{ backend, mac?, mtu?, … }");
    expectArgument(
      "new VirtioNetDevice",
      "options.backend",
      options.backend,
      "a NetBackend (e.g. new LoopbackBackend() or switch.createPort(name); attach, detach and send methods)",
      isNetBackendLike,
    );
    const mtu = options.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < VIRTIO_NET_MIN_MTU || mtu > 65535)
      throw new RangeError(`MTU ${mtu} is outside 68..65535 (§5.1.4.1)`);
    const pairs = options.maxQueuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)
      throw new RangeError(`max queue pairs ${pairs} is outside 1..0x8000 (§5.1.4)`);
    const mac =
      typeof options.mac === "string" ? parseMac(options.mac) : (options.mac ?? DEFAULT_MAC);
    if (mac === null || mac.length !== 6) throw new RangeError("the MAC address must be 6 bytes");
    const ctrl = options.ctrlVq ?? true;
    const bits: number[] = [];
    if (options.offerMac ?? true) bits.push(VIRTIO_NET_F_MAC);
    if (options.offerMtu ?? true) bits.push(VIRTIO_NET_F_MTU);
    if (options.status ?? true) bits.push(VIRTIO_NET_F_STATUS);
    if (options.mrgRxbuf ?? true) bits.push(VIRTIO_NET_F_MRG_RXBUF);
    if (options.csum ?? true) bits.push(VIRTIO_NET_F_CSUM);
    if (options.guestCsum ?? true) bits.push(VIRTIO_NET_F_GUEST_CSUM);
    if ((options.csum ?? true) && (options.tso ?? true))
      bits.push(VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN);
    if ((options.guestCsum ?? true) && (options.guestTso ?? true))
      bits.push(VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN);
    if (ctrl) {
      bits.push(VIRTIO_NET_F_CTRL_VQ);
      if (options.ctrlRx ?? true) bits.push(VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA);
      if (options.ctrlMacAddr ?? true) bits.push(VIRTIO_NET_F_CTRL_MAC_ADDR);
      if (options.guestAnnounce ?? true) bits.push(VIRTIO_NET_F_GUEST_ANNOUNCE);
      if (pairs > 1) bits.push(VIRTIO_NET_F_MQ);
    }
    const qs = options.queueSize ?? 256;
    const sizes: number[] = [];
    for (let i = 0; i < 2 * pairs; i++) sizes.push(qs);
    if (ctrl) sizes.push(options.ctrlQueueSize ?? 64);
    super({
      deviceId: VirtioDeviceId.NET,
      features: featureMask(...bits),
      queueSizes: sizes,
      configSize: C.SIZE,
      ...(options.eventIdx === undefined ? {} : { eventIdx: options.eventIdx }),
      ...(options.indirectDesc === undefined ? {} : { indirectDesc: options.indirectDesc }),
      ...(options.ringPacked === undefined ? {} : { ringPacked: options.ringPacked }),
    });
    this.backend = options.backend;
    this.maxQueuePairs = pairs;
    this.mtu = mtu;
    this.initialMac = mac.slice();
    this.rxPendingMax = options.rxPending ?? 256;
    this.macTableEntries = options.macTableEntries ?? 64;
    this.rx = Array.from({ length: pairs }, () => new RxState());
    this.txBlocked = new Array<DescriptorChain | null>(pairs).fill(null);
    this.txMtuBytes = mtu + ETH_HLEN + VLAN_HLEN;
    this.txBuf = new Uint8Array(this.txMtuBytes);
    this.link = options.linkUp ?? this.backend.linkUp;
    this.stats = {
      txFrames: 0,
      txBytes: 0,
      rxFrames: 0,
      rxBytes: 0,
      rxBuffers: 0,
      checksumsCompleted: 0,
      txGsoFrames: 0,
      gsoSegmented: 0,
      rxGsoFrames: 0,
      txBusy: 0,
      controlOk: 0,
      drops: {
        txNoHeader: 0,
        txShortHeader: 0,
        txOversize: 0,
        txRunt: 0,
        txBadGso: 0,
        txBadChecksum: 0,
        txLinkDown: 0,
        txBackend: 0,
        rxNotReady: 0,
        rxLinkDown: 0,
        rxFiltered: 0,
        rxRunt: 0,
        rxOversize: 0,
        rxBadGso: 0,
        rxQueueFull: 0,
        rxBufferTooSmall: 0,
      },
      controlErrors: {
        noAckByte: 0,
        truncated: 0,
        unknownClass: 0,
        unknownCommand: 0,
        notNegotiated: 0,
        badLength: 0,
        badMacTable: 0,
        badPairs: 0,
      },
    };
    // §5.1.4: the configuration layout.
    const v = this.configView;
    this.config.set(mac, C.MAC);
    v.setUint16(C.STATUS, this.link ? VIRTIO_NET_S_LINK_UP : 0, true);
    v.setUint16(C.MAX_VIRTQUEUE_PAIRS, pairs, true);
    v.setUint16(C.MTU, mtu, true);
    v.setUint32(C.SPEED, 0xffff_ffff, true); // unknown (SPEED_DUPLEX not offered)
    v.setUint8(C.DUPLEX, 0xff); // unknown
    this.backend.attach({
      receive: (frame, meta) => this.receive(frame, meta),
      linkChange: (up) => this.setLinkUp(up),
      writable: () => this.resumeTx(),
    });
  }

  /** The current MAC address (config `mac`; changed by CTRL_MAC_ADDR). */
  get mac(): Uint8Array {
    return this.config.slice(C.MAC, C.MAC + 6);
  }
  /** Whether the link is up. */
  get linkUp(): boolean {
    return this.link;
  }
  /** Queue pairs in use (VQ_PAIRS_SET; 1 after reset). */
  get activeQueuePairs(): number {
    return this.pairs;
  }
  /** The RX filter state (read-only snapshot). */
  get rxMode(): Readonly<Omit<RxMode, "uni" | "multi">> & { uni: number; multi: number } {
    const m = this.mode;
    return { ...m, uni: m.uni.length, multi: m.multi.length };
  }
  /** Frames waiting for receive buffers, per queue pair. */
  pendingFrames(pair = 0): number {
    return this.rx[pair]?.pending ?? 0;
  }

  /**
   * Sets the link state (§5.1.4 `status`): updates VIRTIO_NET_S_LINK_UP and sends a
   * configuration-change notification to a live driver.
   */
  setLinkUp(up: boolean): void {
    if (up === this.link) return;
    this.link = up;
    const v = this.configView;
    const s = v.getUint16(C.STATUS, true);
    v.setUint16(C.STATUS, up ? s | VIRTIO_NET_S_LINK_UP : s & ~VIRTIO_NET_S_LINK_UP, true);
    if (hasFeature(this.deviceFeatures, VIRTIO_NET_F_STATUS)) this.configChanged();
    this.emit("link", up);
    if (up) this.resumeTx();
  }

  /**
   * Asks the driver to announce itself (after a migration, §5.1.6.5.4): sets
   * VIRTIO_NET_S_ANNOUNCE and notifies. Needs GUEST_ANNOUNCE negotiated.
   *
   * @returns whether the request was made
   */
  announce(): boolean {
    if (!this.isLive || !hasFeature(this.negotiatedFeatures, VIRTIO_NET_F_GUEST_ANNOUNCE))
      return false;
    const v = this.configView;
    v.setUint16(C.STATUS, v.getUint16(C.STATUS, true) | VIRTIO_NET_S_ANNOUNCE, true);
    this.configChanged();
    return true;
  }

  protected override validateFeatures(f: bigint): string | undefined {
    // §5.1.3.1: these need the control virtqueue.
    if (!hasFeature(f, VIRTIO_NET_F_CTRL_VQ)) {
      for (const [bit, name] of [
        [VIRTIO_NET_F_CTRL_RX, "CTRL_RX"],
        [VIRTIO_NET_F_CTRL_RX_EXTRA, "CTRL_RX_EXTRA"],
        [VIRTIO_NET_F_GUEST_ANNOUNCE, "GUEST_ANNOUNCE"],
        [VIRTIO_NET_F_MQ, "MQ"],
        [VIRTIO_NET_F_CTRL_MAC_ADDR, "CTRL_MAC_ADDR"],
      ] as const) {
        if (hasFeature(f, bit)) return `driver accepted ${name} without CTRL_VQ (§5.1.3.1)`;
      }
    }
    if (hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA) && !hasFeature(f, VIRTIO_NET_F_CTRL_RX))
      return "driver accepted CTRL_RX_EXTRA without CTRL_RX (§5.1.3.1)";
    for (const [bit, name, needs, needsName] of [
      [VIRTIO_NET_F_HOST_TSO4, "HOST_TSO4", [VIRTIO_NET_F_CSUM], "CSUM"],
      [VIRTIO_NET_F_HOST_TSO6, "HOST_TSO6", [VIRTIO_NET_F_CSUM], "CSUM"],
      [
        VIRTIO_NET_F_HOST_ECN,
        "HOST_ECN",
        [VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6],
        "HOST_TSO4 or HOST_TSO6",
      ],
      [VIRTIO_NET_F_GUEST_TSO4, "GUEST_TSO4", [VIRTIO_NET_F_GUEST_CSUM], "GUEST_CSUM"],
      [VIRTIO_NET_F_GUEST_TSO6, "GUEST_TSO6", [VIRTIO_NET_F_GUEST_CSUM], "GUEST_CSUM"],
      [
        VIRTIO_NET_F_GUEST_ECN,
        "GUEST_ECN",
        [VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6],
        "GUEST_TSO4 or GUEST_TSO6",
      ],
    ] as const) {
      if (hasFeature(f, bit) && !needs.some((n) => hasFeature(f, n)))
        return `driver accepted ${name} without ${needsName} (§5.1.3.1)`;
    }
    return undefined;
  }

  protected override onActivate(f: bigint): VirtioError | undefined {
    this.mrg = hasFeature(f, VIRTIO_NET_F_MRG_RXBUF);
    this.csum = hasFeature(f, VIRTIO_NET_F_CSUM);
    this.guestCsum = hasFeature(f, VIRTIO_NET_F_GUEST_CSUM);
    this.mtuNegotiated = hasFeature(f, VIRTIO_NET_F_MTU);
    this.hostGso = gsoBits(
      f,
      VIRTIO_NET_F_HOST_TSO4,
      VIRTIO_NET_F_HOST_TSO6,
      VIRTIO_NET_F_HOST_ECN,
    );
    this.guestGso = gsoBits(
      f,
      VIRTIO_NET_F_GUEST_TSO4,
      VIRTIO_NET_F_GUEST_TSO6,
      VIRTIO_NET_F_GUEST_ECN,
    );
    // A TSO frame is at most 64 KiB of IP packet behind an Ethernet header and a VLAN tag.
    if (this.hostGso !== 0 && this.txBuf.length < GSO_MAX_FRAME)
      this.txBuf = new Uint8Array(GSO_MAX_FRAME);
    this.mq = hasFeature(f, VIRTIO_NET_F_MQ);
    this.ctrlRxOn = hasFeature(f, VIRTIO_NET_F_CTRL_RX);
    this.rxExtra = hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA);
    this.ctrlIndex = hasFeature(f, VIRTIO_NET_F_CTRL_VQ)
      ? ctrlQueueIndex(this.mq, this.maxQueuePairs)
      : -1;
    this.pairs = 1; // §5.1.6.5.5: only the first pair is used until VQ_PAIRS_SET
    return undefined;
  }

  protected override onReset(): void {
    for (const r of this.rx) r.clear();
    this.txBlocked.fill(null);
    this.pairs = 1;
    this.mode = defaultRxMode();
    this.mrg = this.csum = this.guestCsum = this.mtuNegotiated = this.mq = false;
    this.hostGso = this.guestGso = 0;
    this.rxExtra = this.ctrlRxOn = false;
    this.ctrlIndex = -1;
    this.config.set(this.initialMac, C.MAC);
    const v = this.configView;
    v.setUint16(C.STATUS, this.link ? VIRTIO_NET_S_LINK_UP : 0, true);
  }

  protected onQueueNotify(index: number, queue: DeviceVirtqueue): void {
    if (index === this.ctrlIndex) {
      this.serveQueue(queue, (chain) => this.control(chain));
      return;
    }
    const usable = this.mq ? this.maxQueuePairs : 1;
    const pair = index >> 1;
    if (pair >= usable) return; // not a data queue under the negotiated features
    if ((index & 1) === 0) this.flushRx(pair);
    else this.serveTx(pair);
  }

  // ── Receive ──────────────────────────────────────────────────────────────────

  private drop(reason: NetDropReason, queue: number): void {
    this.stats.drops[reason]++;
    if (this.listenerCount("drop") > 0) this.emit("drop", reason, queue);
  }

  /** A frame from the back-end. */
  private receive(frame: Uint8Array, meta: NetFrameMeta | null): void {
    if (!this.isLive) {
      this.drop("rxNotReady", -1);
      return;
    }
    if (!this.link) {
      this.drop("rxLinkDown", -1);
      return;
    }
    const len = frame.length;
    if (len < ETH_HEADER_LEN) {
      this.drop("rxRunt", -1);
      return;
    }
    const gsoType = meta?.gsoType ?? VirtioNetGso.NONE;
    if (gsoType !== VirtioNetGso.NONE) {
      this.receiveGso(frame, meta!);
      return;
    }
    // §5.1.6.3.2: with MTU negotiated, nothing above mtu + Ethernet header (+ VLAN tag).
    if (this.mtuNegotiated ? len > this.mtu + ETH_HLEN + VLAN_HLEN : len > 65535) {
      this.drop("rxOversize", -1);
      return;
    }
    if (!this.accepts(frame)) {
      this.drop("rxFiltered", -1);
      return;
    }
    this.enqueueRx(frame, meta, VirtioNetGso.NONE, 0, 0);
  }

  /**
   * A GSO frame from the back-end: whole to a guest that negotiated its type
   * (GUEST_TSO4 / GUEST_TSO6, GUEST_ECN with CWR; §5.1.6.4), cut into MTU-sized frames
   * for one that did not.
   */
  private receiveGso(frame: Uint8Array, meta: NetFrameMeta): void {
    const layout = checkGso(frame, meta);
    if (typeof layout === "string" || frame.length > GSO_MAX_FRAME) {
      this.drop("rxBadGso", -1);
      return;
    }
    if (!this.accepts(frame)) {
      this.drop("rxFiltered", -1);
      return;
    }
    const type = meta.gsoType!;
    if ((type & ~this.guestGso) === 0) {
      this.stats.rxGsoFrames++;
      this.enqueueRx(frame, meta, type, layout.mss, layout.payload);
      return;
    }
    if (this.gsoScratch.length < layout.payload + layout.mss)
      this.gsoScratch = new Uint8Array(layout.payload + layout.mss);
    this.stats.gsoSegmented++;
    segmentGso(frame, layout, !this.guestCsum, this.gsoScratch, (segment, m) => {
      if (m === null) this.stats.checksumsCompleted++;
      this.enqueueRx(segment, m, VirtioNetGso.NONE, 0, 0);
      return true;
    });
  }

  /** Delivers a frame that passed the filters now, or queues it until buffers come. */
  private enqueueRx(
    frame: Uint8Array,
    meta: NetFrameMeta | null,
    gsoType: number,
    gsoSize: number,
    hdrLen: number,
  ): void {
    const pair = this.pairs === 1 ? 0 : flowHash(frame) % this.pairs;
    const st = this.rx[pair]!;
    const queue = this.queues[2 * pair]!;
    let flags = meta === null ? 0 : meta.flags;
    let csumStart = meta === null ? 0 : meta.csumStart;
    let csumOffset = meta === null ? 0 : meta.csumOffset;
    if (flags & NET_META_NEEDS_CSUM && !this.guestCsum) {
      // The guest cannot take a partial checksum: complete it (on a copy; the sender owns `frame`).
      frame = frame.slice();
      if (completeChecksum(frame, csumStart, csumOffset)) this.stats.checksumsCompleted++;
      flags = 0;
      csumStart = csumOffset = 0;
    }
    if (!this.guestCsum) flags = 0;
    const w = this.rxNow; // scratch: no allocation per frame delivered at once
    w.frame = frame;
    w.flags = flags;
    w.csumStart = csumStart;
    w.csumOffset = csumOffset;
    w.gsoType = gsoType;
    w.gsoSize = gsoSize;
    w.hdrLen = hdrLen;
    if (st.pending === 0 && queue.isActive && this.deliver(pair, w)) {
      this.interruptIfNeeded(queue);
      return;
    }
    if (st.pending >= this.rxPendingMax) {
      this.drop("rxQueueFull", 2 * pair);
      return;
    }
    st.waiting.push({ ...w, frame: frame.slice() });
    // Ask to be told when the guest refills (§2.7.10), closing the race with a refill now.
    if (queue.isActive && queue.enableNotification()) this.flushRx(pair);
    // A failed MRG_RXBUF gather may have returned too-small buffers (used length 0): publish
    // them now, or the driver would never see them and could wait forever to refill.
    else if (queue.isActive) this.interruptIfNeeded(queue);
  }

  /** Delivers waiting frames while buffers last; notifications stay on only while frames wait. */
  private flushRx(pair: number): void {
    const st = this.rx[pair]!;
    const queue = this.queues[2 * pair]!;
    for (let rounds = 0; rounds < 2 * queue.size + 2; rounds++) {
      while (st.pending > 0) {
        const w = st.waiting[st.head]!;
        if (!this.deliver(pair, w)) break;
        st.waiting[st.head] = undefined as unknown as Waiting;
        st.head++;
      }
      if (st.pending === 0) {
        st.waiting.length = 0;
        st.head = 0;
        queue.disableNotification();
        break;
      }
      if (st.head > 64 && st.head * 2 > st.waiting.length) {
        st.waiting.splice(0, st.head);
        st.head = 0;
      }
      if (!queue.enableNotification()) break;
    }
    this.interruptIfNeeded(queue);
  }

  /**
   * Writes one frame into the guest's receive buffers (§5.1.6.4).
   *
   * @returns true when the frame was consumed (delivered, or dropped with its too-small
   *   buffer returned), false when buffers ran out (the frame must wait)
   */
  private deliver(pair: number, w: Waiting): boolean {
    const { frame, flags, csumStart, csumOffset } = w;
    const qi = 2 * pair;
    const queue = this.queues[qi]!;
    const need = VIRTIO_NET_HDR_SIZE + frame.length;
    const h = this.hdrView;
    h.setUint8(
      0,
      flags & NET_META_NEEDS_CSUM
        ? VIRTIO_NET_HDR_F_NEEDS_CSUM
        : flags & NET_META_DATA_VALID
          ? VIRTIO_NET_HDR_F_DATA_VALID
          : 0,
    );
    h.setUint8(1, w.gsoType);
    h.setUint16(2, w.hdrLen, true);
    h.setUint16(4, w.gsoSize, true);
    h.setUint16(6, flags & NET_META_NEEDS_CSUM ? csumStart : 0, true);
    h.setUint16(8, flags & NET_META_NEEDS_CSUM ? csumOffset : 0, true);
    if (!this.mrg) {
      const chain = queue.popChain();
      if (chain === null) return false;
      if (chain.writableLength < need) {
        // §5.1.6.3.1: without MRG_RXBUF one chain must hold the whole packet. Give the buffer
        // back empty and drop the frame.
        queue.addUsed(chain.head, 0);
        this.drop("rxBufferTooSmall", qi);
        return true;
      }
      h.setUint16(10, 1, true); // num_buffers, little-endian (not v86's big-endian)
      chain.copyToWritable(0, this.hdr);
      chain.copyToWritable(VIRTIO_NET_HDR_SIZE, frame);
      queue.addUsed(chain.head, need);
      this.stats.rxBuffers++;
      this.delivered(frame, qi);
      return true;
    }
    // MRG_RXBUF: gather chains until the header and the frame fit; keep them if we run out.
    const st = this.rx[pair]!;
    while (st.heldBytes < need) {
      const chain = queue.popChain();
      if (chain === null) return false;
      // §5.1.6.3.1: each buffer must hold at least a header.
      if (chain.writableLength < VIRTIO_NET_HDR_SIZE) {
        queue.addUsed(chain.head, 0);
        this.drop("rxBufferTooSmall", qi);
        continue;
      }
      st.held.push(chain);
      st.heldBytes += chain.writableLength;
    }
    const n = st.held.length;
    h.setUint16(10, n, true);
    let done = 0;
    for (let i = 0; i < n; i++) {
      const chain = st.held[i]!;
      let at = 0;
      if (i === 0) {
        chain.copyToWritable(0, this.hdr);
        at = VIRTIO_NET_HDR_SIZE;
      }
      const k = chain.copyToWritable(at, frame, done, frame.length - done);
      done += k;
      // §5.1.6.4: each used length counts only the bytes written into that buffer.
      queue.addUsed(chain.head, at + k);
    }
    this.stats.rxBuffers += n;
    st.held.length = 0;
    st.heldBytes = 0;
    this.delivered(frame, qi);
    return true;
  }

  private delivered(frame: Uint8Array, qi: number): void {
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
    if (this.listenerCount("frame") > 0) this.emit("frame", "rx", frame, qi);
  }

  /** The RX filter (§5.1.6.5.1–2; QEMU `receive_filter` order). */
  private accepts(f: Uint8Array): boolean {
    const m = this.mode;
    if (m.promisc) return true;
    if (f[0]! & 1) {
      if (
        f[0] === 0xff &&
        f[1] === 0xff &&
        f[2] === 0xff &&
        f[3] === 0xff &&
        f[4] === 0xff &&
        f[5] === 0xff
      )
        return !m.nobcast;
      if (m.nomulti) return false;
      if (m.allmulti || m.multiOverflow) return true;
      return m.multi.includes(macKey(f, 0));
    }
    if (m.nouni) return false;
    if (m.alluni || m.uniOverflow) return true;
    const c = this.config;
    if (
      f[0] === c[0] &&
      f[1] === c[1] &&
      f[2] === c[2] &&
      f[3] === c[3] &&
      f[4] === c[4] &&
      f[5] === c[5]
    )
      return true;
    return m.uni.includes(macKey(f, 0));
  }

  // ── Transmit ─────────────────────────────────────────────────────────────────

  private serveTx(pair: number): void {
    if (this.txBlocked[pair] !== null) return; // waiting for the back-end
    const queue = this.queues[2 * pair + 1]!;
    let budget = queue.size;
    for (;;) {
      queue.disableNotification();
      while (budget > 0) {
        const chain = queue.popChain();
        if (chain === null) break;
        budget--;
        if (!this.transmit(chain, 2 * pair + 1)) {
          // Busy: keep the chain (notifications stay off) until the back-end is writable.
          this.txBlocked[pair] = chain;
          this.interruptIfNeeded(queue);
          return;
        }
        queue.addUsed(chain.head, 0);
      }
      if (!queue.enableNotification()) break;
      if (budget === 0) {
        this.schedule(() => this.notifyQueue(queue.index));
        break;
      }
    }
    this.interruptIfNeeded(queue);
  }

  /** The back-end can take frames again: retry blocked chains, then carry on. */
  private resumeTx(): void {
    if (!this.isLive) return;
    for (let pair = 0; pair < this.txBlocked.length; pair++) {
      const chain = this.txBlocked[pair];
      if (chain === null || chain === undefined) continue;
      const queue = this.queues[2 * pair + 1]!;
      if (!this.transmit(chain, 2 * pair + 1)) return; // still busy
      this.txBlocked[pair] = null;
      queue.addUsed(chain.head, 0);
      this.serveTx(pair);
    }
  }

  /**
   * Sends one TX chain (§5.1.6.2). Malformed chains are dropped and counted.
   *
   * @returns false only when the back-end said "busy" (the chain must be retried)
   */
  private transmit(chain: DescriptorChain, qi: number): boolean {
    const rl = chain.readableLength;
    if (rl === 0) return this.txDrop("txNoHeader", qi);
    if (rl < VIRTIO_NET_HDR_SIZE) return this.txDrop("txShortHeader", qi);
    const len = rl - VIRTIO_NET_HDR_SIZE;
    chain.copyFromReadable(0, this.hdr, 0, VIRTIO_NET_HDR_SIZE);
    const h = this.hdrView;
    const gsoType = h.getUint8(1);
    // A gso_type the device offered (§5.1.6.2.1); ECN alone, or any other, is refused below.
    const gso =
      gsoType !== VirtioNetGso.NONE &&
      gsoType !== VirtioNetGso.ECN &&
      (gsoType & ~this.hostGso) === 0;
    const buf = this.txBuf;
    if (len > (gso ? buf.length : this.txMtuBytes)) return this.txDrop("txOversize", qi);
    if (len < ETH_HEADER_LEN) return this.txDrop("txRunt", qi);
    chain.copyFromReadable(VIRTIO_NET_HDR_SIZE, buf, 0, len);
    const frame = buf.subarray(0, len);
    if (gso) return this.transmitGso(frame, gsoType, qi);
    if (len > this.mtu + ETH_HLEN) {
      const type = (buf[12]! << 8) | buf[13]!;
      if (type !== 0x8100 && type !== 0x88a8) return this.txDrop("txOversize", qi);
    }
    if (gsoType !== VirtioNetGso.NONE) return this.txDrop("txBadGso", qi);
    let meta: NetFrameMeta | null = null;
    if (this.csum && h.getUint8(0) & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      const start = h.getUint16(6, true);
      const off = h.getUint16(8, true);
      if (start >= len || start + off + 2 > len) return this.txDrop("txBadChecksum", qi);
      if (this.backend.checksumOffload) {
        meta = this.meta;
        meta.flags = NET_META_NEEDS_CSUM;
        meta.csumStart = start;
        meta.csumOffset = off;
      } else {
        completeChecksum(frame, start, off);
        this.stats.checksumsCompleted++;
      }
    }
    if (!this.link) return this.txDrop("txLinkDown", qi);
    return this.sendResult(this.backend.send(frame, meta), frame, qi);
  }

  /**
   * Sends a TSO frame (§5.1.6.2: gso_type TCPV4/TCPV6, NEEDS_CSUM on the TCP checksum,
   * gso_size the MSS): whole to a back-end that takes GSO frames, otherwise cut into
   * MTU-sized frames here. A busy back-end on the first frame keeps the chain for a retry;
   * later frames it refuses are dropped and counted (TCP retransmits them).
   */
  private transmitGso(frame: Uint8Array, gsoType: number, qi: number): boolean {
    const h = this.hdrView;
    const meta = this.gsoMeta;
    meta.flags = h.getUint8(0) & VIRTIO_NET_HDR_F_NEEDS_CSUM ? NET_META_NEEDS_CSUM : 0;
    meta.gsoType = gsoType;
    meta.gsoSize = h.getUint16(4, true);
    meta.csumStart = h.getUint16(6, true);
    meta.csumOffset = h.getUint16(8, true);
    const layout = checkGso(frame, meta);
    if (typeof layout === "string") return this.txDrop("txBadGso", qi);
    if (!this.link) return this.txDrop("txLinkDown", qi);
    const b = this.backend;
    if (b.gso === true && b.checksumOffload) {
      const ok = this.sendResult(b.send(frame, meta), frame, qi);
      if (ok) this.stats.txGsoFrames++;
      return ok;
    }
    if (this.gsoScratch.length < layout.payload + layout.mss)
      this.gsoScratch = new Uint8Array(layout.payload + layout.mss);
    let first = true;
    let retry = false;
    segmentGso(frame, layout, !b.checksumOffload, this.gsoScratch, (segment, m) => {
      const r = b.send(segment, m);
      if (r === "busy" && first) {
        this.stats.txBusy++;
        retry = true;
        return false;
      }
      first = false;
      if (m === null) this.stats.checksumsCompleted++;
      if (r !== "sent") {
        this.txDrop("txBackend", qi);
        return false;
      }
      return this.sendResult(r, segment, qi);
    });
    if (retry) return false;
    this.stats.txGsoFrames++;
    this.stats.gsoSegmented++;
    return true;
  }

  /** Accounts for what the back-end answered; false only for "busy" (retry the chain). */
  private sendResult(r: NetSendResult, frame: Uint8Array, qi: number): boolean {
    if (r === "busy") {
      this.stats.txBusy++;
      return false;
    }
    if (r === "dropped") return this.txDrop("txBackend", qi);
    this.stats.txFrames++;
    this.stats.txBytes += frame.length;
    if (this.listenerCount("frame") > 0) this.emit("frame", "tx", frame, qi);
    return true;
  }

  private txDrop(reason: NetDropReason, qi: number): true {
    this.drop(reason, qi);
    return true;
  }

  // ── Control queue ────────────────────────────────────────────────────────────

  /** Serves one control command (§5.1.6.5). @returns the used length */
  private control(chain: DescriptorChain): number {
    let cls = -1;
    let cmd = -1;
    let err: NetControlError | null = null;
    if (chain.writableLength < 1) err = "noAckByte";
    else if (chain.readableLength < 2) err = "truncated";
    else {
      const r = chain.reader;
      cls = r.readU8();
      cmd = r.readU8();
      const dataLen = chain.readableLength - 2;
      err = this.command(cls, cmd, chain, dataLen);
    }
    const ack = err === null ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
    if (err === null) this.stats.controlOk++;
    else this.stats.controlErrors[err]++;
    this.emit("control", cls, cmd, ack, err);
    if (err === "noAckByte") return 0; // nowhere to answer: returned empty
    // §5.1.6.5: the ack byte follows the command-specific data, in the writable part.
    this.ackByte[0] = ack;
    chain.copyToWritable(0, this.ackByte);
    return 1;
  }

  private command(
    cls: number,
    cmd: number,
    chain: DescriptorChain,
    dataLen: number,
  ): NetControlError | null {
    const f = this.negotiatedFeatures;
    const r = chain.reader;
    switch (cls) {
      case VIRTIO_NET_CTRL_RX: {
        if (!this.ctrlRxOn) return "notNegotiated";
        if (cmd > VIRTIO_NET_CTRL_RX_NOBCAST) return "unknownCommand";
        if (cmd >= VIRTIO_NET_CTRL_RX_ALLUNI && !this.rxExtra) return "notNegotiated";
        if (dataLen !== 1) return "badLength";
        const on = r.readU8() !== 0;
        const m = this.mode;
        if (cmd === VIRTIO_NET_CTRL_RX_PROMISC) m.promisc = on;
        else if (cmd === VIRTIO_NET_CTRL_RX_ALLMULTI) m.allmulti = on;
        else if (cmd === VIRTIO_NET_CTRL_RX_ALLUNI) m.alluni = on;
        else if (cmd === VIRTIO_NET_CTRL_RX_NOMULTI) m.nomulti = on;
        else if (cmd === VIRTIO_NET_CTRL_RX_NOUNI) m.nouni = on;
        else m.nobcast = on;
        return null;
      }
      case VIRTIO_NET_CTRL_MAC: {
        if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
          if (!hasFeature(f, VIRTIO_NET_F_CTRL_MAC_ADDR)) return "notNegotiated";
          if (dataLen !== 6) return "badLength";
          const mac = this.ctrlBuf.subarray(0, 6);
          r.read(mac);
          this.config.set(mac, C.MAC);
          return null;
        }
        if (cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
          if (!this.ctrlRxOn) return "notNegotiated";
          return this.macTable(chain, dataLen);
        }
        return "unknownCommand";
      }
      case VIRTIO_NET_CTRL_ANNOUNCE: {
        if (!hasFeature(f, VIRTIO_NET_F_GUEST_ANNOUNCE)) return "notNegotiated";
        if (cmd !== VIRTIO_NET_CTRL_ANNOUNCE_ACK) return "unknownCommand";
        if (dataLen !== 0) return "badLength";
        const v = this.configView;
        v.setUint16(C.STATUS, v.getUint16(C.STATUS, true) & ~VIRTIO_NET_S_ANNOUNCE, true);
        return null;
      }
      case VIRTIO_NET_CTRL_MQ: {
        if (!this.mq) return "notNegotiated";
        if (cmd !== VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) return "unknownCommand";
        if (dataLen !== 2) return "badLength";
        const n = r.readU16();
        // §5.1.6.5.5: 1 ≤ virtqueue_pairs ≤ max_virtqueue_pairs.
        if (n < 1 || n > this.maxQueuePairs) return "badPairs";
        this.pairs = n;
        return null;
      }
      default:
        return "unknownClass";
    }
  }

  /** MAC_TABLE_SET: unicast table then multicast table, each `le32 entries; u8 macs[entries][6]`, nothing else. */
  private macTable(chain: DescriptorChain, dataLen: number): NetControlError | null {
    const r = chain.reader;
    if (dataLen < 8) return "badMacTable";
    const nUni = r.readU32();
    if (nUni > (dataLen - 8) / 6) return "badMacTable";
    const uni = this.readMacs(chain, nUni);
    const nMulti = r.readU32();
    if (nMulti < 0 || 8 + 6 * (nUni + nMulti) !== dataLen) return "badMacTable";
    const multi = this.readMacs(chain, nMulti);
    const m = this.mode;
    m.uniOverflow = nUni > this.macTableEntries;
    m.multiOverflow = nMulti > this.macTableEntries;
    m.uni = m.uniOverflow ? [] : uni;
    m.multi = m.multiOverflow ? [] : multi;
    return null;
  }

  private readMacs(chain: DescriptorChain, n: number): number[] {
    const out: number[] = [];
    const b = this.ctrlBuf.subarray(0, 6);
    const keep = Math.min(n, this.macTableEntries);
    for (let i = 0; i < keep; i++) {
      chain.reader.read(b);
      out.push(macKey(b, 0));
    }
    chain.reader.skip((n - keep) * 6); // an overflowing table is not read entry by entry
    return out;
  }
}
