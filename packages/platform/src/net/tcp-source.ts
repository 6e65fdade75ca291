/**
 * The sending half of a host-side TCP connection (RFC 9293), for benchmark rigs that need
 * the host to push a byte stream into a guest: a {@link TcpSender} sends what its
 * {@link TcpByteSource} holds in MSS-sized segments within the peer's advertised window and
 * a congestion window (RFC 5681: slow start, congestion avoidance, fast retransmit and
 * NewReno fast recovery, RFC 6582), retransmits on timeout (RFC 6298: smoothed RTT, Karn's
 * rule, exponential back-off), probes a zero window (RFC 9293 §3.8.6.1), and closes with a
 * FIN once the source has ended. It also takes in-order data from the peer (handed to
 * {@link TcpSenderOptions.onData}), which is what an echo service needs.
 *
 * The sender knows no frame format: it is fed the fields of each segment that arrived and
 * emits segments through a callback; `HostResponder` builds the IPv4/Ethernet frames. The
 * guest can drop frames (a full receive ring); everything it acknowledged is never resent
 * and everything it did not is.
 *
 * @module
 */

/** TCP header flags (RFC 9293 §3.1). */
export const TcpFlag = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
} as const;

/** The MSS assumed when the peer's SYN carries no MSS option (RFC 9293 §3.7.1). */
export const TCP_DEFAULT_MSS = 536;
/** The initial retransmission timeout, ms (RFC 6298 §2.1). */
export const TCP_INITIAL_RTO_MS = 1000;
/** The lowest retransmission timeout, ms (Linux's TCP_RTO_MIN; RFC 6298 §2.4 allows less than 1 s). */
export const TCP_MIN_RTO_MS = 200;
/** The highest retransmission timeout, ms (RFC 6298 §2.5). */
export const TCP_MAX_RTO_MS = 60_000;

/** Where a sender's bytes come from. Offsets count from the first data byte (0). */
export interface TcpByteSource {
  /** Bytes produced so far (may grow while the connection lives). */
  available(): number;
  /** True when no byte will follow `available()`: the FIN goes after the last one. */
  ended(): boolean;
  /** Fills `into` with the bytes at `[offset, offset + into.length)`, all below `available()`. */
  read(offset: number, into: Uint8Array): void;
}

/** One segment the sender emits. `payload` is only valid during the callback. */
export interface TcpSegmentOut {
  /** {@link TcpFlag} bits. */
  readonly flags: number;
  /** Sequence number. */
  readonly seq: number;
  /** Acknowledgment number. */
  readonly ack: number;
  /** Window we advertise. */
  readonly window: number;
  /** Data (possibly empty). */
  readonly payload: Uint8Array;
  /** With SYN: the MSS option to send. */
  readonly mss?: number;
}

/** The fields of a segment that arrived (checksum already verified by the caller). */
export interface TcpSegmentIn {
  /** {@link TcpFlag} bits. */
  readonly flags: number;
  /** Sequence number. */
  readonly seq: number;
  /** Acknowledgment number (meaningful with ACK). */
  readonly ack: number;
  /** Window the peer advertises (unscaled: we offer no window scale option). */
  readonly window: number;
  /** Data. */
  readonly payload: Uint8Array;
}

/** Timers and time, injectable for tests. */
export interface TcpClock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Calls `fn` after `ms`. */
  setTimer(fn: () => void, ms: number): unknown;
  /** Cancels a timer from {@link TcpClock.setTimer}. */
  clearTimer(handle: unknown): void;
}

