/**
 * qcow2 images on the file system (Node-only): {@link openQcow2} opens an image file as
 * a {@link Qcow2Disk} with zlib for compressed clusters and a backing-file opener that
 * resolves names against the image's directory, follows `raw` and `qcow2` backing files
 * (probing the magic when the header names no format), and refuses loops by real path;
 * {@link createQcow2} makes a fresh image like `qemu-img create -f qcow2`.
 *
 * @module
 */

import * as fs from "node:fs";
import { dirname, resolve } from "node:path";
import { constants, inflateRawSync } from "node:zlib";
import { FileDisk } from "../file-disk.js";
import { QCOW2_MAGIC, Qcow2FormatError } from "./format.js";
import {
  formatQcow2,
  type OpenBacking,
  Qcow2Disk,
  type Qcow2FormatOptions,
  type Qcow2OpenOptions,
} from "./qcow2-disk.js";

/** Options of {@link openQcow2}. */
export type Qcow2FileOptions = Omit<Qcow2OpenOptions, "identity">;

/**
 * Inflates a compressed cluster (raw deflate, qcow2.txt "Compressed Clusters
 * Descriptor") with zlib; bytes after the end of the deflate stream are ignored (the
 * last sector is shared with the next compressed cluster).
 *
 * @param input - the compressed bytes (the sectors the descriptor names)
 * @param outputLength - the cluster size
 * @returns exactly `outputLength` bytes, or `undefined` when the data does not inflate to that
 */
export function inflateRawZlib(input: Uint8Array, outputLength: number): Uint8Array | undefined {
  try {
    const out = inflateRawSync(input, {
      finishFlush: constants.Z_SYNC_FLUSH,
      maxOutputLength: outputLength,
    });
    return out.length === outputLength
      ? new Uint8Array(out.buffer, out.byteOffset, out.length)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The default {@link OpenBacking}: names relative to `dir`, raw or qcow2, opened read-only. */
function backingOpener(dir: string, options: Qcow2FileOptions): OpenBacking {
  return async (name, format, chain) => {
    const path = resolve(dir, name);
    let kind = format;
    if (kind === undefined) {
      const head = new Uint8Array(4);
      const fd = await fs.promises.open(path, "r");
      try {
        await fd.read(head, 0, 4, 0);
      } finally {
        await fd.close();
      }
      kind = new DataView(head.buffer).getUint32(0) === QCOW2_MAGIC ? "qcow2" : "raw";
    }
    if (kind === "raw") return FileDisk.open(path, { readOnly: true });
    if (kind === "qcow2")
      return openQcow2(path, {
        ...(options.inflateRaw === undefined ? {} : { inflateRaw: options.inflateRaw }),
        ...(options.l2CacheBytes === undefined ? {} : { l2CacheBytes: options.l2CacheBytes }),
        readOnly: true,
        chain,
      });
    throw new Qcow2FormatError("backing format", 'must be "raw" or "qcow2"', kind);
  };
}

/**
 * Opens a qcow2 image file. Its backing file (if any) is opened read-only through
 * `options.openBacking`, or by default relative to the image's directory; a chain that
 * comes back to an image already in it is refused.
 *
 * @param path - the image file
 * @param options - see {@link Qcow2OpenOptions}
 * @throws Qcow2FormatError for a malformed or unsupported image or backing chain
 */
export async function openQcow2(path: string, options: Qcow2FileOptions = {}): Promise<Qcow2Disk> {
  const real = await fs.promises.realpath(path);
  const file = await FileDisk.open(real, {
    readOnly: options.readOnly ?? false,
    punchHoles: false,
  });
  try {
    return await Qcow2Disk.open(file, {
      ...options,
      identity: real,
      inflateRaw: options.inflateRaw ?? inflateRawZlib,
      openBacking: options.openBacking ?? backingOpener(dirname(real), options),
    });
  } catch (err) {
    await file.close();
    throw err;
  }
}

/**
 * Creates (or truncates) `path` as a fresh qcow2 image (see `formatQcow2`).
 *
 * @param path - the image file to write
 * @param options - size, version, cluster size, refcount width, lazy refcounts, backing file
 */
export async function createQcow2(path: string, options: Qcow2FormatOptions): Promise<void> {
  const file = await FileDisk.open(path, { create: 0 });
  try {
    await formatQcow2(file, options);
  } finally {
    await file.close();
  }
}
