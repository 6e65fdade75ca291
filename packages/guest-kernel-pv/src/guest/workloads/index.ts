/**
 * The workloads: lmbench-style programs the guest kernel runs as ordinary processes
 * (generators yielding system calls), each counting its operations (`ops`) and reporting
 * guest-visible results — checksums, exit statuses, bytes received — that must be equal in
 * every configuration and runtime.
 *
 * | workload | one operation | needs |
 * |---|---|---|
 * | `fork-exit` | fork a child (COW copy of a populated address space), child writes a few pages and exits, parent waits | |
 * | `exec` | exec-like build of a fresh address space from an image (text, data, bss, stack) and teardown of the old one | |
 * | `mmap` | mmap N pages, touch each, munmap | |
 * | `pagefault` | one demand-zero write fault (of a storm over N pages) | |
 * | `pipe` | a round trip parent → child → parent through two pipes (two context switches) | |
 * | `gettimeofday` | one clock read | |
 * | `sleep` | one short sleep (timer programming, idle, interrupt) | |
 * | `net-rr` | an ICMP echo request and its reply | NIC |
 * | `net-stream` | one 1514-byte UDP frame to the host's sink | NIC |
 * | `disk-rand` | one 4 KiB read or write at a random 4 KiB-aligned sector | disk |
 * | `disk-seq` | one 64 KiB block written sequentially (then a flush, and all read back) | disk |
 *
 * @module
 */

import { GuestKernelError, GuestKernelErrorCode } from "../../errors.js";
import { type ExecImage, STACK_TOP } from "../mm/vm.js";
import { nonBlocking, type Program, type SyscallRequest, type User } from "../user.js";

const PAGE = 4096;

/** Parameters of a workload run (integers; unset ones take the defaults). */
export type WorkloadParams = Readonly<Record<string, number>>;

/** One parameter's range. */
export interface ParamSpec {
  /** Default value. */
  readonly default: number;
  /** Smallest value. */
  readonly min: number;
  /** Largest value. */
  readonly max: number;
  /** What it is. */
  readonly doc: string;
}

/** A workload. */
export interface Workload {
  /** Name. */
  readonly name: string;
  /** One line: what one operation is. */
  readonly summary: string;
  /** Devices it needs. */
  readonly needs: { readonly net: boolean; readonly blk: boolean };
  /** Its parameters. */
  readonly params: Readonly<Record<string, ParamSpec>>;
  /**
   * Checks parameters and fills in defaults.
   *
   * @throws GuestKernelError `BAD_PARAMS`
   */
  resolve(params: WorkloadParams): Record<string, number>;
  /** The program of its first process. */
  program(params: Record<string, number>): Program;
}

type Gen = Generator<SyscallRequest, number, number>;

function define(
  name: string,
  summary: string,
  needs: { net?: boolean; blk?: boolean },
  params: Record<string, ParamSpec>,
  program: (p: Record<string, number>) => Program,
): Workload {
  return {
    name,
    summary,
    needs: { net: needs.net ?? false, blk: needs.blk ?? false },
    params,
    program,
    resolve(given: WorkloadParams): Record<string, number> {
      if (given === null || typeof given !== "object") {
        throw new GuestKernelError(
          GuestKernelErrorCode.BAD_PARAMS,
          `parameters of "${name}" must be an object`,
        );
      }
      const out: Record<string, number> = {};
      for (const key of Object.keys(given)) {
        if (!(key in params)) {
          throw new GuestKernelError(
            GuestKernelErrorCode.BAD_PARAMS,
            `workload "${name}" has no parameter "${key}"; it has ${Object.keys(params).join(", ") || "none"}`,
          );
        }
      }
      for (const [key, spec] of Object.entries(params)) {
        const v = given[key] ?? spec.default;
        if (!Number.isSafeInteger(v) || v < spec.min || v > spec.max) {
          throw new GuestKernelError(
            GuestKernelErrorCode.BAD_PARAMS,
            `parameter "${key}" of "${name}" (${spec.doc}) must be an integer in ${spec.min}…${spec.max}, got ${String(v)}`,
          );
        }
        out[key] = v;
      }
      return out;
    },
  };
}

const p = (def: number, min: number, max: number, doc: string): ParamSpec => ({
  default: def,
  min,
  max,
  doc,
});