/** The default clock: `performance.now` and `setTimeout` (a retransmission timeout is a real wait). */
export const systemTcpClock: TcpClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Options of a {@link TcpSender}. */
export interface TcpSenderOptions {
  /** The peer's SYN (its sequence number, window and MSS option). */
  readonly syn: { readonly seq: number; readonly window: number; readonly mss?: number };
  /** Our initial sequence number. */
  readonly iss: number;
  /** What we send. */
  readonly source: TcpByteSource;
  /** Sends one segment to the peer. */
  readonly emit: (segment: TcpSegmentOut) => void;
  /** Our MSS (the most we accept per segment; default 1460, a 1500-byte MTU). */
  readonly ourMss?: number;
  /** The receive window we advertise (default 65535). */
  readonly receiveWindow?: number;
  /** In-order data from the peer (only valid during the call). */
  readonly onData?: (data: Uint8Array) => void;
  /** The peer sent its FIN (all its data has been delivered). */
  readonly onPeerFin?: () => void;
  /** Time and timers (default {@link systemTcpClock}). */
  readonly clock?: TcpClock;
}

/** Counters of a {@link TcpSender}. */
export interface TcpSenderStats {
  /** Data bytes the peer acknowledged. */
  bytesAcked: number;
  /** Segments emitted (all kinds). */
  segments: number;
  /** Data or FIN segments sent again. */
  retransmits: number;
  /** Retransmission timeouts. */
  timeouts: number;
  /** Fast retransmits (three duplicate ACKs, or a partial ACK in recovery). */
  fastRetransmits: number;
  /** Zero-window probes. */
  probes: number;
  /** In-order data bytes received from the peer. */
  bytesReceived: number;
}

/** Where a {@link TcpSender} is. */
export type TcpSenderState = "syn-received" | "established" | "closed";

const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0;

/**
 * A passive-open TCP connection that sends a byte stream: created from the peer's SYN, it
 * answers SYN-ACK at once (see {@link TcpSender.constructor}).
 */
export class TcpSender {
  /** Counters. */
  readonly stats: TcpSenderStats = {
    bytesAcked: 0,
    segments: 0,
    retransmits: 0,
    timeouts: 0,
    fastRetransmits: 0,
    probes: 0,
    bytesReceived: 0,
  };
  private stateValue: TcpSenderState = "syn-received";
  private readonly iss: number;
  private readonly irs: number;
  private readonly mss: number;
  private readonly rcvWnd: number;
  private readonly clock: TcpClock;
  private readonly source: TcpByteSource;
  private readonly emitFn: (segment: TcpSegmentOut) => void;
  private readonly onData: ((data: Uint8Array) => void) | undefined;
  private readonly onPeerFin: (() => void) | undefined;
  private readonly scratch: Uint8Array;
  private sndUna: number;
  private sndNxt: number;
  private sndMax: number;
  private sndWnd: number;
  private sndWl1: number;
  private sndWl2: number;
  private rcvNxt: number;
  private cwnd: number;
  private ssthresh = 0x7fff_ffff;
  private dupAcks = 0;
  private recover: number | null = null;
  private finSent = false;
  private peerFin = false;
  private srtt: number | null = null;
  private rttvar = 0;
  private rto = TCP_INITIAL_RTO_MS;
  private rttSeq: number | null = null;
  private rttStart = 0;
  private deadline = 0;
  private timer: unknown = null;

  /**
   * Takes the peer's SYN and sends SYN-ACK with our MSS option.
   *
   * @param options - the SYN, our ISS, the byte source and where segments go
   */
  constructor(options: TcpSenderOptions) {
    this.iss = options.iss >>> 0;
    this.irs = options.syn.seq >>> 0;
    const peerMss = options.syn.mss ?? TCP_DEFAULT_MSS;
    this.mss = Math.max(64, Math.min(peerMss, options.ourMss ?? 1460));
    this.rcvWnd = Math.min(0xffff, options.receiveWindow ?? 0xffff);
    this.clock = options.clock ?? systemTcpClock;
    this.source = options.source;
    this.emitFn = options.emit;
    this.onData = options.onData;
    this.onPeerFin = options.onPeerFin;
    this.scratch = new Uint8Array(this.mss);
    this.sndUna = this.iss;
    this.sndNxt = (this.iss + 1) >>> 0;
    this.sndMax = this.sndNxt;
    this.sndWnd = options.syn.window;
    this.sndWl1 = this.irs;
    this.sndWl2 = this.iss;
    this.rcvNxt = (this.irs + 1) >>> 0;
    // RFC 6928's initial window of 10 segments (bounded below by RFC 5681's).
    this.cwnd = Math.min(10 * this.mss, Math.max(2 * this.mss, 14600));
    this.sendSynAck();
  }

