/**
 * Fuzz target `net-ctrl`: the virtio-net control queue (virtio 1.2 §5.1.6.5) and the
 * receive path it configures (§5.1.6.3–4), driven by a hostile driver over raw rings.
 *
 * Each case is a sequence of steps on one device behind virtio-mmio: control commands
 * (RX modes §5.1.6.5.1, MAC table with hostile entry counts and MAC address §5.1.6.5.2,
 * VLAN §5.1.6.5.3, announce §5.1.6.5.4, VQ_PAIRS_SET §5.1.6.5.5, unknown classes,
 * truncated or ack-less chains) and frames injected from the back-end into receive
 * buffers of hostile sizes (tiny, zero, huge, outside memory), with and without
 * MRG_RXBUF. An independent model of the filter (QEMU's `receive_filter` order), of
 * steering and of buffer consumption predicts every ack byte, the filter state, which
 * frames are delivered or dropped, the exact bytes and used lengths (§5.1.6.4:
 * `num_buffers`, each used length counting only its own bytes), and when the device must
 * enter DEVICE_NEEDS_RESET (§2.7.13 queue corruption). After NEEDS_RESET the driver resets
 * and the device must serve again.
 *
 * @module
 */

import { LoopbackBackend } from "@pvkit/platform";
import { VIRTIO_CONFIG_S_NEEDS_RESET, VirtioMmio } from "@pvkit/virtio-core";
import {
  fillCanary,
  type MemoryRange,
  type MockSplitQueue,
  type RawMmioGuest,
  rawMmioGuest,
} from "@pvkit/virtio-core/testing";
import {
  flowHash,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_ANNOUNCE,
  VirtioNetDevice,
  type VirtioNetOptions,
} from "@pvkit/virtio-net";
import * as fc from "fast-check";
import { expectCanary, expectModel, expectNoBusFaults, hex, noThrow } from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

// ── The case ──────────────────────────────────────────────────────────────────────

/** How a frame's destination is chosen, resolved against the model when the step runs. */
type DstKind = "own" | "uniTable" | "randUni" | "bcast" | "multiTable" | "randMulti";

/** A receive buffer (one chain of writable descriptors); `hostile` puts it out of bounds. */
interface RxChainSpec {
  readonly sizes: readonly number[];
  readonly hostile: "none" | "outside" | "huge";
}

/** One step of a `net-ctrl` case. */
export type NetCtrlStep =
  | { readonly k: "rx"; readonly cmd: number; readonly data: readonly number[] }
  | {
      readonly k: "macTable";
      readonly uni: number;
      readonly multi: number;
      /** Replaces the unicast count field (hostile); null keeps the true count. */
      readonly uniField: number | null;
      readonly multiField: number | null;
      readonly trailing: number;
      readonly seed: number;
    }
  | { readonly k: "macAddr"; readonly mac: readonly number[] }
  | { readonly k: "pairs"; readonly n: number; readonly extra: number }
  | {
      readonly k: "announce";
      readonly hostSets: boolean;
      readonly cmd: number;
      readonly extra: number;
    }
  | {
      readonly k: "raw";
      readonly cls: number;
      readonly cmd: number;
      readonly data: readonly number[];
      /** 0: no writable descriptor; otherwise the writable length. */
      readonly ackLen: number;
      /** Bytes of the first readable descriptor (the rest goes into a second one). */
      readonly split: number;
      readonly outside: boolean;
    }
  | {
      readonly k: "frame";
      readonly dst: DstKind;
      readonly pick: number;
      readonly len: number;
      readonly seed: number;
      readonly bufs: readonly RxChainSpec[];
    }
  | { readonly k: "reset" };

/** A `net-ctrl` case: what the driver negotiates, then the steps. */
export interface NetCtrlCase {
  readonly mrg: boolean;
  readonly maxPairs: number;
  readonly steps: readonly NetCtrlStep[];
}

const byte = fc.integer({ min: 0, max: 255 });
const bufSize = fc.oneof(
  fc.constantFrom(0, 1, 11, 12, 13, 64, 100, 1526, 2048),
  fc.integer({ min: 0, max: 1600 }),
);
const rxChain: fc.Arbitrary<RxChainSpec> = fc.record({
  sizes: fc.array(bufSize, { minLength: 1, maxLength: 3 }),
  hostile: fc.oneof(
    { weight: 12, arbitrary: fc.constant("none" as const) },
    { weight: 1, arbitrary: fc.constantFrom("outside" as const, "huge" as const) },
  ),
});