/** Sum of bytes, as an unsigned 32-bit checksum. */
function byteSum(b: Uint8Array, seed = 0): number {
  let s = seed;
  for (let i = 0; i < b.length; i++) s = (s + b[i]! * ((i % 7) + 1)) >>> 0;
  return s;
}

/** A deterministic image of `textPages` + `dataPages` pages. */
export function testImage(textPages: number, dataPages: number): ExecImage {
  const text = new Uint8Array(textPages * PAGE);
  for (let i = 0; i < text.length; i++) text[i] = (i * 31 + 7) & 0xff;
  const data = new Uint8Array(dataPages * PAGE);
  for (let i = 0; i < data.length; i++) data[i] = (i * 17 + 3) & 0xff;
  return { name: "bench-image", text, data, bssPages: 4, stackPages: 8 };
}

/** xorshift32 (Marsaglia 2003), for reproducible "random" sectors. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const forkExit = define(
  "fork-exit",
  "fork a child of a populated address space (copy-on-write), the child writes and exits, the parent waits",
  {},
  {
    iterations: p(20, 1, 100_000, "forks"),
    pages: p(16, 1, 4096, "pages the parent has touched"),
    writes: p(2, 0, 4096, "pages each child writes (copy-on-write faults)"),
    parentWrites: p(
      4,
      0,
      4096,
      "pages the parent writes after each child exits (its own activity)",
    ),
  },
  (q) =>
    function* (u: User): Gen {
      const P = q.pages!;
      const W = Math.min(q.writes!, P);
      const PW = Math.min(q.parentWrites!, P);
      const buf = u.mmap(P * PAGE);
      if (buf < 0) return 1;
      for (let i = 0; i < P; i++) u.store32(buf + i * PAGE, 0x1000 + i);
      let statusSum = 0;
      u.measureStart();
      for (let it = 0; it < q.iterations!; it++) {
        const pid = yield u.fork(
          nonBlocking((c: User) => {
            for (let j = 0; j < W; j++) c.store32(buf + j * PAGE, 0xdead_0000 + j);
            let s = 0;
            for (let j = 0; j < P; j++) s = (s + c.load32(buf + j * PAGE)) >>> 0;
            return s & 0x7f;
          }),
        );
        if (pid < 0) return 2;
        statusSum += yield u.wait(pid);
        for (let j = 0; j < PW; j++) u.store32(buf + (P - 1 - j) * PAGE + 4, it);
      }
      u.measureStop();
      let check = 0;
      for (let i = 0; i < P; i++) check = (check + u.load32(buf + i * PAGE)) >>> 0;
      u.munmap(buf, P * PAGE);
      u.report("ops", q.iterations!);
      u.report("childStatusSum", statusSum);
      u.report("parentChecksum", check);
      return 0;
    },
);

const execChain = define(
  "exec",
  "exec-like build of a fresh address space from an image, teardown of the old one",
  {},
  {
    iterations: p(10, 1, 100_000, "execs in a chain"),
    textPages: p(8, 1, 256, "text pages of the image"),
    dataPages: p(2, 1, 256, "data pages of the image"),
  },
  (q) => {
    const image = testImage(q.textPages!, q.dataPages!);
    const entry = function* (u: User, remaining: number): Gen {
      const l = u.layout;
      if (l === null) return 3;
      let s = 0;
      for (let i = 0; i < q.textPages!; i++)
        s = (s + u.load8(l.textStart + i * PAGE + (i % 64))) >>> 0;
      for (let i = 0; i < q.dataPages!; i++) s = (s + u.load32(l.dataStart + i * PAGE)) >>> 0;
      u.store32(l.bssStart, s);
      u.store32(STACK_TOP - 16, s);
      if (remaining > 1) {
        yield u.exec(image, entry, remaining - 1);
        return 4; // exec returns only on failure
      }
      u.measureStop();
      u.report("ops", q.iterations!);
      u.report("imageChecksum", (u.load32(l.bssStart) + u.load32(STACK_TOP - 16)) >>> 0);
      return 0;
    };
    return function* (u: User): Gen {
      u.measureStart();
      yield u.exec(image, entry, q.iterations!);
      return 5;
    };
  },
);

const mmapTouch = define(
  "mmap",
  "mmap N pages, write each once, munmap",
  {},
  {
    iterations: p(50, 1, 100_000, "mmap/munmap cycles"),
    pages: p(16, 1, 65_536, "pages per mapping"),
  },
  (q) =>
    nonBlocking((u: User) => {
      const P = q.pages!;
      let sum = 0;
      u.measureStart();
      for (let it = 0; it < q.iterations!; it++) {
        const va = u.mmap(P * PAGE);
        if (va < 0) return 1;
        for (let i = 0; i < P; i++) u.store8(va + i * PAGE + (i % 128), (i + it) & 0xff);
        const k = it % P;
        sum = (sum + u.load8(va + k * PAGE + (k % 128))) >>> 0;
        if (u.munmap(va, P * PAGE) !== P) return 2;
      }
      u.measureStop();
      u.report("ops", q.iterations!);
      u.report("checksum", sum);
      return 0;
    }),
);

const pageFaultStorm = define(
  "pagefault",
  "demand-zero write faults over a fresh mapping (one operation per fault)",
  {},
  { pages: p(256, 1, 262_144, "pages faulted in") },
  (q) =>
    nonBlocking((u: User) => {
      const P = q.pages!;
      const va = u.mmap(P * PAGE);
      if (va < 0) return 1;
      u.measureStart();
      for (let i = 0; i < P; i++) u.store32(va + i * PAGE, i * 3 + 1);
      u.measureStop();
      let check = 0;
      for (let i = 0; i < P; i++) check = (check + u.load32(va + i * PAGE)) >>> 0;
      u.munmap(va, P * PAGE);
      u.report("ops", P);
      u.report("checksum", check);
      return 0;
    }),
);

const pipePingPong = define(
  "pipe",
  "a round trip parent → child → parent through two pipes (two context switches)",
  {},
  {
    roundTrips: p(100, 1, 1_000_000, "round trips"),
    bytes: p(64, 1, 4096, "bytes per message"),
  },
  (q) =>
    function* (u: User): Gen {
      const B = q.bytes!;
      const N = q.roundTrips!;
      const down = u.pipe();
      const up = u.pipe();
      if (down < 0 || up < 0) return 1;
      const buf = u.mmap(PAGE);
      const pid = yield u.fork(function* (c: User): Gen {
        c.close(down + 1);
        c.close(up);
        for (let i = 0; i <= N; i++) {
          if ((yield c.readFd(down, buf, B)) !== B) return 3;
          const m = c.read(buf, B);
          for (let j = 0; j < B; j++) m[j] = (m[j]! + 1) & 0xff;
          c.write(buf, m);
          if ((yield c.writeFd(up + 1, buf, B)) !== B) return 4;
        }
        return 0;
      });
      if (pid < 0) return 2;
      u.close(down);
      u.close(up + 1);
      const msg = new Uint8Array(B);
      let sum = 0;
      for (let i = 0; i <= N; i++) {
        if (i === 1) u.measureStart(); // round trip 0 warms up (the child's first faults)
        for (let j = 0; j < B; j++) msg[j] = (i * 7 + j) & 0xff;
        u.write(buf, msg);
        if ((yield u.writeFd(down + 1, buf, B)) !== B) return 5;
        if ((yield u.readFd(up, buf, B)) !== B) return 6;
        sum = byteSum(u.read(buf, B), sum);
      }
      u.measureStop();
      const status = yield u.wait(pid);
      u.report("ops", N);
      u.report("checksum", sum);
      u.report("childStatus", status);
      return 0;
    },
);

const gettimeofday = define(
  "gettimeofday",
  "one clock read",
  {},
  { iterations: p(1000, 1, 10_000_000, "clock reads") },
  (q) =>
    nonBlocking((u: User) => {
      let prev = u.gettimeofday();
      let monotonic = true;
      u.measureStart();
      for (let i = 0; i < q.iterations!; i++) {
        const t = u.gettimeofday();
        if (t < prev) monotonic = false;
        prev = t;
      }
      u.measureStop();
      u.report("ops", q.iterations!);
      u.report("monotonic", monotonic);
      return 0;
    }),
);

/** How far a sleep may seem short by because of the clocksource's resolution (ns). */
const SLEEP_TOLERANCE_NS = 5_000;

