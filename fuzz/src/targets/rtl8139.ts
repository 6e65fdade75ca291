/**
 * Fuzz target `rtl8139`: the emulated RTL8139 through its I/O BAR and its MMIO BAR
 * (reference/rtl8139.md; RTL8139C datasheet register map), driven by a hostile guest.
 *
 * A case interleaves four kinds of steps:
 *
 * - **noise**: register reads and writes at any offset with any size (including sizes the
 *   bus refuses), through either BAR. Whatever they touch, the device must not throw, DMA
 *   only into a receive ring it was given, and stay usable;
 * - **eeprom**: a random EESK/EECS/EEDI sequence on 9346CR in program mode — the 93C46
 *   (64 × 16 bits) protocol: start bit, 2-bit opcode, 6-bit address; READ shifts a dummy 0
 *   then 16 bits out MSB first; WRITE/ERASE/EWEN/EWDS/WRAL/ERAL are decoded and, this
 *   EEPROM being write-protected as in QEMU, change nothing. Every EEDO read is checked
 *   against an independent model fed by every byte any access wrote to 9346CR;
 * - **tx**: after a chip reset, descriptors filled round-robin with TSAD pointing anywhere
 *   (inside memory, across its end, beyond 4 GiB wrap) and any size: status (OWN, TOK/TUN),
 *   ISR and the bytes the back-end got are checked against the model;
 * - **rx**: after a chip reset, a ring of 8–64 KiB with or without WRAP at any RBSTART
 *   (even partly outside memory), address filter and MAR hash, frames injected and CAPR
 *   moved by the guest: every stored entry (header, frame, padding, CRC), CBR, ISR.ROK /
 *   RXOVW / SERR and MPC are checked against the model.
 *
 * Invariants: no escaped exception, no bus contained fault, nothing written outside the
 * receive rings the guest configured (canaries), and after the last step a reset chip
 * transmits and receives again.
 *
 * @module
 */

import { Rtl8139, type Rtl8139Options } from "@pvkit/emulated-rtl8139";
import { type AccessSize, Bus, GuestMemory, LoopbackBackend } from "@pvkit/platform";
import { fillCanary, type MemoryRange } from "@pvkit/virtio-core/testing";
import * as fc from "fast-check";
import { expectCanary, expectModel, expectNoBusFaults, hex, noThrow } from "../guards.js";
import { FuzzFinding, type FuzzTarget } from "../target.js";

// Register offsets and bits (RTL8139C datasheet §5; reference/rtl8139.md).
const TSD0 = 0x10;
const TSAD0 = 0x20;
const RBSTART = 0x30;
const CR = 0x37;
const CAPR = 0x38;
const CBR = 0x3a;
const IMR = 0x3c;
const ISR = 0x3e;
const RCR = 0x44;
const MPC = 0x4c;
const CFG9346 = 0x50;
const MAR0 = 0x08;
const HLTCLK = 0x5b;
const CR_RST = 0x10;
const CR_RE = 0x08;
const CR_TE = 0x04;
const TSD_OWN = 0x2000;
const TSD_TUN = 0x4000;
const TSD_TOK = 0x8000;
const ISR_ROK = 0x0001;
const ISR_TOK = 0x0004;
const ISR_TER = 0x0008;
const ISR_RXOVW = 0x0010;
const ISR_SERR = 0x8000;
const EECS = 0x08;
const EESK = 0x04;
const EEDI = 0x02;
const EEDO = 0x01;
const EEM_PROGRAM = 0x80;

const MEM = 256 << 10;
const IO_BASE = 0xc000;
const MMIO_BASE = 0xfebf_0000;
const MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];

// ── The case ──────────────────────────────────────────────────────────────────────

/** One register access of a noise step; `size` may be one the bus refuses. */
interface Access {
  readonly write: boolean;
  readonly mmio: boolean;
  readonly offset: number;
  readonly size: number;
  readonly value: number;
}

/** One pin state on 9346CR (program mode) or a read of it. */
type PinOp =
  | { readonly read: true }
  | { readonly read: false; readonly cs: boolean; readonly sk: boolean; readonly di: boolean };

