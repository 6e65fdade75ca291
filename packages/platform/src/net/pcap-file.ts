/**
 * `PcapFileWriter` (Node only): a {@link PcapWriter} whose sink is a file, written
 * synchronously so the file is complete whenever a test or a crash looks at it.
 *
 * @module
 */

import { closeSync, openSync, writeSync } from "node:fs";
import { PcapWriter, type PcapWriterOptions } from "./pcap.js";

/** A pcap file being written. */
export class PcapFileWriter extends PcapWriter {
  private readonly file: { fd: number };

  /** Creates (truncates) `path` and writes the global header. */
  constructor(
    readonly path: string,
    options: PcapWriterOptions = {},
  ) {
    const file = { fd: openSync(path, "w") };
    super((bytes) => {
      if (file.fd < 0) return; // closed: frames after close are not recorded
      let at = 0;
      while (at < bytes.length) at += writeSync(file.fd, bytes, at, bytes.length - at);
    }, options);
    this.file = file;
  }

  /** Closes the file; later frames are ignored. */
  close(): void {
    if (this.file.fd < 0) return;
    closeSync(this.file.fd);
    this.file.fd = -1;
  }
}