const sleeps = define(
  "sleep",
  "one short sleep: timer programming, idle, timer interrupt",
  {},
  {
    iterations: p(20, 1, 1_000_000, "sleeps"),
    ns: p(50_000, 1, 1_000_000_000, "nanoseconds per sleep"),
  },
  (q) =>
    function* (u: User): Gen {
      let short = 0;
      u.measureStart();
      for (let i = 0; i < q.iterations!; i++) {
        const t0 = u.gettimeofday();
        yield u.sleep(q.ns!);
        if (u.gettimeofday() - t0 + SLEEP_TOLERANCE_NS < q.ns!) short++;
      }
      u.measureStop();
      u.report("ops", q.iterations!);
      u.report("shortSleeps", short);
      return 0;
    },
);

const netRr = define(
  "net-rr",
  "an ICMP echo request to the host and its reply",
  { net: true },
  {
    iterations: p(20, 1, 1_000_000, "request/response pairs"),
    bytes: p(56, 0, 1472, "payload bytes"),
  },
  (q) =>
    function* (u: User): Gen {
      const B = q.bytes!;
      const buf = u.mmap(PAGE);
      const msg = new Uint8Array(B);
      let received = 0;
      let sum = 0;
      let mismatches = 0;
      // A first echo resolves the host's MAC (ARP) and faults the buffer in.
      if ((yield u.ping(buf, B)) !== B) return 2;
      u.measureStart();
      for (let i = 0; i < q.iterations!; i++) {
        for (let j = 0; j < B; j++) msg[j] = (i + j * 3) & 0xff;
        u.write(buf, msg);
        const n = yield u.ping(buf, B);
        if (n < 0) return 1;
        received += n;
        const back = u.read(buf, n);
        for (let j = 0; j < n; j++) if (back[j] !== msg[j]) mismatches++;
        sum = byteSum(back, sum);
      }
      u.measureStop();
      u.report("ops", q.iterations!);
      u.report("bytesReceived", received);
      u.report("checksum", sum);
      u.report("mismatches", mismatches);
      return 0;
    },
);

