/**
 * A writer for the "newc" cpio format (magic `070701`), the format Linux unpacks as an
 * initramfs (Documentation/driver-api/early-userspace/buffer-format.rst). Pure
 * TypeScript: no Node-only imports, so the browser can build initrds too.
 *
 * @module
 */

/** File type bits of `st_mode` (POSIX). */
export const CpioMode = {
  /** Regular file. */
  FILE: 0o100000,
  /** Directory. */
  DIR: 0o040000,
  /** Symbolic link (the data is the target). */
  SYMLINK: 0o120000,
  /** Character device. */
  CHAR: 0o020000,
  /** Block device. */
  BLOCK: 0o060000,
} as const;

/** One archive member. */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash (e.g. `"bin/busybox"`). */
  readonly name: string;
  /** Full `st_mode`: a {@link CpioMode} type bit or'ed with the permission bits. */
  readonly mode: number;
  /** Contents of a file, or the target of a symlink (default empty). */
  readonly data?: Uint8Array | string;
  /** Device major number of a device node (default 0). */
  readonly rdevMajor?: number;
  /** Device minor number of a device node (default 0). */
  readonly rdevMinor?: number;
  /** Modification time in seconds since the epoch (default 0, for reproducible archives). */
  readonly mtime?: number;
}

const TRAILER = "TRAILER!!!";
const encoder = new TextEncoder();

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/**
 * Builds a newc cpio archive, ending with the `TRAILER!!!` record. Every member is owned
 * by root; inode numbers are assigned in order, so the same entries give the same bytes.
 *
 * @param entries - members in archive order (parents before children)
 * @returns the archive, uncompressed
 * @throws Error on an empty or absolute name (a caller mistake)
 */
export function cpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  const push = (b: Uint8Array): void => {
    parts.push(b);
    total += b.length;
  };
  const record = (e: CpioEntry, ino: number): void => {
    if (e.name.length === 0 || e.name.startsWith("/")) {
      throw new Error(`cpio member name "${e.name}" must be relative and non-empty`);
    }
    const data = typeof e.data === "string" ? encoder.encode(e.data) : (e.data ?? new Uint8Array());
    const name = encoder.encode(`${e.name}\0`);
    const header =
      "070701" +
      hex8(ino) +
      hex8(e.mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8((e.mode & CpioMode.DIR) === CpioMode.DIR ? 2 : 1) + // nlink
      hex8(e.mtime ?? 0) +
      hex8(data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(e.rdevMajor ?? 0) +
      hex8(e.rdevMinor ?? 0) +
      hex8(name.length) +
      hex8(0); // check
    push(encoder.encode(header));
    push(name);
    push(new Uint8Array(pad4(110 + name.length)));
    push(data);
    push(new Uint8Array(pad4(data.length)));
  };
  for (let i = 0; i < entries.length; i++) record(entries[i]!, i + 1);
  record({ name: TRAILER, mode: 0 }, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The directories leading to `path` (`"a/b/c"` → `["a", "a/b"]`), for archives that must
 * create parents before their children.
 *
 * @param path - a relative path
 * @returns its ancestors, shortest first
 */
export function parentDirs(path: string): string[] {
  const parts = path.split("/");
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join("/"));
  return out;
}