/** A 93C46 command clocked in cleanly, followed by `extra` clocks. */
interface EepromCommand {
  readonly op: number;
  readonly addr: number;
  readonly extra: number;
  readonly dropCs: boolean;
}

/** One step of an `rtl8139` case. */
export type Rtl8139Step =
  | { readonly k: "noise"; readonly accesses: readonly Access[] }
  | { readonly k: "pins"; readonly ops: readonly PinOp[] }
  | { readonly k: "eeprom"; readonly cmds: readonly EepromCommand[] }
  | {
      readonly k: "tx";
      readonly descs: readonly {
        readonly addr: number;
        readonly size: number;
        readonly ertx: number;
      }[];
    }
  | {
      readonly k: "rx";
      readonly rblen: number;
      readonly wrap: boolean;
      readonly base: number;
      readonly rcr: number;
      readonly mar: readonly number[];
      readonly frames: readonly {
        readonly dst: "own" | "bcast" | "multi" | "other";
        readonly len: number;
        readonly seed: number;
        /** Guest consumes this many frames' worth of ring (moves CAPR) afterwards. */
        readonly consume: boolean;
      }[];
    };

/** An `rtl8139` case. */
export interface Rtl8139Case {
  readonly steps: readonly Rtl8139Step[];
}

const access: fc.Arbitrary<Access> = fc.record({
  write: fc.boolean(),
  mmio: fc.boolean(),
  offset: fc.oneof(
    fc.integer({ min: 0, max: 0xff }),
    fc.constantFrom(CFG9346, CR, TSD0, RCR, CAPR, 0xfe, 0xff),
  ),
  size: fc.oneof({ weight: 20, arbitrary: fc.constantFrom(1, 2, 4) }, fc.constantFrom(0, 3, 8)),
  value: fc.oneof(
    fc.nat({ max: 0xffff_ffff }),
    fc.constantFrom(0, 0xff, 0xffff_ffff, 0x10, 0x0c, 0x80, 0xc0, 0x40),
  ),
});
const pinOp: fc.Arbitrary<PinOp> = fc.oneof(
  fc.constant({ read: true as const }),
  fc.record({
    read: fc.constant(false as const),
    cs: fc.boolean(),
    sk: fc.boolean(),
    di: fc.boolean(),
  }),
);
const ringBase = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x1000, max: 0x18000 }).map((x) => x & ~3) },
  fc.constantFrom(MEM - 0x2000, MEM - 16, MEM, 0xffff_f000, 0xffff_fffc),
);
const txAddr = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: MEM - 1 }) },
  fc.constantFrom(MEM - 1, MEM - 1792, MEM, 0xffff_ffff, 0xffff_f800),
);