const step: fc.Arbitrary<NetCtrlStep> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("rx" as const),
      cmd: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 5 }) }, byte),
      data: fc.oneof(
        { weight: 8, arbitrary: fc.tuple(fc.constantFrom(0, 1, 2, 255)).map((t) => [...t]) },
        fc.array(byte, { maxLength: 3 }),
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("macTable" as const),
      uni: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constantFrom(64, 65, 70)),
      multi: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constantFrom(64, 65)),
      uniField: fc.oneof(
        { weight: 6, arbitrary: fc.constant(null) },
        fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x2aaa_aaab, 1000),
        fc.integer({ min: 0, max: 8 }),
      ),
      multiField: fc.oneof(
        { weight: 6, arbitrary: fc.constant(null) },
        fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x2aaa_aaab),
        fc.integer({ min: 0, max: 8 }),
      ),
      trailing: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 7 })),
      seed: fc.integer(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("macAddr" as const),
      mac: fc.oneof(
        { weight: 6, arbitrary: fc.array(byte, { minLength: 6, maxLength: 6 }) },
        fc.array(byte, { maxLength: 8 }),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("pairs" as const),
      n: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constantFrom(0x8000, 0xffff)),
      extra: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.constantFrom(-2, -1, 1)),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("announce" as const),
      hostSets: fc.boolean(),
      cmd: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, byte),
      extra: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 3 })),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("raw" as const),
      cls: fc.oneof(fc.integer({ min: 0, max: 6 }), byte),
      cmd: byte,
      data: fc.array(byte, { maxLength: 10 }),
      ackLen: fc.constantFrom(0, 1, 1, 4),
      split: fc.integer({ min: 0, max: 12 }),
      outside: fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, fc.constant(true)),
    }),
  },
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant("frame" as const),
      dst: fc.constantFrom<DstKind>(
        "own",
        "uniTable",
        "randUni",
        "bcast",
        "multiTable",
        "randMulti",
      ),
      pick: fc.nat(),
      len: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 14, max: 1522 }) },
        fc.constantFrom(0, 1, 13, 14, 60, 1518, 1522, 1523, 2000),
      ),
      seed: fc.integer(),
      bufs: fc.array(rxChain, { minLength: 0, maxLength: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ k: "reset" as const }) },
);

/** The generator of `net-ctrl` cases. */
export const netCtrlArbitrary: fc.Arbitrary<NetCtrlCase> = fc.record({
  mrg: fc.boolean(),
  maxPairs: fc.constantFrom(1, 1, 2, 3),
  steps: fc
    .tuple(fc.boolean(), fc.array(step, { minLength: 1, maxLength: 24 }))
    // Most cases first leave the reset state (promiscuous), so the filter decides.
    .map(([promiscOff, steps]) =>
      promiscOff ? [{ k: "rx" as const, cmd: 0, data: [0] }, ...steps] : steps,
    ),
});

// ── The model ─────────────────────────────────────────────────────────────────────

const MAC0 = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const TABLE_ENTRIES = 64;
const RX_PENDING = 256;
const MTU = 1500;
const HDR = 12;

interface FilterModel {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  uni: string[];
  multi: string[];
  uniOverflow: boolean;
  multiOverflow: boolean;
}

/** A posted receive chain, as the model sees it. */
interface PostedChain {
  readonly head: number;
  readonly ranges: readonly MemoryRange[];
  readonly capacity: number;
  readonly hostile: boolean;
}

/** A used element the model expects: chain head, used length, the bytes written. */
interface ExpectedUsed {
  readonly head: number;
  readonly len: number;
  readonly bytes: Uint8Array;
  readonly ranges: readonly MemoryRange[];
}