  /** Where the connection is. */
  get state(): TcpSenderState {
    return this.stateValue;
  }

  /** True once every data byte and our FIN were acknowledged. */
  get allAcked(): boolean {
    return this.finSent && this.sndUna === this.sndMax && this.stateValue !== "syn-received";
  }

  /** Whether the peer's FIN arrived. */
  get peerClosed(): boolean {
    return this.peerFin;
  }

  /** Data bytes not yet acknowledged (in flight). */
  get inFlight(): number {
    return (this.sndMax - this.sndUna) >>> 0;
  }

  /** The congestion window, bytes. */
  get congestionWindow(): number {
    return this.cwnd;
  }

  /** The current retransmission timeout, ms. */
  get retransmissionTimeout(): number {
    return this.rto;
  }

  /** Stops the timers and forgets the connection (after a RST, or when the owner drops it). */
  close(): void {
    this.stateValue = "closed";
    this.stopTimer();
  }

  /** Call after the source grew or ended: sends what the windows allow. */
  pump(): void {
    if (this.stateValue !== "established") return;
    this.sendNew();
    this.armTimer();
  }

  /**
   * Handles one segment from the peer (RFC 9293 §3.10.7.4, for the states a sender that
   * never opens actively goes through).
   */
  receive(seg: TcpSegmentIn): void {
    if (this.stateValue === "closed") return;
    if (seg.flags & TcpFlag.RST) {
      // A reset in the window ends the connection (RFC 5961 §3.2 asks for an exact match;
      // the peer here is a guest on a private switch).
      this.close();
      return;
    }
    if (seg.flags & TcpFlag.SYN) {
      // A retransmitted SYN: the SYN-ACK was lost (or is slow); send it again.
      if (this.stateValue === "syn-received" && seg.seq >>> 0 === this.irs) this.sendSynAck();
      else this.sendAck();
      return;
    }
    if (!(seg.flags & TcpFlag.ACK)) return;
    const ack = seg.ack >>> 0;
    if (this.stateValue === "syn-received") {
      if (ack !== (this.iss + 1) >>> 0) {
        this.emit(TcpFlag.RST, ack, null, 0);
        return;
      }
      this.stateValue = "established";
      this.sndUna = ack;
      this.sndWnd = seg.window;
      this.sndWl1 = seg.seq >>> 0;
      this.sndWl2 = ack;
      this.stopTimer();
      this.rto = this.srtt === null ? TCP_INITIAL_RTO_MS : this.rto;
    } else if (seqLt(this.sndMax, ack)) {
      // Acknowledges something never sent: answer with an ACK, drop it (RFC 9293 §3.10.7.4).
      this.sendAck();
      return;
    } else {
      this.onAck(seg, ack);
    }
    this.onPayload(seg);
    if (this.stateValue === "established") {
      this.sendNew();
      this.armTimer();
    }
  }

