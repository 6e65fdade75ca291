/**
 * `PcapWriter`: writes the classic libpcap capture format (the file format tcpdump and
 * Wireshark read; "pcap" in IETF draft-ietf-opsawg-pcap): a 24-byte global header
 * (magic 0xa1b2c3d4 = microsecond timestamps, version 2.4, snaplen, LINKTYPE_ETHERNET = 1)
 * then one 16-byte record header (seconds, microseconds, captured length, original
 * length) per frame. Written little-endian (the magic tells readers the byte order).
 *
 * Bytes go to a sink function, so the writer runs anywhere; `@pvkit/platform/node` has a
 * file sink.
 *
 * @module
 */

/** pcap magic number for microsecond timestamps. */
export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
/** pcap format version 2.4. */
export const PCAP_VERSION_MAJOR = 2;
/** pcap format version 2.4. */
export const PCAP_VERSION_MINOR = 4;
/** LINKTYPE_ETHERNET (tcpdump.org link-layer header types): IEEE 802.3 frames without FCS. */
export const LINKTYPE_ETHERNET = 1;
/** Bytes of the pcap global header. */
export const PCAP_GLOBAL_HEADER_LEN = 24;
/** Bytes of a pcap record header. */
export const PCAP_RECORD_HEADER_LEN = 16;

/** Options of {@link PcapWriter}. */
export interface PcapWriterOptions {
  /** Longest frame prefix kept (default 262 144, tcpdump's default). */
  readonly snaplen?: number;
  /** Clock in microseconds since the Unix epoch (default from `Date.now` / `performance.now`). */
  readonly nowMicros?: () => number;
}

function defaultClock(): () => number {
  const base = Date.now() * 1000 - performance.now() * 1000;
  return () => Math.floor(base + performance.now() * 1000);
}

/** A libpcap writer (LINKTYPE_ETHERNET, microsecond timestamps). */
export class PcapWriter {
  /** Frames written. */
  frames = 0;
  /** Bytes written, headers included. */
  bytes = 0;
  /** The snapshot length. */
  readonly snaplen: number;
  private readonly nowMicros: () => number;
  private readonly header = new Uint8Array(PCAP_RECORD_HEADER_LEN);
  private readonly headerView = new DataView(this.header.buffer);

  /**
   * Writes the global header to `sink` at once.
   *
   * @param sink - receives the bytes, in order; it must copy them if it keeps them
   */
  constructor(
    private readonly sink: (bytes: Uint8Array) => void,
    options: PcapWriterOptions = {},
  ) {
    this.snaplen = options.snaplen ?? 262_144;
    this.nowMicros = options.nowMicros ?? defaultClock();
    const g = new Uint8Array(PCAP_GLOBAL_HEADER_LEN);
    const v = new DataView(g.buffer);
    v.setUint32(0, PCAP_MAGIC_MICROSECONDS, true);
    v.setUint16(4, PCAP_VERSION_MAJOR, true);
    v.setUint16(6, PCAP_VERSION_MINOR, true);
    v.setInt32(8, 0, true); // thiszone: GMT
    v.setUint32(12, 0, true); // sigfigs
    v.setUint32(16, this.snaplen, true);
    v.setUint32(20, LINKTYPE_ETHERNET, true);
    this.emit(g);
  }

  /**
   * Appends one frame.
   *
   * @param frame - an Ethernet frame without FCS
   * @param timestampMicros - microseconds since the epoch (default: now)
   */
  write(frame: Uint8Array, timestampMicros = this.nowMicros()): void {
    const caplen = Math.min(frame.length, this.snaplen);
    const v = this.headerView;
    const ts = Math.max(0, Math.floor(timestampMicros));
    v.setUint32(0, Math.floor(ts / 1e6) >>> 0, true);
    v.setUint32(4, ts % 1e6, true);
    v.setUint32(8, caplen, true);
    v.setUint32(12, frame.length, true);
    this.emit(this.header);
    this.emit(caplen === frame.length ? frame : frame.subarray(0, caplen));
    this.frames++;
  }

  /** A {@link @pvkit/platform!SwitchTap}-shaped function writing every frame it is given. */
  tap(): (frame: Uint8Array) => void {
    return (frame) => this.write(frame);
  }

  private emit(bytes: Uint8Array): void {
    this.bytes += bytes.length;
    this.sink(bytes);
  }
}

/** A sink that keeps everything in memory; `bytes()` returns the capture so far. */
export function memoryPcapSink(): { sink: (b: Uint8Array) => void; bytes: () => Uint8Array } {
  const chunks: Uint8Array[] = [];
  let total = 0;
  return {
    sink: (b) => {
      chunks.push(b.slice());
      total += b.length;
    },
    bytes: () => {
      const out = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      return out;
    },
  };
}