function freshFilter(): FilterModel {
  // QEMU's reset state, which the spec leaves to the device: promiscuous.
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

const macStr = (b: ArrayLike<number>, off = 0): string =>
  Array.from({ length: 6 }, (_, i) => (b[off + i]! & 0xff).toString(16).padStart(2, "0")).join(":");

/** §5.1.6.5.1–2 filter, in QEMU's order: promisc, broadcast, multicast, unicast. */
function modelAccepts(m: FilterModel, mac: string, frame: Uint8Array): boolean {
  if (m.promisc) return true;
  const dst = macStr(frame);
  if (dst === "ff:ff:ff:ff:ff:ff") return !m.nobcast;
  if (frame[0]! & 1) {
    if (m.nomulti) return false;
    return m.allmulti || m.multiOverflow || m.multi.includes(dst);
  }
  if (m.nouni) return false;
  return m.alluni || m.uniOverflow || dst === mac || m.uni.includes(dst);
}

/** Deterministic byte stream for frame payloads and table entries. */
function bytesFrom(seed: number, n: number): Uint8Array {
  let s = seed | 0 || 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

// ── The run ───────────────────────────────────────────────────────────────────────

/** Options of {@link makeNetCtrlTarget} (tests use them to prove the checks can fail). */
export interface NetCtrlTargetOptions {
  /** Builds the device (default `new VirtioNetDevice(options)`); a test passes a broken one. */
  readonly device?: (options: VirtioNetOptions) => VirtioNetDevice;
}

const MEM = 512 << 10;
const QSIZE = 16;
const BUF_BASE = 0x20000;
const OUTSIDE = 0x10_0000_0000;

/** Builds the `net-ctrl` target, optionally around a different device. */
export function makeNetCtrlTarget(options: NetCtrlTargetOptions = {}): FuzzTarget<NetCtrlCase> {
  return {
    name: "net-ctrl",
    description:
      "virtio-net control queue (RX modes, MAC table/address, VLAN, announce, VQ_PAIRS_SET) and the RX filter, steering and MRG_RXBUF buffers it governs, against a model",
    kind: "ring",
    arbitrary: netCtrlArbitrary,
    run: (c) => runNetCtrl(c, options),
  };
}

/** The `net-ctrl` target. */
export const netCtrlTarget: FuzzTarget<NetCtrlCase> = makeNetCtrlTarget();

function runNetCtrl(c: NetCtrlCase, options: NetCtrlTargetOptions): void {
  const backend = new LoopbackBackend({ mode: "sink" });
  const devOpts: VirtioNetOptions = {
    backend,
    maxQueuePairs: c.maxPairs,
    queueSize: QSIZE,
    ctrlQueueSize: QSIZE,
    eventIdx: false,
    indirectDesc: false,
    macTableEntries: TABLE_ENTRIES,
    rxPending: RX_PENDING,
  };
  const device = noThrow("constructing the device", () =>
    options.device ? options.device(devOpts) : new VirtioNetDevice(devOpts),
  );
  const mq = c.maxPairs > 1;
  let features =
    (1n << BigInt(VIRTIO_NET_F_MAC)) |
    (1n << BigInt(VIRTIO_NET_F_MTU)) |
    (1n << BigInt(VIRTIO_NET_F_STATUS)) |
    (1n << BigInt(VIRTIO_NET_F_CTRL_VQ)) |
    (1n << BigInt(VIRTIO_NET_F_CTRL_RX)) |
    (1n << BigInt(VIRTIO_NET_F_CTRL_RX_EXTRA)) |
    (1n << BigInt(VIRTIO_NET_F_CTRL_MAC_ADDR)) |
    (1n << BigInt(VIRTIO_NET_F_GUEST_ANNOUNCE));
  if (mq) features |= 1n << BigInt(VIRTIO_NET_F_MQ);
  if (c.mrg) features |= 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF);
  const nq = 2 * c.maxPairs + 1;
  const queues = Array.from({ length: nq }, (_, i) => ({ base: i * 0x1000, size: QSIZE }));
  const g: RawMmioGuest = noThrow("bringing the device up", () =>
    rawMmioGuest(device, { memoryBytes: MEM, features, queues }),
  );
  const ctrlQ = 2 * c.maxPairs;

  // Model state.
  let filter = freshFilter();
  let mac = macStr(MAC0);
  let pairs = 1;
  let announce = false;
  let broken = false;
  const posted: PostedChain[][] = Array.from({ length: c.maxPairs }, () => []);
  const held: PostedChain[][] = Array.from({ length: c.maxPairs }, () => []);
  const pending: Uint8Array[][] = Array.from({ length: c.maxPairs }, () => []);
  const expected: ExpectedUsed[][] = Array.from({ length: nq }, () => []);
  const live: MemoryRange[] = []; // buffers the device may still write (posted, not yet used)
  let bump = BUF_BASE;
  /** A buffer address that overlaps no buffer the device may still write. */
  const alloc = (n: number): number => {
    const len = Math.max(n, 1);
    for (let tries = 0; tries < 4 * MEM; tries++) {
      if (bump + len > MEM) bump = BUF_BASE;
      const a = bump;
      const clash = live.find((r) => a < r.addr + r.len && r.addr < a + len);
      if (clash === undefined) {
        bump = (a + len + 15) & ~15;
        return a;
      }
      bump = (clash.addr + clash.len + 15) & ~15;
    }
    throw new Error("net-ctrl: no room for a buffer (the case posts too much)");
  };

  const rings = (): MemoryRange[] => g.queues.flatMap((q) => q.ringRanges());
  const keepRanges = (): MemoryRange[] => [...rings(), ...live];
  const needsReset = (): boolean => (g.read(VirtioMmio.STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;

  const resetModel = (): void => {
    filter = freshFilter();
    mac = macStr(MAC0);
    pairs = 1;
    announce = false;
    broken = false;
    for (let p = 0; p < c.maxPairs; p++) {
      posted[p]!.length = 0;
      held[p]!.length = 0;
      pending[p]!.length = 0;
    }
    for (const e of expected) e.length = 0;
    live.length = 0;
  };

  const doReset = (why: string): void => {
    noThrow(`reset after ${why}`, () => g.init());
    resetModel();
    const st = g.read(VirtioMmio.STATUS);
    expectModel(
      (st & VIRTIO_CONFIG_S_NEEDS_RESET) === 0 && (st & 4) !== 0,
      () => `after reset the device is not live again (status 0x${st.toString(16)})`,
    );
  };

  /** Model: write one frame into the posted buffers of `pair` (§5.1.6.4). */
  const modelDeliver = (pair: number, frame: Uint8Array): "done" | "wait" | "corrupt" => {
    const need = HDR + frame.length;
    const q = 2 * pair;
    const hdr = (n: number): Uint8Array => {
      const h = new Uint8Array(HDR);
      h[10] = n & 0xff;
      h[11] = n >> 8;
      return h;
    };
    if (!c.mrg) {
      const ch = posted[pair]!.shift();
      if (ch === undefined) return "wait";
      if (ch.hostile) return "corrupt";
      if (ch.capacity < need) {
        expected[q]!.push({ head: ch.head, len: 0, bytes: new Uint8Array(0), ranges: ch.ranges });
        return "done";
      }
      const bytes = new Uint8Array(need);
      bytes.set(hdr(1));
      bytes.set(frame, HDR);
      expected[q]!.push({ head: ch.head, len: need, bytes, ranges: ch.ranges });
      return "done";
    }
    const h = held[pair]!;
    let heldBytes = h.reduce((a, x) => a + x.capacity, 0);
    while (heldBytes < need) {
      const ch = posted[pair]!.shift();
      if (ch === undefined) return "wait";
      if (ch.hostile) return "corrupt";
      if (ch.capacity < HDR) {
        expected[q]!.push({ head: ch.head, len: 0, bytes: new Uint8Array(0), ranges: ch.ranges });
        continue;
      }
      h.push(ch);
      heldBytes += ch.capacity;
    }
    const all = new Uint8Array(need);
    all.set(hdr(h.length));
    all.set(frame, HDR);
    let at = 0;
    for (const ch of h) {
      const n = Math.min(ch.capacity, need - at);
      expected[q]!.push({ head: ch.head, len: n, bytes: all.slice(at, at + n), ranges: ch.ranges });
      at += n;
    }
    h.length = 0;
    return "done";
  };

  const flushPending = (pair: number): void => {
    const pend = pending[pair]!;
    while (pend.length > 0 && !broken) {
      const r = modelDeliver(pair, pend[0]!);
      if (r === "wait") break;
      if (r === "corrupt") {
        broken = true;
        break;
      }
      pend.shift();
    }
  };

  /** Reads every queue's new used elements and compares them with the model's. */
  const checkUsed = (what: string): void => {
    for (let q = 0; q < nq; q++) {
      const mock = g.queues[q]!;
      const got = mock.readUsed();
      const want = expected[q]!;
      expectModel(
        got.length === want.length,
        () =>
          `${what}: queue ${q} returned ${got.length} used element(s) [${got.map((u) => `${u.id}/${u.len}`).join(" ")}], the model expects ${want.length} [${want.map((u) => `${u.head}/${u.len}`).join(" ")}]`,
      );
      for (let i = 0; i < got.length; i++) {
        const u = got[i]!;
        const w = want[i]!;
        expectModel(
          u.id === w.head && u.len === w.len,
          () =>
            `${what}: queue ${q} used element ${i} is ${u.id}/${u.len}, expected ${w.head}/${w.len}`,
        );
        checkBytes(mock, w, what);
        for (const r of w.ranges) {
          const k = live.indexOf(r);
          if (k >= 0) live.splice(k, 1);
        }
      }
      want.length = 0;
    }
  };

  const checkBytes = (mock: MockSplitQueue, w: ExpectedUsed, what: string): void => {
    // Written bytes are exactly the model's; every byte after the used length is untouched.
    let at = 0;
    for (const r of w.ranges) {
      const got = mock.memory.slice(r.addr, r.len);
      if (!(got instanceof Uint8Array)) continue;
      for (let i = 0; i < r.len; i++, at++) {
        const want = at < w.len ? w.bytes[at]! : 0x5a;
        if (got[i] !== want) {
          throw new FuzzFinding(
            at < w.len ? "model" : "canary",
            `${what}: chain ${w.head} byte ${at} (0x${(r.addr + i).toString(16)}) is 0x${got[i]!.toString(16)}, expected 0x${want.toString(16)} (used length ${w.len}; expected ${hex(w.bytes)})`,
          );
        }
      }
    }
  };

  const checkState = (what: string): void => {
    const m = device.rxMode;
    const keys = ["promisc", "allmulti", "alluni", "nomulti", "nouni", "nobcast"] as const;
    for (const k of keys) {
      expectModel(m[k] === filter[k], () => `${what}: filter ${k} is ${m[k]}, model ${filter[k]}`);
    }
    expectModel(
      m.uniOverflow === filter.uniOverflow && m.multiOverflow === filter.multiOverflow,
      () =>
        `${what}: overflow flags ${m.uniOverflow}/${m.multiOverflow}, model ${filter.uniOverflow}/${filter.multiOverflow}`,
    );
    expectModel(
      m.uni === filter.uni.length && m.multi === filter.multi.length,
      () =>
        `${what}: MAC tables hold ${m.uni}/${m.multi} entries, model ${filter.uni.length}/${filter.multi.length}`,
    );
    const devMac = macStr(device.mac);
    expectModel(devMac === mac, () => `${what}: MAC ${devMac}, model ${mac}`);
    // The guest-visible config: mac (offset 0) and status (offset 6).
    const w0 = g.read(0x100);
    const w1 = g.read(0x104);
    const cfgMac = macStr([
      w0 & 0xff,
      (w0 >>> 8) & 0xff,
      (w0 >>> 16) & 0xff,
      w0 >>> 24,
      w1 & 0xff,
      (w1 >>> 8) & 0xff,
    ]);
    expectModel(cfgMac === mac, () => `${what}: config mac ${cfgMac}, model ${mac}`);
    const status = (w1 >>> 16) & 0xffff;
    expectModel(
      ((status & VIRTIO_NET_S_ANNOUNCE) !== 0) === announce,
      () => `${what}: config status 0x${status.toString(16)}, model announce=${announce}`,
    );
    expectModel(
      device.activeQueuePairs === pairs,
      () => `${what}: ${device.activeQueuePairs} queue pairs active, model ${pairs}`,
    );
  };

  /** Puts a control command on the control queue and predicts the answer. */
  const control = (
    what: string,
    readable: Uint8Array,
    ackLen: number,
    split: number,
    outside: boolean,
    apply: () => boolean,
  ): void => {
    const q = g.queues[ctrlQ]!;
    const bufs: { addr: number | bigint; len: number; writable?: boolean }[] = [];
    const ranges: MemoryRange[] = [];
    const cut = Math.min(split, readable.length);
    for (const part of [readable.subarray(0, cut), readable.subarray(cut)]) {
      if (part.length === 0) continue;
      const a = alloc(part.length);
      g.memory.write(a, part);
      bufs.push({ addr: a, len: part.length });
      ranges.push({ addr: a, len: part.length });
    }
    let ackAddr = -1;
    outside = outside && ackLen > 0;
    if (ackLen > 0) {
      ackAddr = alloc(ackLen);
      g.memory.fill(ackAddr, ackLen, 0x5a);
      bufs.push({ addr: outside ? OUTSIDE : ackAddr, len: ackLen, writable: true });
      live.push({ addr: ackAddr, len: ackLen });
    }
    if (bufs.length === 0) bufs.push({ addr: alloc(1), len: 0 });
    const head = q.addChain(bufs);
    fillCanary(g.memory, [...keepRanges(), ...ranges]);
    noThrow(`${what} (control notify)`, () => g.notify(ctrlQ));
    if (outside) {
      expectModel(
        needsReset(),
        () => `${what}: an ack buffer outside memory did not set NEEDS_RESET`,
      );
      expectCanary(g.memory, [...keepRanges(), ...ranges], what);
      doReset(what);
      return;
    }
    let ok = false;
    if (ackLen > 0 && readable.length >= 2) ok = apply();
    const ack = ok ? 0 : 1;
    const ackBytes = new Uint8Array([ack]);
    expected[ctrlQ]!.push({
      head,
      len: ackLen > 0 ? 1 : 0,
      bytes: ackLen > 0 ? ackBytes : new Uint8Array(0),
      ranges: ackLen > 0 ? [{ addr: ackAddr, len: ackLen }] : [],
    });
    expectModel(!needsReset(), () => `${what}: a well-formed control chain set NEEDS_RESET`);
    const keep = [...keepRanges(), ...ranges];
    checkUsed(what);
    expectCanary(g.memory, keep, what);
    checkState(what);
  };

  const cmdBytes = (cls: number, cmd: number, data: ArrayLike<number>): Uint8Array => {
    const b = new Uint8Array(2 + data.length);
    b[0] = cls;
    b[1] = cmd;
    b.set(Array.from(data), 2);
    return b;
  };

  for (let si = 0; si < c.steps.length; si++) {
    const s = c.steps[si]!;
    const what = `step ${si} (${s.k})`;
    switch (s.k) {
      case "rx": {
        control(what, cmdBytes(0, s.cmd, s.data), 1, 99, false, () => {
          if (s.cmd > 5 || s.data.length !== 1) return false;
          const on = s.data[0] !== 0;
          const key = (["promisc", "allmulti", "alluni", "nomulti", "nouni", "nobcast"] as const)[
            s.cmd
          ]!;
          filter[key] = on;
          return true;
        });
        break;
      }
      case "macTable": {
        const ent = bytesFrom(s.seed, 6 * (s.uni + s.multi));
        for (let i = 0; i < s.uni; i++) ent[6 * i] = ent[6 * i]! & 0xfe;
        for (let i = s.uni; i < s.uni + s.multi; i++) ent[6 * i] = ent[6 * i]! | 1;
        const data = new Uint8Array(8 + ent.length + s.trailing);
        const dv = new DataView(data.buffer);
        dv.setUint32(0, s.uniField ?? s.uni, true);
        data.set(ent.subarray(0, 6 * s.uni), 4);
        dv.setUint32(4 + 6 * s.uni, s.multiField ?? s.multi, true);
        data.set(ent.subarray(6 * s.uni), 8 + 6 * s.uni);
        control(what, cmdBytes(1, 0, data), 1, 2 + (s.seed & 15), false, () => {
          // Independent parse of two `struct virtio_net_ctrl_mac` back to back (§5.1.6.5.2).
          const len = data.length;
          if (len < 8) return false;
          const nU = dv.getUint32(0, true);
          if (4 + 6 * nU + 4 > len) return false;
          const nM = dv.getUint32(4 + 6 * nU, true);
          if (8 + 6 * nU + 6 * nM !== len) return false;
          const uni: string[] = [];
          for (let i = 0; i < nU; i++) uni.push(macStr(data, 4 + 6 * i));
          const multi: string[] = [];
          for (let i = 0; i < nM; i++) multi.push(macStr(data, 8 + 6 * nU + 6 * i));
          filter.uniOverflow = nU > TABLE_ENTRIES;
          filter.multiOverflow = nM > TABLE_ENTRIES;
          filter.uni = filter.uniOverflow ? [] : uni;
          filter.multi = filter.multiOverflow ? [] : multi;
          return true;
        });
        break;
      }
      case "macAddr":
        control(what, cmdBytes(1, 1, s.mac), 1, 99, false, () => {
          if (s.mac.length !== 6) return false;
          mac = macStr(s.mac);
          return true;
        });
        break;
      case "pairs": {
        const len = Math.max(0, 2 + s.extra);
        const data = new Uint8Array(len);
        for (let i = 0; i < Math.min(2, len); i++) data[i] = (s.n >> (8 * i)) & 0xff;
        control(what, cmdBytes(4, 0, data), 1, 99, false, () => {
          if (!mq || len !== 2 || s.n < 1 || s.n > c.maxPairs) return false;
          pairs = s.n;
          return true;
        });
        break;
      }
      case "announce": {
        if (s.hostSets) {
          noThrow(`${what}: host announce`, () => device.announce());
          announce = true;
        }
        control(what, cmdBytes(3, s.cmd, new Uint8Array(s.extra)), 1, 99, false, () => {
          if (s.cmd !== 0 || s.extra !== 0) return false;
          announce = false;
          return true;
        });
        break;
      }
      case "raw": {
        const known = s.cls <= 4 && s.cls !== 2;
        // Known classes with their real command shapes are modelled by the steps above; a
        // raw step sends them too, so the model answers them the same way.
        control(what, cmdBytes(s.cls, s.cmd, s.data), s.ackLen, s.split, s.outside, () => {
          if (!known) return false; // VLAN, GUEST_OFFLOADS (not offered) and unknown classes
          const d = s.data;
          if (s.cls === 0) {
            if (s.cmd > 5 || d.length !== 1) return false;
            const key = (["promisc", "allmulti", "alluni", "nomulti", "nouni", "nobcast"] as const)[
              s.cmd
            ]!;
            filter[key] = d[0] !== 0;
            return true;
          }
          if (s.cls === 1) {
            if (s.cmd === 1) {
              if (d.length !== 6) return false;
              mac = macStr(d);
              return true;
            }
            if (s.cmd !== 0 || d.length < 8) return false;
            const dv = new DataView(Uint8Array.from(d).buffer);
            const nU = dv.getUint32(0, true);
            if (4 + 6 * nU + 4 > d.length) return false;
            const nM = dv.getUint32(4 + 6 * nU, true);
            if (8 + 6 * (nU + nM) !== d.length) return false;
            filter.uniOverflow = nU > TABLE_ENTRIES;
            filter.multiOverflow = nM > TABLE_ENTRIES;
            filter.uni = filter.uniOverflow
              ? []
              : Array.from({ length: nU }, (_, i) => macStr(d, 4 + 6 * i));
            filter.multi = filter.multiOverflow
              ? []
              : Array.from({ length: nM }, (_, i) => macStr(d, 8 + 6 * nU + 6 * i));
            return true;
          }
          if (s.cls === 3) {
            if (s.cmd !== 0 || d.length !== 0) return false;
            announce = false;
            return true;
          }
          // cls 4: VQ_PAIRS_SET
          if (!mq || s.cmd !== 0 || d.length !== 2) return false;
          const n = d[0]! | (d[1]! << 8);
          if (n < 1 || n > c.maxPairs) return false;
          pairs = n;
          return true;
        });
        break;
      }
      case "frame": {
        const frame = bytesFrom(s.seed, s.len);
        if (s.len >= 6) {
          const pickFrom = (t: string[]): string | null =>
            t.length === 0 ? null : t[s.pick % t.length]!;
          let dst: string | null = null;
          if (s.dst === "own") dst = mac;
          else if (s.dst === "uniTable") dst = pickFrom(filter.uni);
          else if (s.dst === "multiTable") dst = pickFrom(filter.multi);
          else if (s.dst === "bcast") dst = "ff:ff:ff:ff:ff:ff";
          if (dst !== null) frame.set(dst.split(":").map((x) => Number.parseInt(x, 16)));
          else if (s.dst === "randUni" || s.dst === "uniTable") frame[0] = frame[0]! & 0xfe;
          else if (s.dst === "randMulti" || s.dst === "multiTable") {
            frame[0] = frame[0]! | 1;
            if (macStr(frame) === "ff:ff:ff:ff:ff:ff") frame[5] = 0xfe;
          }
        }
        // Steering (§5.1.6.5.5): the device's flow hash picks the pair among those active.
        const pair = pairs === 1 ? 0 : flowHash(frame) % pairs;
        // Post the buffers on that pair's receive queue.
        const q = g.queues[2 * pair]!;
        const newRanges: MemoryRange[] = [];
        for (const b of s.bufs) {
          const descs: { addr: number | bigint; len: number; writable: boolean }[] = [];
          const ranges: MemoryRange[] = [];
          let cap = 0;
          for (let i = 0; i < b.sizes.length; i++) {
            const sz = b.sizes[i]!;
            const a = alloc(sz);
            const last = i === b.sizes.length - 1;
            if (last && b.hostile === "outside")
              descs.push({ addr: OUTSIDE, len: sz, writable: true });
            else if (last && b.hostile === "huge")
              descs.push({ addr: a, len: 0x7fff_fff0, writable: true });
            else {
              descs.push({ addr: a, len: sz, writable: true });
              g.memory.fill(a, sz, 0x5a);
              ranges.push({ addr: a, len: sz });
              cap += sz;
            }
          }
          let head: number;
          try {
            head = q.addChain(descs);
          } catch {
            continue; // no free descriptors left: the driver posts nothing more
          }
          // A zero-length descriptor touches no memory wherever it points: not corruption.
          const lastLen = b.sizes[b.sizes.length - 1]!;
          const hostile = b.hostile === "huge" || (b.hostile === "outside" && lastLen > 0);
          posted[pair]!.push({ head, ranges, capacity: cap, hostile });
          newRanges.push(...ranges);
        }
        live.push(...newRanges);
        fillCanary(g.memory, keepRanges());
        if (s.bufs.length > 0) {
          noThrow(`${what} (rx notify)`, () => g.notify(2 * pair));
          if (!broken) flushPending(pair);
        }
        // The frame arrives from the back-end.
        noThrow(`${what} (frame from the back-end)`, () => backend.inject(frame));
        if (!broken) {
          const accepted =
            frame.length >= 14 && frame.length <= MTU + 18 && modelAccepts(filter, mac, frame);
          if (accepted) {
            if (pending[pair]!.length === 0) {
              const r = modelDeliver(pair, frame);
              if (r === "corrupt") broken = true;
              else if (r === "wait") pending[pair]!.push(frame);
            } else if (pending[pair]!.length < RX_PENDING) pending[pair]!.push(frame);
          }
        }
        const nr = needsReset();
        expectModel(
          nr === broken,
          () =>
            `${what}: device NEEDS_RESET=${nr}, the model expects ${broken} (frame ${hex(frame, 14)}, ${frame.length} bytes)`,
        );
        if (broken) {
          // Nothing may have been acknowledged for the frames in flight; rings stay sane.
          expectCanary(g.memory, keepRanges(), what);
          doReset(what);
          break;
        }
        const keep = keepRanges();
        checkUsed(what);
        expectCanary(g.memory, keep, what);
        for (let p = 0; p < c.maxPairs; p++) {
          const got = device.pendingFrames(p);
          expectModel(
            got === pending[p]!.length,
            () =>
              `${what}: pair ${p} holds ${got} waiting frame(s), the model ${pending[p]!.length}`,
          );
        }
        break;
      }
      case "reset":
        doReset(what);
        checkState(what);
        break;
    }
    expectNoBusFaults(g.bus, what);
  }
  // Serves after reset: a reset, then one control command and one frame must go through.
  doReset("the last step");
  control("final control command", cmdBytes(0, 0, [0]), 1, 99, false, () => {
    filter.promisc = false;
    return true;
  });
  const q0 = g.queues[0]!;
  const a = alloc(HDR + 64);
  g.memory.fill(a, HDR + 64, 0x5a);
  const head = q0.addChain([{ addr: a, len: HDR + 64, writable: true }]);
  const range = { addr: a, len: HDR + 64 };
  live.push(range);
  posted[0]!.push({ head, ranges: [range], capacity: HDR + 64, hostile: false });
  const frame = bytesFrom(7, 60);
  frame.set(MAC0);
  noThrow("final frame", () => backend.inject(frame));
  modelDeliver(0, frame);
  checkUsed("final frame after reset");
  expectNoBusFaults(g.bus, "end of case");
}