const stepArb: fc.Arbitrary<Rtl8139Step> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("noise" as const),
      accesses: fc.array(access, { maxLength: 12 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("pins" as const),
      ops: fc.array(pinOp, { maxLength: 60 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("eeprom" as const),
      cmds: fc.array(
        fc.record({
          op: fc.oneof({ weight: 3, arbitrary: fc.constant(2) }, fc.integer({ min: 0, max: 3 })),
          addr: fc.integer({ min: 0, max: 63 }),
          extra: fc.oneof(fc.constant(16), fc.integer({ min: 0, max: 40 })),
          dropCs: fc.boolean(),
        }),
        { minLength: 1, maxLength: 4 },
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("tx" as const),
      descs: fc.array(
        fc.record({
          addr: txAddr,
          size: fc.oneof(
            { weight: 6, arbitrary: fc.integer({ min: 1, max: 1792 }) },
            fc.constantFrom(0, 1793, 0x1fff),
          ),
          ertx: fc.integer({ min: 0, max: 0x3f }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("rx" as const),
      rblen: fc.integer({ min: 0, max: 3 }),
      wrap: fc.boolean(),
      base: ringBase,
      rcr: fc.integer({ min: 0, max: 15 }),
      mar: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 8, maxLength: 8 }),
      frames: fc.array(
        fc.record({
          dst: fc.constantFrom(
            "own" as const,
            "bcast" as const,
            "multi" as const,
            "other" as const,
          ),
          len: fc.oneof(
            { weight: 6, arbitrary: fc.integer({ min: 14, max: 1518 }) },
            fc.constantFrom(0, 13, 59, 60, 1519, 4000),
          ),
          seed: fc.integer(),
          consume: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, fc.constant(true)),
        }),
        { maxLength: 24 },
      ),
    }),
  },
);

/** The generator of `rtl8139` cases. */
export const rtl8139Arbitrary: fc.Arbitrary<Rtl8139Case> = fc.record({
  steps: fc.array(stepArb, { minLength: 1, maxLength: 12 }),
});

// ── Independent models ────────────────────────────────────────────────────────────

/**
 * A 93C46 (×16) as the datasheet and reference/rtl8139.md describe it, write-protected:
 * standby while CS is low; with CS high, the first 1 sampled on a rising SK edge is the
 * start bit, then 2 opcode bits and 6 address bits; READ drives a dummy 0 then the word
 * MSB first, one bit per rising edge, and afterwards accepts a new start bit without a CS
 * toggle (QEMU's behaviour, which FreeBSD relies on); other opcodes wait for CS low.
 */
export class Eeprom93C46Model {
  /** The words (what a READ returns). */
  readonly words: Uint16Array;
  /** The DO pin. */
  out = false;
  private sk = false;
  private cs = false;
  private state: "standby" | "idle" | "cmd" | "read" | "ignore" = "standby";
  private bits = 0;
  private value = 0;
  private word = 0;
  private left = 0;

  /** @param words - initial contents (64 words) */
  constructor(words: Uint16Array) {
    this.words = words.slice();
  }

  /** Pins driven by a 9346CR write in program mode. */
  pins(cs: boolean, sk: boolean, di: boolean): void {
    const edge = sk && !this.sk;
    this.sk = sk;
    if (!cs) {
      this.cs = false;
      this.state = "standby";
      this.out = false;
      return;
    }
    if (!this.cs) {
      this.cs = true;
      this.state = "idle";
    }
    if (!edge) return;
    if (this.state === "idle") {
      if (di) {
        this.state = "cmd";
        this.bits = 0;
        this.value = 0;
      }
    } else if (this.state === "cmd") {
      this.value = (this.value << 1) | (di ? 1 : 0);
      if (++this.bits === 8) {
        if (this.value >> 6 === 2) {
          this.state = "read";
          this.word = this.words[this.value & 63]!;
          this.left = 16;
          this.out = false; // the dummy zero
        } else this.state = "ignore"; // write-protected: WRITE/ERASE/EWEN/EWDS/WRAL/ERAL
      }
    } else if (this.state === "read") {
      this.out = ((this.word >> (this.left - 1)) & 1) === 1;
      if (--this.left === 0) this.state = "idle";
    }
  }

  /** 9346CR left program mode (or the chip auto-loaded): pins released. */
  release(): void {
    this.pins(false, false, false);
  }
}

let crcTable: Uint32Array | null = null;
/** IEEE 802.3 CRC-32 (reflected, as zlib's `crc32`). */
function crc32(b: Uint8Array): number {
  if (crcTable === null) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb8_8320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffff_ffff;
  for (const x of b) c = crcTable[(c ^ x) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffff_ffff) >>> 0;
}

/** The multicast hash: top 6 bits of the big-endian CRC-32 of the destination (8139too `ether_crc`). */
function mcastBit(f: Uint8Array): number {
  let crc = 0xffff_ffff;
  for (let i = 0; i < 6; i++) {
    let b = f[i]!;
    for (let j = 0; j < 8; j++) {
      const carry = (crc >>> 31) ^ (b & 1);
      crc = (crc << 1) >>> 0;
      b >>= 1;
      if (carry) crc = (crc ^ 0x04c1_1db7) >>> 0;
    }
  }
  return crc >>> 26;
}

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

/** Options of {@link makeRtl8139Target} (tests use them to prove the checks can fail). */
export interface Rtl8139TargetOptions {
  /** Builds the device (default `new Rtl8139(options)`). */
  readonly device?: (options: Rtl8139Options) => Rtl8139;
}

/** Builds the `rtl8139` target, optionally around a different device. */
export function makeRtl8139Target(options: Rtl8139TargetOptions = {}): FuzzTarget<Rtl8139Case> {
  return {
    name: "rtl8139",
    description:
      "RTL8139 register file through both BARs: random accesses, TX descriptors anywhere, RX ring wrap games and the 93C46 EEPROM bit-bang, against models",
    kind: "register",
    arbitrary: rtl8139Arbitrary,
    run: (c) => runRtl8139(c, options),
  };
}

/** The `rtl8139` target. */
export const rtl8139Target: FuzzTarget<Rtl8139Case> = makeRtl8139Target();

function runRtl8139(c: Rtl8139Case, options: Rtl8139TargetOptions): void {
  const memory = GuestMemory.create(MEM);
  const backend = new LoopbackBackend({ mode: "sink" });
  const devOpts: Rtl8139Options = {
    backend,
    memory,
    mac: new Uint8Array(MAC),
    ioAddress: IO_BASE,
    mmioAddress: MMIO_BASE,
    requireBusMaster: false,
    now: () => 0,
  };
  const dev = noThrow("constructing the device", () =>
    options.device ? options.device(devOpts) : new Rtl8139(devOpts),
  );
  const bus = new Bus();
  bus.map(
    "pio",
    IO_BASE,
    0x100,
    { read: (o, s) => dev.barRead(0, o, s), write: (o, s, v) => dev.barWrite(0, o, s, v) },
    "rtl-io",
  );
  bus.map(
    "mmio",
    MMIO_BASE,
    0x100,
    { read: (o, s) => dev.barRead(1, o, s), write: (o, s, v) => dev.barWrite(1, o, s, v) },
    "rtl-mmio",
  );

  const eeWords = new Uint16Array(64);
  eeWords[0] = 0x8129;
  eeWords[1] = 0x10ec;
  eeWords[2] = 0x8139;
  for (let i = 0; i < 3; i++) eeWords[7 + i] = MAC[2 * i]! | (MAC[2 * i + 1]! << 8);
  const ee = new Eeprom93C46Model(eeWords);
  let cfg = 0; // the 9346CR byte the model expects (without EEDO)

  // Rings the guest configured: the device may DMA into [base, base + size + 1536) of any.
  const rings: MemoryRange[] = [];
  const noteRing = (): void => {
    const r = dev.rxRing;
    const last = rings[rings.length - 1];
    if (last !== undefined && last.addr === r.base && last.len === r.size + 1536) return;
    if (rings.some((x) => x.addr === r.base && x.len === r.size + 1536)) return;
    rings.push({ addr: r.base, len: r.size + 1536 });
  };
  noteRing();
  // Buffers the guest itself wrote (transmit payloads): left out of the canary.
  const own: MemoryRange[] = [];
  const keep = (): MemoryRange[] => [...rings, ...own];
  fillCanary(memory, keep());

  /** Feeds a 9346CR byte write to the model (what every access covering 0x50 wrote). */
  const model9346 = (v: number): void => {
    const eem = v & 0xc0;
    if (eem === 0x40) {
      ee.release();
      cfg = 0;
      return;
    }
    cfg = v & 0xce;
    if (eem === EEM_PROGRAM) ee.pins((v & EECS) !== 0, (v & EESK) !== 0, (v & EEDI) !== 0);
    else ee.release();
  };
  const check9346 = (got: number, what: string): void => {
    const want = cfg | ((cfg & 0xc0) === EEM_PROGRAM && ee.out ? EEDO : 0);
    expectModel(
      got === want,
      () =>
        `${what}: 9346CR read 0x${got.toString(16)}, the model expects 0x${want.toString(16)} (EEDO ${ee.out ? 1 : 0})`,
    );
  };

  const rd = (off: number, size: AccessSize, mmio = false): number =>
    noThrow(`read 0x${off.toString(16)}/${size}`, () =>
      bus.read(mmio ? "mmio" : "pio", (mmio ? MMIO_BASE : IO_BASE) + off, size),
    );
  const wr = (off: number, size: AccessSize, value: number, mmio = false): void => {
    noThrow(`write 0x${off.toString(16)}/${size} = 0x${value.toString(16)}`, () =>
      bus.write(mmio ? "mmio" : "pio", (mmio ? MMIO_BASE : IO_BASE) + off, size, value >>> 0),
    );
    // Which bytes it covered: the model sees the byte aimed at 9346CR and CR.RST.
    for (let i = 0; i < size; i++) {
      const b = (off + i) & 0xff;
      const v = (value >>> (8 * i)) & 0xff;
      if (b === CFG9346) model9346(v);
    }
    noteRing();
  };

  const chipInit = (): void => {
    wr(CR, 1, CR_RST);
    wr(HLTCLK, 1, 0x52); // 'R': clock running
  };

  for (let si = 0; si < c.steps.length; si++) {
    const s = c.steps[si]!;
    const what = `step ${si} (${s.k})`;
    switch (s.k) {
      case "noise":
        for (const a of s.accesses) {
          const off = a.offset & 0xff;
          // A window has 256 bytes: an access must not run past it on the bus.
          const size = (off + (a.size || 1) > 0x100 ? 1 : a.size) as AccessSize;
          if (a.write) {
            if (size !== 1 && size !== 2 && size !== 4) {
              noThrow(what, () =>
                bus.write(
                  a.mmio ? "mmio" : "pio",
                  (a.mmio ? MMIO_BASE : IO_BASE) + off,
                  size,
                  a.value,
                ),
              );
            } else wr(off, size, a.value, a.mmio);
          } else {
            const v = noThrow(what, () =>
              bus.read(a.mmio ? "mmio" : "pio", (a.mmio ? MMIO_BASE : IO_BASE) + off, size),
            );
            if (
              (size === 1 || size === 2 || size === 4) &&
              off <= CFG9346 &&
              off + size > CFG9346
            ) {
              check9346((v >>> (8 * (CFG9346 - off))) & 0xff, what);
            }
          }
          noteRing();
        }
        break;
      case "pins":
        for (const p of s.ops) {
          if (p.read) check9346(rd(CFG9346, 1), what);
          else
            wr(CFG9346, 1, EEM_PROGRAM | (p.cs ? EECS : 0) | (p.sk ? EESK : 0) | (p.di ? EEDI : 0));
        }
        break;
      case "eeprom": {
        const pin = (cs: boolean, sk: boolean, di: boolean): void =>
          wr(CFG9346, 1, EEM_PROGRAM | (cs ? EECS : 0) | (sk ? EESK : 0) | (di ? EEDI : 0));
        pin(false, false, false);
        let clean = true; // the chip is in standby: the command below is decoded from its start bit
        for (const cmd of s.cmds) {
          const bits = [1, (cmd.op >> 1) & 1, cmd.op & 1];
          for (let i = 5; i >= 0; i--) bits.push((cmd.addr >> i) & 1);
          pin(true, false, false);
          for (const b of bits) {
            pin(true, false, b === 1);
            pin(true, true, b === 1);
          }
          check9346(rd(CFG9346, 1), what);
          let word = 0;
          for (let i = 0; i < cmd.extra; i++) {
            pin(true, false, false);
            pin(true, true, false);
            const v = rd(CFG9346, 1);
            check9346(v, what);
            if (i < 16) word = (word << 1) | (v & EEDO);
          }
          if (clean && cmd.op === 2 && cmd.extra >= 16) {
            expectModel(
              word === eeWords[cmd.addr],
              () =>
                `${what}: READ of word ${cmd.addr} gave 0x${word.toString(16)}, the EEPROM holds 0x${eeWords[cmd.addr]!.toString(16)}`,
            );
          }
          if (cmd.dropCs) pin(false, false, false);
          clean = cmd.dropCs;
        }
        wr(CFG9346, 1, 0);
        break;
      }
      case "tx": {
        chipInit();
        wr(CR, 1, CR_TE);
        wr(ISR, 2, 0xffff);
        const sentBefore = backend.sent.length;
        let sent = sentBefore;
        for (let d = 0; d < s.descs.length; d++) {
          const x = s.descs[d]!;
          const slot = d & 3;
          const payload = bytesFrom(d * 7919 + x.size, 64);
          if (x.addr < MEM) {
            const n = Math.min(64, MEM - x.addr);
            memory.write(x.addr, payload.subarray(0, n));
            own.push({ addr: x.addr, len: n });
          }
          wr(TSAD0 + 4 * slot, 4, x.addr);
          const tsdVal = (x.size & 0x1fff) | (x.ertx << 16);
          wr(TSD0 + 4 * slot, 4, tsdVal);
          const tsd = rd(TSD0 + 4 * slot, 4, true);
          const isr = rd(ISR, 2);
          wr(ISR, 2, 0xffff);
          const size = x.size & 0x1fff;
          const fits = size >= 1 && size <= 1792 && x.addr + size <= MEM;
          const wantStatus = TSD_OWN | (fits ? TSD_TOK : TSD_TUN);
          expectModel(
            (tsd & (TSD_OWN | TSD_TOK | TSD_TUN)) === wantStatus && (tsd & 0x1fff) === size,
            () =>
              `${what}: descriptor ${slot} (TSAD 0x${x.addr.toString(16)}, size ${size}) reads TSD 0x${tsd.toString(16)}, expected status 0x${wantStatus.toString(16)}`,
          );
          expectModel(
            (isr & (ISR_TOK | ISR_TER)) === (fits ? ISR_TOK : ISR_TER),
            () =>
              `${what}: ISR 0x${isr.toString(16)} after descriptor ${slot}, expected ${fits ? "TOK" : "TER"}`,
          );
          if (fits) {
            sent++;
            const got = backend.sent[backend.sent.length - 1]?.frame;
            const want = memory.slice(x.addr, size) as Uint8Array;
            expectModel(
              backend.sent.length === sent && got !== undefined && Buffer.compare(got, want) === 0,
              () =>
                `${what}: the back-end got ${got === undefined ? "nothing" : hex(got)}, memory holds ${hex(want)}`,
            );
          } else {
            expectModel(
              backend.sent.length === sent,
              () => `${what}: a failed descriptor reached the back-end`,
            );
          }
        }
        break;
      }
      case "rx": {
        chipInit();
        const size = 8192 << s.rblen;
        const rcr = (s.rcr & 0x0f) | (s.rblen << 11) | (s.wrap ? 0x80 : 0);
        for (let i = 0; i < 8; i++) wr(MAR0 + i, 1, s.mar[i]!);
        wr(RBSTART, 4, s.base);
        wr(RCR, 4, rcr);
        wr(CR, 1, CR_RE | CR_TE);
        wr(IMR, 2, 0);
        noteRing();
        fillCanary(memory, keep());
        // The model: ring pointers after reset, CAPR's internal value is CAPR + 16.
        let cbr = 0;
        let capr = 0;
        let mpc = 0;
        const wrapMode = s.wrap && size < 65536;
        for (let fi = 0; fi < s.frames.length; fi++) {
          const fr = s.frames[fi]!;
          const f = bytesFrom(fr.seed, fr.len);
          if (f.length >= 6) {
            if (fr.dst === "own") f.set(MAC);
            else if (fr.dst === "bcast") f.fill(0xff, 0, 6);
            else if (fr.dst === "multi") {
              f[0] = f[0]! | 1;
              if (f.subarray(0, 6).every((x) => x === 0xff)) f[5] = 0;
            } else {
              f[0] = f[0]! & 0xfe;
              if (f[1] === MAC[1]) f[1] = f[1]! ^ 0x80;
            }
          }
          wr(ISR, 2, 0xffff);
          noThrow(`${what}: frame ${fi} from the back-end`, () => backend.inject(f));
          const fw = `${what} frame ${fi} (${f.length} bytes, ${fr.dst})`;
          // Filter (reference §RX 1): AAP, AB, AM + MAR hash, APM + IDR.
          let status = 0;
          if (f.length >= 14 && f.length <= 1518) {
            if (s.rcr & 0x01) status = 0x0001;
            else if (f.subarray(0, 6).every((x) => x === 0xff)) status = s.rcr & 0x08 ? 0x2001 : 0;
            else if (f[0]! & 1) {
              const bit = mcastBit(f);
              status = s.rcr & 0x04 && s.mar[bit >> 3]! & (1 << (bit & 7)) ? 0x8001 : 0;
            } else status = s.rcr & 0x02 && MAC.every((m, i) => f[i] === m) ? 0x4001 : 0;
          }
          const isr = rd(ISR, 2);
          let want = 0;
          if (status !== 0) {
            const padded = Math.max(f.length, 60);
            const total = 4 + padded + 4;
            const avail = (size + capr - cbr) % size;
            const inMem = (a: number, n: number) => a + n <= MEM;
            if (avail !== 0 && padded + 8 >= avail) {
              want = ISR_RXOVW;
              mpc++;
            } else {
              const first = wrapMode ? total : Math.min(total, size - cbr);
              if (!inMem(s.base + cbr, first) || (first < total && !inMem(s.base, total - first))) {
                want = ISR_SERR;
              } else {
                const entry = new Uint8Array(total);
                const dv = new DataView(entry.buffer);
                dv.setUint16(0, status, true);
                dv.setUint16(2, padded + 4, true);
                entry.set(f, 4);
                dv.setUint32(4 + padded, crc32(entry.subarray(4, 4 + padded)), true);
                const got = new Uint8Array(total);
                got.set(memory.slice(s.base + cbr, first) as Uint8Array);
                if (first < total)
                  got.set(memory.slice(s.base, total - first) as Uint8Array, first);
                if (Buffer.compare(got, entry) !== 0) {
                  let k = 0;
                  while (got[k] === entry[k]) k++;
                  throw new FuzzFinding(
                    "model",
                    `${fw}: ring entry at CBR ${cbr} differs from byte ${k}: got ${hex(got.subarray(k), 12)}, expected ${hex(entry.subarray(k), 12)}`,
                  );
                }
                cbr = ((cbr + total + 3) & ~3) % size;
                want = ISR_ROK;
              }
            }
          }
          expectModel(
            (isr & (ISR_ROK | ISR_RXOVW | ISR_SERR)) === want,
            () => `${fw}: ISR 0x${isr.toString(16)}, the model expects 0x${want.toString(16)}`,
          );
          const gotCbr = rd(CBR, 2, true);
          expectModel(gotCbr === cbr, () => `${fw}: CBR ${gotCbr}, the model ${cbr}`);
          const gotMpc = rd(MPC, 4);
          expectModel(gotMpc === mpc, () => `${fw}: MPC ${gotMpc}, the model ${mpc}`);
          if (fr.consume) {
            // The driver consumed everything: CAPR = CBR - 16 (8139too).
            wr(CAPR, 2, (cbr - 16) & 0xffff);
            capr = cbr;
          }
        }
        expectCanary(memory, keep(), what);
        break;
      }
    }
    expectNoBusFaults(bus, what);
    expectCanary(memory, keep(), what);
  }
  // Serves after reset: transmit one frame and receive one.
  chipInit();
  wr(CFG9346, 1, 0);
  wr(CR, 1, CR_TE | CR_RE);
  const n = backend.sent.length;
  memory.write(0x100, bytesFrom(3, 60));
  wr(TSAD0, 4, 0x100);
  wr(TSD0, 4, 60);
  expectModel(backend.sent.length === n + 1, () => "after reset the chip does not transmit");
  wr(RBSTART, 4, 0x4000);
  wr(RCR, 4, 0x0f);
  wr(CR, 1, CR_TE | CR_RE);
  const f = bytesFrom(5, 64);
  f.set(MAC);
  noThrow("final frame", () => backend.inject(f));
  const hdr = memory.readU32(0x4000);
  // AAP: status ROK only; the length counts the CRC.
  expectModel(
    hdr === ((68 << 16) | 0x0001) >>> 0,
    () => `after reset the chip stored header ${String(hdr)}`,
  );
  expectNoBusFaults(bus, "end of case");
}