/** UDP port of the host's sink (the `HostResponder` counts datagrams to any port). */
export const SINK_PORT = 9;

const netStream = define(
  "net-stream",
  "one 1514-byte UDP frame to the host's sink (sent in batches: sendmmsg)",
  { net: true },
  {
    frames: p(256, 1, 10_000_000, "frames"),
    batch: p(32, 1, 4096, "frames per system call"),
    bytes: p(1472, 1, 1472, "UDP payload bytes (1472 = a 1514-byte frame)"),
  },
  (q) =>
    function* (u: User): Gen {
      const buf = u.mmap(PAGE);
      const msg = new Uint8Array(q.bytes!);
      for (let j = 0; j < msg.length; j++) msg[j] = (j * 5) & 0xff;
      u.write(buf, msg);
      if ((yield u.ping(buf, 8)) !== 8) return 3; // ARP, and the buffer faulted in
      u.write(buf, msg);
      let sent = 0;
      u.measureStart();
      while (sent < q.frames!) {
        const n = yield u.sendto(SINK_PORT, buf, q.bytes!, Math.min(q.batch!, q.frames! - sent));
        if (n <= 0) return 1;
        sent += n;
      }
      u.measureStop();
      // An echo round trip after the stream: every frame before it has left the NIC.
      if ((yield u.ping(buf, 8)) !== 8) return 2;
      u.report("ops", sent);
      u.report("framesSent", sent);
      u.report("bytesSent", sent * q.bytes!);
      return 0;
    },
);

const diskRand = define(
  "disk-rand",
  "one 4 KiB read or write at a random 4 KiB-aligned place (half each)",
  { blk: true },
  {
    requests: p(64, 1, 1_000_000, "requests"),
    spanSectors: p(4096, 8, 1 << 24, "sectors the requests fall in"),
    seed: p(1, 1, 0xffff_ffff, "seed of the sector sequence"),
  },
  (q) =>
    function* (u: User): Gen {
      const rand = xorshift(q.seed!);
      const buf = u.mmap(PAGE);
      const data = new Uint8Array(PAGE);
      let sum = 0;
      let reads = 0;
      let writes = 0;
      u.write(buf, data); // fault the buffer in before measuring
      u.measureStart();
      for (let i = 0; i < q.requests!; i++) {
        const r = rand();
        const sector = (r % Math.floor(q.spanSectors! / 8)) * 8;
        if ((r >>> 16) & 1) {
          for (let j = 0; j < PAGE; j += 64) data[j] = (i + j) & 0xff;
          u.write(buf, data);
          if ((yield u.blkWrite(sector, buf, PAGE)) !== 0) return 1;
          writes++;
        } else {
          if ((yield u.blkRead(sector, buf, PAGE)) !== 0) return 2;
          sum = byteSum(u.read(buf, PAGE), sum);
          reads++;
        }
      }
      u.measureStop();
      u.report("ops", q.requests!);
      u.report("checksum", sum);
      u.report("reads", reads);
      u.report("writes", writes);
      return 0;
    },
);