  private onAck(seg: TcpSegmentIn, ack: number): void {
    const una = this.sndUna;
    // Window update (RFC 9293 §3.10.7.4, SND.WL1/SND.WL2).
    const windowGrew = seg.window > this.sndWnd;
    if (
      seqLe(una, ack) &&
      (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq >>> 0 && seqLe(this.sndWl2, ack)))
    ) {
      this.sndWnd = seg.window;
      this.sndWl1 = seg.seq >>> 0;
      this.sndWl2 = ack;
    }
    if (seqLt(una, ack)) {
      const acked = (ack - una) >>> 0;
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack; // after a go-back-N retransmission
      const finAcked = this.finSent && ack === this.sndMax;
      this.stats.bytesAcked += acked - (finAcked ? 1 : 0);
      this.dupAcks = 0;
      if (this.rttSeq !== null && seqLt(this.rttSeq, ack)) {
        this.rttSample(this.clock.now() - this.rttStart);
        this.rttSeq = null;
      }
      if (this.recover !== null) {
        if (seqLe(this.recover, ack)) {
          // Full acknowledgment: leave fast recovery (RFC 6582 §3.2 step 3).
          this.cwnd = Math.min(this.ssthresh, Math.max(this.inFlight, this.mss) + this.mss);
          this.recover = null;
        } else {
          // Partial acknowledgment: the next hole is lost too (RFC 6582 §3.2 step 4).
          this.retransmitAt(this.sndUna);
          this.stats.fastRetransmits++;
          this.cwnd = Math.max(this.mss, this.cwnd - acked + this.mss);
        }
      } else if (this.cwnd < this.ssthresh) {
        this.cwnd += Math.min(acked, this.mss); // slow start (RFC 5681 §3.1)
      } else {
        this.cwnd += Math.max(1, Math.floor((this.mss * this.mss) / this.cwnd));
      }
      // New data acknowledged: restart the timer (RFC 6298 §5.3).
      this.deadline = this.clock.now() + this.rto;
      return;
    }
    // A duplicate ACK (RFC 5681 §2): nothing new acknowledged, no data, and something
    // outstanding. RFC 5681 also asks for an unchanged window; a receiver without SACK
    // (Linux here: we offer no SACK-permitted option) shrinks its window as its
    // out-of-order queue fills, so only a window that grew makes it a window update.
    if (
      ack === una &&
      seg.payload.length === 0 &&
      !(seg.flags & TcpFlag.FIN) &&
      !windowGrew &&
      this.inFlight > 0
    ) {
      this.dupAcks++;
      if (this.recover === null && this.dupAcks === 3) {
        this.ssthresh = Math.max(Math.floor(this.inFlight / 2), 2 * this.mss);
        this.recover = this.sndMax;
        this.retransmitAt(una);
        this.stats.fastRetransmits++;
        this.cwnd = this.ssthresh + 3 * this.mss;
      } else if (this.recover !== null) {
        this.cwnd += this.mss; // inflation for each segment that left the network
      }
    }
  }

  private onPayload(seg: TcpSegmentIn): void {
    const len = seg.payload.length;
    const fin = (seg.flags & TcpFlag.FIN) !== 0;
    if (len === 0 && !fin) return;
    if (seg.seq >>> 0 === this.rcvNxt && !this.peerFin) {
      if (len > 0) {
        const take = seg.payload.subarray(0, Math.min(len, this.rcvWnd));
        this.rcvNxt = (this.rcvNxt + take.length) >>> 0;
        this.stats.bytesReceived += take.length;
        this.onData?.(take);
      }
      if (fin && len <= this.rcvWnd) {
        this.rcvNxt = (this.rcvNxt + 1) >>> 0;
        this.peerFin = true;
        this.onPeerFin?.();
      }
    }
    // In order or not, acknowledge what we expect next (a duplicate ACK for a gap).
    this.sendAck();
  }

  private rttSample(r: number): void {
    // RFC 6298 §2.2–2.3.
    if (this.srtt === null) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(
      TCP_MAX_RTO_MS,
      Math.max(TCP_MIN_RTO_MS, this.srtt + Math.max(1, 4 * this.rttvar)),
    );
  }

  /** The sequence number just after the last data byte the source has now. */
  private dataEnd(): number {
    return (this.iss + 1 + this.source.available()) >>> 0;
  }

  /** Sends new (or, after a timeout, resent) segments while both windows allow. */
  private sendNew(): void {
    for (;;) {
      const end = this.dataEnd();
      const window = Math.min(this.sndWnd, this.cwnd);
      const flight = (this.sndNxt - this.sndUna) >>> 0;
      if (seqLt(this.sndNxt, end)) {
        const len = Math.min(this.mss, (end - this.sndNxt) >>> 0, window - flight);
        if (len <= 0) return;
        this.sendData(this.sndNxt, len);
        this.sndNxt = (this.sndNxt + len) >>> 0;
        if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
        continue;
      }
      if (
        this.sndNxt === end &&
        this.source.ended() &&
        (!this.finSent || this.sndNxt !== this.sndMax)
      ) {
        // The FIN needs no window (RFC 9293 §3.8.6); it takes one sequence number.
        const again = this.finSent;
        this.finSent = true;
        if (again) this.stats.retransmits++;
        this.emit(TcpFlag.FIN | TcpFlag.ACK, this.sndNxt, null, 0);
        this.sndNxt = (this.sndNxt + 1) >>> 0;
        if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
      }
      return;
    }
  }

  private sendData(seq: number, len: number): void {
    const offset = (seq - this.iss - 1) >>> 0;
    const payload = this.scratch.subarray(0, len);
    this.source.read(offset, payload);
    const resend = seqLt(seq, this.sndMax);
    if (resend) this.stats.retransmits++;
    else if (this.rttSeq === null) {
      this.rttSeq = seq;
      this.rttStart = this.clock.now();
    }
    this.emit(TcpFlag.ACK | TcpFlag.PSH, seq, payload, 0);
  }

  /** Resends the segment starting at `seq` (data, at most `max` bytes, or our FIN). */
  private retransmitAt(seq: number, max = this.mss): void {
    if (this.finSent && seq === this.dataEnd()) {
      this.stats.retransmits++;
      this.emit(TcpFlag.FIN | TcpFlag.ACK, seq, null, 0);
      return;
    }
    const len = Math.min(max, (this.dataEnd() - seq) >>> 0);
    if (len <= 0) return;
    if (this.rttSeq !== null && seqLe(seq, this.rttSeq)) this.rttSeq = null; // Karn
    this.sendData(seq, len);
  }

  private sendSynAck(): void {
    this.emit(TcpFlag.SYN | TcpFlag.ACK, this.iss, null, this.mss);
    this.deadline = this.clock.now() + this.rto;
    this.startTimer(this.rto);
  }

  private sendAck(): void {
    this.emit(TcpFlag.ACK, this.sndNxt, null, 0);
  }

  private emit(flags: number, seq: number, payload: Uint8Array | null, mss: number): void {
    this.stats.segments++;
    const seg: TcpSegmentOut = {
      flags,
      seq: seq >>> 0,
      ack: flags & TcpFlag.ACK ? this.rcvNxt : 0,
      window: this.rcvWnd,
      payload: payload ?? EMPTY,
      ...(mss > 0 ? { mss } : {}),
    };
    this.emitFn(seg);
  }

  /** Arms the retransmission or persist timer when something is outstanding or blocked. */
  private armTimer(): void {
    if (this.stateValue !== "established") return;
    const outstanding = this.inFlight > 0;
    const blocked =
      !outstanding &&
      this.sndWnd === 0 &&
      (seqLt(this.sndNxt, this.dataEnd()) || (this.source.ended() && !this.finSent));
    if (!outstanding && !blocked) {
      this.stopTimer();
      return;
    }
    if (this.timer === null) {
      this.deadline = this.clock.now() + this.rto;
      this.startTimer(this.rto);
    }
  }

  private startTimer(ms: number): void {
    this.stopTimer();
    this.timer = this.clock.setTimer(() => this.onTimer(), ms);
  }

  private stopTimer(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
  }

  private onTimer(): void {
    this.timer = null;
    if (this.stateValue === "closed") return;
    const now = this.clock.now();
    if (now < this.deadline) {
      // Progress since the timer was set: wait for the rest.
      this.startTimer(this.deadline - now);
      return;
    }
    if (this.stateValue === "syn-received") {
      this.rto = Math.min(TCP_MAX_RTO_MS, this.rto * 2);
      this.sendSynAck();
      return;
    }
    if (this.inFlight === 0) {
      if (this.sndWnd === 0) {
        // Zero-window probe: one new byte beyond the window (RFC 9293 §3.8.6.1), or the
        // FIN; it is then in flight and the retransmission timer backs it off.
        this.stats.probes++;
        const end = this.dataEnd();
        if (seqLt(this.sndNxt, end)) {
          this.sendData(this.sndNxt, 1);
          this.sndNxt = (this.sndNxt + 1) >>> 0;
          this.sndMax = this.sndNxt;
        } else if (this.source.ended() && !this.finSent) {
          this.finSent = true;
          this.emit(TcpFlag.FIN | TcpFlag.ACK, this.sndNxt, null, 0);
          this.sndNxt = (this.sndNxt + 1) >>> 0;
          this.sndMax = this.sndNxt;
        }
        this.rto = Math.min(TCP_MAX_RTO_MS, this.rto * 2);
        this.deadline = this.clock.now() + this.rto;
        this.startTimer(this.rto);
      }
      return;
    }
    // Retransmission timeout (RFC 6298 §5.4–5.6, RFC 5681 §3.1): one segment of loss
    // window, go back to the oldest unacknowledged byte, back off.
    this.stats.timeouts++;
    this.ssthresh = Math.max(Math.floor(this.inFlight / 2), 2 * this.mss);
    this.cwnd = this.mss;
    this.recover = null;
    this.dupAcks = 0;
    this.rttSeq = null;
    this.sndNxt = this.sndUna;
    this.rto = Math.min(TCP_MAX_RTO_MS, this.rto * 2);
    if (this.sndWnd === 0) {
      // The probe in flight was not acknowledged: send it again (the receiver may have
      // dropped it for want of space).
      this.retransmitAt(this.sndUna, this.inFlight);
      this.sndNxt = this.sndMax;
    } else {
      this.sendNew();
    }
    this.deadline = this.clock.now() + this.rto;
    this.startTimer(this.rto);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * The bytes a {@link patternSource} produces: byte `i` of the stream. A period of 65 521
 * (a prime) keeps the pattern from lining up with segment or page boundaries.
 */
export function tcpPatternByte(i: number): number {
  const k = i % 65_521;
  return (k * 151 + (k >>> 8)) & 0xff;
}

let patternTable: Uint8Array | null = null;

/** A source of `bytes` bytes of {@link tcpPatternByte}, ended from the start. */
export function patternSource(bytes: number): TcpByteSource {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bad byte count ${bytes}`);
  if (patternTable === null) {
    // Two periods, so any read shorter than a period is one copy.
    patternTable = new Uint8Array(2 * 65_521);
    for (let i = 0; i < patternTable.length; i++) patternTable[i] = tcpPatternByte(i);
  }
  const table = patternTable;
  return {
    available: () => bytes,
    ended: () => true,
    read: (offset, into) => {
      let at = 0;
      while (at < into.length) {
        const k = (offset + at) % 65_521;
        const n = Math.min(into.length - at, 65_521);
        into.set(table.subarray(k, k + n), at);
        at += n;
      }
    },
  };
}

/** A source that grows: bytes are appended with `push` and it ends with `end` (an echo). */
export class GrowingSource implements TcpByteSource {
  private chunks: Uint8Array[] = [];
  private starts: number[] = [];
  private length = 0;
  private done = false;
  /** The number of bytes pushed so far. */
  available(): number {
    return this.length;
  }
  /** Whether {@link GrowingSource.end} was called. */
  ended(): boolean {
    return this.done;
  }
  /** Appends a copy of `data`. */
  push(data: Uint8Array): void {
    if (this.done || data.length === 0) return;
    this.starts.push(this.length);
    this.chunks.push(data.slice());
    this.length += data.length;
  }
  /** No more bytes. */
  end(): void {
    this.done = true;
  }
  /** See {@link TcpByteSource.read}. */
  read(offset: number, into: Uint8Array): void {
    let i = 0;
    while (i + 1 < this.starts.length && this.starts[i + 1]! <= offset) i++;
    let at = 0;
    while (at < into.length && i < this.chunks.length) {
      const c = this.chunks[i]!;
      const from = offset + at - this.starts[i]!;
      const n = Math.min(c.length - from, into.length - at);
      into.set(c.subarray(from, from + n), at);
      at += n;
      i++;
    }
  }
}