const diskSeq = define(
  "disk-seq",
  "one 64 KiB block written sequentially; then a flush and everything read back",
  { blk: true },
  { blocks: p(16, 1, 100_000, "64 KiB blocks") },
  (q) =>
    function* (u: User): Gen {
      const BLOCK = 64 * 1024;
      const buf = u.mmap(BLOCK);
      const data = new Uint8Array(BLOCK);
      let written = 0;
      u.write(buf, data); // fault the buffer in before measuring
      u.measureStart();
      for (let b = 0; b < q.blocks!; b++) {
        for (let j = 0; j < BLOCK; j += 256) data[j] = (b * 13 + j) & 0xff;
        u.write(buf, data);
        if ((yield u.blkWrite(b * 128, buf, BLOCK)) !== 0) return 1;
        written = byteSum(data, written);
      }
      if ((yield u.blkFlush()) !== 0) return 2;
      let read = 0;
      for (let b = 0; b < q.blocks!; b++) {
        if ((yield u.blkRead(b * 128, buf, BLOCK)) !== 0) return 3;
        read = byteSum(u.read(buf, BLOCK), read);
      }
      u.measureStop();
      u.report("ops", q.blocks!);
      u.report("checksum", read);
      u.report("verified", read === written);
      return 0;
    },
);

/** Every workload, in the order of the list. */
export const WORKLOADS: readonly Workload[] = [
  forkExit,
  execChain,
  mmapTouch,
  pageFaultStorm,
  pipePingPong,
  gettimeofday,
  sleeps,
  netRr,
  netStream,
  diskRand,
  diskSeq,
];

/** The workload names. */
export const WORKLOAD_NAMES: readonly string[] = WORKLOADS.map((w) => w.name);

/**
 * Looks a workload up.
 *
 * @throws GuestKernelError `UNKNOWN_WORKLOAD`
 */
export function findWorkload(name: string): Workload {
  const w = WORKLOADS.find((x) => x.name === name);
  if (w === undefined) {
    throw new GuestKernelError(
      GuestKernelErrorCode.UNKNOWN_WORKLOAD,
      `unknown workload "${name}"; known: ${WORKLOAD_NAMES.join(", ")}`,
    );
  }
  return w;
}

/**
 * Checks that a workload exists, that its parameters are in range and that the devices it
 * needs are there (the host checks before a run, the guest kernel again).
 *
 * @param configName - the configuration's name (for the message)
 * @param hasNet - the configuration has a NIC
 * @param hasBlk - the configuration has a disk
 * @returns the workload and its resolved parameters
 * @throws GuestKernelError `UNKNOWN_WORKLOAD`, `BAD_PARAMS`, `MISSING_DEVICE`
 */
export function checkWorkload(
  name: string,
  params: WorkloadParams,
  configName: string,
  hasNet: boolean,
  hasBlk: boolean,
): { workload: Workload; params: Record<string, number> } {
  const workload = findWorkload(name);
  const resolved = workload.resolve(params);
  if (workload.needs.net && !hasNet) {
    throw new GuestKernelError(
      GuestKernelErrorCode.MISSING_DEVICE,
      `workload "${name}" needs a NIC; configuration "${configName}" has none`,
    );
  }
  if (workload.needs.blk && !hasBlk) {
    throw new GuestKernelError(
      GuestKernelErrorCode.MISSING_DEVICE,
      `workload "${name}" needs a disk; configuration "${configName}" has no disk (there is no emulated disk yet, so full emulation has none: only virtio-blk exists, as in "hw-assist+pv-io" and "full-pv")`,
    );
  }
  return { workload, params: resolved };
}
