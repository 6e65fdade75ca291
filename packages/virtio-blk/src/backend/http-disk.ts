/**
 * `HttpDisk`: a read-only disk over an image served by HTTP, read with range requests
 * (RFC 9110 §14). Works wherever a global `fetch` exists (browsers, Node ≥ 18, Deno,
 * workers); it imports nothing from Node.
 *
 * The image is split in fixed-size chunks fetched on demand (`Range: bytes=a-b`) and kept
 * in an LRU cache bounded in bytes; concurrent reads of the same chunk share one request.
 * Every answer is checked before a byte reaches the guest:
 *
 * - the status must be `206 Partial Content` (§15.3.7); a `200` to a ranged request means
 *   the server ignores `Range` (§14.2 allows it) or, with `If-Range` sent, that the file
 *   changed: either is a permanent error, never data;
 * - `Content-Range` (§14.4) must be exactly the range asked for, over the size learned
 *   at open;
 * - the validator pinned at open (a strong `ETag`, else `Last-Modified`, §8.8) is sent as
 *   `If-Range` (§13.1.5) and compared with each answer's;
 * - the body must hold exactly the announced number of bytes.
 *
 * Transient failures (connection refused or dropped mid-body, timeouts, 408/429/5xx, a
 * short body) are retried with exponential backoff up to a cap; after the last try the
 * read fails with `EIO`, which the device answers with `VIRTIO_BLK_S_IOERR` (§5.2.6). A
 * changed file or a server ignoring `Range` fails every later read too (the disk is
 * poisoned: mixing two versions of an image corrupts the guest's file system).
 * {@link HttpDisk.lastError} says what went wrong, with a code from
 * {@link HttpDiskErrorCode}.
 *
 * Writes are refused with `EROFS` (the device then offers `VIRTIO_BLK_F_RO`); stack an
 * `OverlayDisk` on it for a writable disk.
 *
 * In a browser, a cross-origin image needs CORS headers that let the page send `Range`
 * and `If-Range` and read `Content-Range` and `ETag`
 * (`Access-Control-Expose-Headers: Content-Range, ETag, Last-Modified`).
 *
 * @module
 */

import { describeValue, expectArgument, expectOptions } from "@pvkit/platform";
import type { BlockBackend, BlockResult } from "./backend.js";
import { iovLength } from "./backend.js";

/** Why an {@link HttpDisk} request failed. */
export const HttpDiskErrorCode = {
  /** A ranged GET was answered `200` with the whole file: the server ignores `Range` (RFC 9110 §14.2). Permanent. */
  RANGE_IGNORED: "RANGE_IGNORED",
  /** The file changed since it was opened (validator or size differ; RFC 9110 §13.1.5). Permanent. */
  CHANGED: "CHANGED",
  /** `Content-Range` missing, unparsable, or not the range asked for (RFC 9110 §14.4). */
  BAD_CONTENT_RANGE: "BAD_CONTENT_RANGE",
  /** The body held fewer or more bytes than `Content-Range` announced. Retried. */
  SHORT_BODY: "SHORT_BODY",
  /** An unexpected HTTP status (408, 429 and 5xx are retried; others are not). */
  HTTP_STATUS: "HTTP_STATUS",
  /** `fetch` failed: connection refused, reset or dropped mid-body. Retried. */
  NETWORK: "NETWORK",
  /** No complete answer within `timeoutMs`. Retried. */
  TIMEOUT: "TIMEOUT",
  /** The disk was closed. */
  CLOSED: "CLOSED",
} as const;

/** A value of {@link HttpDiskErrorCode}. */
export type HttpDiskErrorCode = (typeof HttpDiskErrorCode)[keyof typeof HttpDiskErrorCode];

/** What went wrong talking to the server. */
export class HttpDiskError extends Error {
  override readonly name = "HttpDiskError";

  /**
   * @param code - the kind of failure
   * @param message - what happened, with the URL, range and status
   * @param retryable - whether another try may succeed
   * @param status - the HTTP status, when there was an answer
   */
  constructor(
    readonly code: HttpDiskErrorCode,
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** The `fetch` an {@link HttpDisk} uses (the global one by default). */
export type HttpFetch = (input: string, init: RequestInit) => Promise<Response>;

/** Options of {@link HttpDisk.open}. */
export interface HttpDiskOptions {
  /** Bytes per fetched chunk: a power of two from 512 to 64 MiB (default 256 KiB). */
  readonly chunkSize?: number;
  /** Most bytes of chunks kept in the LRU cache (default 64 MiB; 0 caches nothing). */
  readonly cacheBytes?: number;
  /** Further tries after a transient failure (default 4). */
  readonly retries?: number;
  /** Wait before the first retry, doubled for each next one (default 100 ms). */
  readonly retryDelayMs?: number;
  /** Longest wait between tries (default 5000 ms). */
  readonly maxRetryDelayMs?: number;
  /** Time one try may take, answer and body included (default 30000 ms). */
  readonly timeoutMs?: number;
  /** Extra request headers (e.g. `Authorization`). */
  readonly headers?: Readonly<Record<string, string>>;
  /** The `fetch` to use (default `globalThis.fetch`). */
  readonly fetch?: HttpFetch;
}

/** Counters of an {@link HttpDisk}. */
export interface HttpDiskStats {
  /** HTTP requests sent (tries included). */
  requests: number;
  /** Body bytes received and accepted. */
  bytesFetched: number;
  /** Chunk lookups served from the cache. */
  hits: number;
  /** Chunk lookups that started a fetch. */
  misses: number;
  /** Chunk lookups that joined a fetch already in flight. */
  merged: number;
  /** Tries repeated after a transient failure. */
  retries: number;
  /** Chunks dropped from the cache to stay within `cacheBytes`. */
  evictions: number;
}

const CONTENT_RANGE = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i;
const UNSATISFIED_RANGE = /^\s*bytes\s+\*\/(\d+)\s*$/i;
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** What was learned about the file at open. */
interface Pinned {
  readonly size: number;
  readonly etag: string | null;
  readonly lastModified: string | null;
}

const isCount = (max: number) => (v: unknown) =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= max;

/** A read-only disk over an HTTP(S) URL, read in cached chunks with range requests. */
export class HttpDisk implements BlockBackend {
  readonly readOnly = true;
  /** The image's size rounded down to a multiple of 512 (a tail shorter than a sector is not visible). */
  readonly byteLength: number;
  /** The image's size in bytes as the server announced it. */
  readonly fileSize: number;
  /** The strong `ETag` pinned at open, if the server sent one. */
  readonly etag: string | null;
  /** `Last-Modified` pinned at open, if the server sent one. */
  readonly lastModified: string | null;
  /** Chunk size in bytes. */
  readonly chunkSize: number;
  /** Cache capacity in bytes. */
  readonly cacheBytes: number;
  /** Counters. */
  readonly stats: HttpDiskStats = {
    requests: 0,
    bytesFetched: 0,
    hits: 0,
    misses: 0,
    merged: 0,
    retries: 0,
    evictions: 0,
  };
  /** The most recent failure (kept after later successes), or `undefined`. */
  lastError: HttpDiskError | undefined;
  /** The permanent failure that stops every read, or `undefined` while the disk works. */
  failed: HttpDiskError | undefined;

  private readonly cache = new Map<number, Uint8Array>();
  private cachedBytes = 0;
  private readonly inFlight = new Map<number, Promise<Uint8Array>>();
  private readonly aborts = new Set<AbortController>();
  private readonly sleepers = new Set<() => void>();
  private closed = false;
  private readonly ifRange: string | null;

  private constructor(
    /** The image's URL. */
    readonly url: string,
    private readonly options: Required<Omit<HttpDiskOptions, "headers">> & {
      headers: Readonly<Record<string, string>>;
    },
    pinned: Pinned,
  ) {
    this.chunkSize = options.chunkSize;
    this.cacheBytes = options.cacheBytes;
    this.fileSize = pinned.size;
    this.byteLength = pinned.size - (pinned.size % 512);
    this.etag = pinned.etag;
    this.lastModified = pinned.lastModified;
    this.ifRange = pinned.etag ?? pinned.lastModified;
  }

  /**
   * Opens an image: one ranged GET of the first chunk learns the size (from
   * `Content-Range`), pins the validator and proves the server honours `Range`.
   *
   * @param url - the image's absolute URL
   * @param options - chunk size, cache size, retries, timeout, headers, fetch
   * @throws TypeError on bad options; {@link HttpDiskError} when the server cannot serve
   *   the image (it ignores `Range`, answers an error status, or cannot be reached after
   *   the retries)
   */
  static async open(url: string | URL, options: HttpDiskOptions = {}): Promise<HttpDisk> {
    const where = "HttpDisk.open";
    expectArgument(where, "url", url, "a URL string or URL", (v) => {
      if (v instanceof URL) return true;
      if (typeof v !== "string") return false;
      try {
        new URL(v);
        return true;
      } catch {
        return false;
      }
    });
    expectOptions(
      where,
      options,
      "{ chunkSize?, cacheBytes?, retries?, retryDelayMs?, maxRetryDelayMs?, timeoutMs?, headers?, fetch? }",
    );
    const o = {
      chunkSize: options.chunkSize ?? 256 << 10,
      cacheBytes: options.cacheBytes ?? 64 << 20,
      retries: options.retries ?? 4,
      retryDelayMs: options.retryDelayMs ?? 100,
      maxRetryDelayMs: options.maxRetryDelayMs ?? 5000,
      timeoutMs: options.timeoutMs ?? 30_000,
      headers: options.headers ?? {},
      fetch: options.fetch ?? ((input: string, init: RequestInit) => globalThis.fetch(input, init)),
    };
    expectArgument(
      where,
      "options.chunkSize",
      o.chunkSize,
      "a power of two from 512 to 64 MiB",
      (v) =>
        isCount(64 << 20)(v) && (v as number) >= 512 && ((v as number) & ((v as number) - 1)) === 0,
    );
    expectArgument(where, "options.cacheBytes", o.cacheBytes, "a byte count ≥ 0", isCount(2 ** 48));
    expectArgument(where, "options.retries", o.retries, "an integer from 0 to 100", isCount(100));
    expectArgument(
      where,
      "options.retryDelayMs",
      o.retryDelayMs,
      "milliseconds ≥ 0",
      isCount(3_600_000),
    );
    expectArgument(
      where,
      "options.maxRetryDelayMs",
      o.maxRetryDelayMs,
      "milliseconds ≥ 0",
      isCount(3_600_000),
    );
    expectArgument(
      where,
      "options.timeoutMs",
      o.timeoutMs,
      "milliseconds > 0",
      (v) => isCount(3_600_000)(v) && (v as number) > 0,
    );
    expectArgument(where, "options.headers", o.headers, "an object of header strings", (v) => {
      if (v === null || typeof v !== "object") return false;
      return Object.values(v).every((h) => typeof h === "string");
    });
    expectArgument(
      where,
      "options.fetch",
      o.fetch,
      "a fetch function",
      (v) => typeof v === "function",
    );
    const href = url instanceof URL ? url.href : url;
    // Probe with the first chunk; the size is not known yet, so no If-Range and no size check.
    const probe = new HttpDisk(href, o, {
      size: Number.MAX_SAFE_INTEGER,
      etag: null,
      lastModified: null,
    });
    try {
      const first = await probe.withRetries(() => probe.probeOnce());
      const disk = new HttpDisk(href, o, first.pinned);
      disk.stats.requests = probe.stats.requests;
      disk.stats.retries = probe.stats.retries;
      disk.stats.bytesFetched = probe.stats.bytesFetched;
      disk.lastError = probe.lastError;
      const len = Math.min(o.chunkSize, disk.byteLength);
      if (len > 0) disk.remember(0, first.body.subarray(0, len));
      return disk;
    } finally {
      probe.closeNow();
    }
  }

  /** Bytes currently held by the cache. */
  get cachedByteCount(): number {
    return this.cachedBytes;
  }

  /** Number of chunks currently cached. */
  get cachedChunks(): number {
    return this.cache.size;
  }

  readv(offset: number, buffers: readonly Uint8Array[]): BlockResult | Promise<BlockResult> {
    if (this.closed || this.failed !== undefined) return "EIO";
    const total = iovLength(buffers);
    if (total === 0) return undefined;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + total > this.byteLength)
      return "EIO";
    const c = this.chunkSize;
    const first = Math.floor(offset / c);
    const last = Math.floor((offset + total - 1) / c);
    // The fast path: every chunk cached, copied synchronously.
    let allCached = true;
    for (let k = first; k <= last && allCached; k++) if (!this.cache.has(k)) allCached = false;
    if (allCached) {
      const chunks: Uint8Array[] = [];
      for (let k = first; k <= last; k++) chunks.push(this.lookup(k) as Uint8Array);
      this.copyOut(offset, first, chunks, buffers);
      return undefined;
    }
    const pending: (Uint8Array | Promise<Uint8Array>)[] = [];
    for (let k = first; k <= last; k++) pending.push(this.lookup(k) ?? this.fetchChunk(k));
    return Promise.all(pending).then(
      (chunks) => {
        if (this.closed) return "EIO";
        this.copyOut(offset, first, chunks, buffers);
        return undefined;
      },
      () => "EIO",
    );
  }

  writev(): BlockResult {
    return "EROFS";
  }

  /** Nothing to make durable: the disk is never written. */
  flush(): BlockResult {
    return undefined;
  }

  discard(): BlockResult {
    return "EROFS";
  }

  writeZeroes(): BlockResult {
    return "EROFS";
  }

  /** Aborts requests in flight (their reads fail with `EIO`) and drops the cache. */
  close(): void {
    this.closeNow();
  }

  private closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.aborts) a.abort();
    for (const wake of this.sleepers) wake();
    this.cache.clear();
    this.cachedBytes = 0;
  }

  /** The cached chunk `k`, refreshed as most recently used, or `undefined`. */
  private lookup(k: number): Uint8Array | undefined {
    const hit = this.cache.get(k);
    if (hit === undefined) return undefined;
    this.stats.hits++;
    this.cache.delete(k);
    this.cache.set(k, hit);
    return hit;
  }

  /** Adds chunk `k` to the cache, evicting the least recently used ones beyond the budget. */
  private remember(k: number, data: Uint8Array): void {
    if (this.closed || data.length > this.cacheBytes || this.cache.has(k)) return;
    this.cache.set(k, data);
    this.cachedBytes += data.length;
    for (const [old, bytes] of this.cache) {
      if (this.cachedBytes <= this.cacheBytes) break;
      this.cache.delete(old);
      this.cachedBytes -= bytes.length;
      this.stats.evictions++;
    }
  }

  /** Chunk `k` from the server; one request however many readers ask at once. */
  private fetchChunk(k: number): Promise<Uint8Array> {
    const running = this.inFlight.get(k);
    if (running !== undefined) {
      this.stats.merged++;
      return running;
    }
    this.stats.misses++;
    const start = k * this.chunkSize;
    const end = Math.min(start + this.chunkSize, this.byteLength);
    const p = this.withRetries(() => this.fetchRange(start, end)).then(
      (data) => {
        this.inFlight.delete(k);
        this.remember(k, data);
        return data;
      },
      (err: unknown) => {
        this.inFlight.delete(k);
        throw err;
      },
    );
    this.inFlight.set(k, p);
    return p;
  }

  /** Runs `once` until it succeeds, fails permanently, or the retries are spent. */
  private async withRetries<T>(once: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw this.closedError();
      if (this.failed !== undefined) throw this.failed;
      try {
        return await once();
      } catch (caught) {
        const err =
          caught instanceof HttpDiskError
            ? caught
            : new HttpDiskError(HttpDiskErrorCode.NETWORK, `${this.url}: ${String(caught)}`, true);
        this.lastError = err;
        if (this.closed) throw this.closedError();
        if (err.code === HttpDiskErrorCode.CHANGED || err.code === HttpDiskErrorCode.RANGE_IGNORED)
          this.failed = err;
        if (!err.retryable || attempt >= this.options.retries) throw err;
        this.stats.retries++;
        const delay = Math.min(
          this.options.retryDelayMs * 2 ** attempt,
          this.options.maxRetryDelayMs,
        );
        await this.sleep(delay);
      }
    }
  }

  private closedError(): HttpDiskError {
    return new HttpDiskError(HttpDiskErrorCode.CLOSED, `${this.url}: the disk was closed`, false);
  }

  /** Waits `ms`, or less if the disk is closed meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** One GET of `[start, end)` with the request's own timeout; the caller owns retries. */
  private async request(
    start: number,
    end: number,
    ifRange: string | null,
    body: (res: Response, signal: AbortSignal) => Promise<Uint8Array>,
  ): Promise<{ res: Response; body: Uint8Array }> {
    const abort = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.options.timeoutMs);
    this.aborts.add(abort);
    const range = `bytes ${start}-${end - 1}`;
    const failed = (what: unknown): HttpDiskError =>
      what instanceof HttpDiskError
        ? what
        : timedOut
          ? new HttpDiskError(
              HttpDiskErrorCode.TIMEOUT,
              `${this.url}: no complete answer for ${range} within ${this.options.timeoutMs} ms`,
              true,
            )
          : this.closed
            ? this.closedError()
            : new HttpDiskError(
                HttpDiskErrorCode.NETWORK,
                `${this.url}: ${range} failed: ${describeCause(what)}`,
                true,
              );
    try {
      const headers: Record<string, string> = {
        ...this.options.headers,
        Range: `bytes=${start}-${end - 1}`,
      };
      if (ifRange !== null) headers["If-Range"] = ifRange;
      this.stats.requests++;
      let res: Response;
      try {
        res = await this.options.fetch(this.url, { headers, signal: abort.signal });
      } catch (e) {
        throw failed(e);
      }
      try {
        return { res, body: await body(res, abort.signal) };
      } catch (e) {
        await res.body?.cancel().catch(() => undefined);
        throw failed(e);
      }
    } finally {
      clearTimeout(timer);
      this.aborts.delete(abort);
    }
  }

  /** The first ranged GET at open: learns size and validator, checks `Range` works. */
  private async probeOnce(): Promise<{ pinned: Pinned; body: Uint8Array }> {
    let pinned: Pinned | undefined;
    const { body } = await this.request(0, this.chunkSize, null, async (res) => {
      if (res.status === 416) {
        // Range Not Satisfiable (§15.5.17): an empty file answers `bytes */0`.
        const m = UNSATISFIED_RANGE.exec(res.headers.get("Content-Range") ?? "");
        if (m !== null && Number(m[1]) === 0) {
          pinned = { size: 0, ...validators(res) };
          return new Uint8Array(0);
        }
      }
      this.checkStatus(res, 0, this.chunkSize, null);
      const cr = this.parseContentRange(res, 0, this.chunkSize);
      if (
        cr.start !== 0 ||
        cr.end > this.chunkSize ||
        cr.end !== Math.min(this.chunkSize, cr.total)
      )
        throw this.badRange(
          res,
          0,
          this.chunkSize,
          "does not start at 0 or is not the first chunk",
        );
      pinned = { size: cr.total, ...validators(res) };
      return readExactly(res, cr.end, `${this.url}: bytes 0-${cr.end - 1}`);
    });
    this.stats.bytesFetched += body.length;
    return { pinned: pinned as Pinned, body };
  }

  /** One ranged GET of `[start, end)`, checked against what was pinned at open. */
  private async fetchRange(start: number, end: number): Promise<Uint8Array> {
    const { body } = await this.request(start, end, this.ifRange, async (res) => {
      this.checkStatus(res, start, end, this.ifRange);
      const cr = this.parseContentRange(res, start, end);
      if (cr.total !== this.fileSize)
        throw new HttpDiskError(
          HttpDiskErrorCode.CHANGED,
          `${this.url}: the file is now ${cr.total} bytes, it was ${this.fileSize} when opened (Content-Range "${res.headers.get("Content-Range")}")`,
          false,
          res.status,
        );
      if (cr.start !== start || cr.end !== end)
        throw this.badRange(res, start, end, "is not the range asked for");
      this.checkValidators(res);
      return readExactly(res, end - start, `${this.url}: bytes ${start}-${end - 1}`);
    });
    this.stats.bytesFetched += body.length;
    return body;
  }

  /** Throws unless the answer is `206`; classifies a `200` and error statuses. */
  private checkStatus(res: Response, start: number, end: number, ifRange: string | null): void {
    if (res.status === 206) return;
    const range = `bytes=${start}-${end - 1}`;
    if (res.status === 200) {
      if (ifRange !== null && this.changedValidator(res) !== null)
        throw new HttpDiskError(
          HttpDiskErrorCode.CHANGED,
          `${this.url}: the file changed since it was opened (${this.changedValidator(res)}); the server answered If-Range ${ifRange} with the whole new file`,
          false,
          200,
        );
      throw new HttpDiskError(
        HttpDiskErrorCode.RANGE_IGNORED,
        `${this.url}: the server ignores Range: it answered 200 with the whole file to "Range: ${range}"`,
        false,
        200,
      );
    }
    throw new HttpDiskError(
      HttpDiskErrorCode.HTTP_STATUS,
      `${this.url}: HTTP ${res.status} ${res.statusText} for "Range: ${range}"`,
      RETRY_STATUS.has(res.status),
      res.status,
    );
  }

  /** Parses `Content-Range: bytes a-b/total` into `[start, end)` and the total. */
  private parseContentRange(
    res: Response,
    start: number,
    end: number,
  ): { start: number; end: number; total: number } {
    const header = res.headers.get("Content-Range");
    const m = CONTENT_RANGE.exec(header ?? "");
    if (m === null || m[3] === "*")
      throw this.badRange(
        res,
        start,
        end,
        header === null
          ? "is missing (cross-origin? the server must send Access-Control-Expose-Headers: Content-Range)"
          : "is not bytes first-last/total",
      );
    const first = Number(m[1]);
    const last = Number(m[2]);
    const total = Number(m[3]);
    if (![first, last, total].every(Number.isSafeInteger) || last < first || last >= total)
      throw this.badRange(res, start, end, "is not a valid range");
    return { start: first, end: last + 1, total };
  }

  private badRange(res: Response, start: number, end: number, why: string): HttpDiskError {
    return new HttpDiskError(
      HttpDiskErrorCode.BAD_CONTENT_RANGE,
      `${this.url}: Content-Range ${JSON.stringify(res.headers.get("Content-Range"))} for "Range: bytes=${start}-${end - 1}" ${why}`,
      false,
      res.status,
    );
  }

  /** Throws CHANGED when the answer's validator differs from the pinned one. */
  private checkValidators(res: Response): void {
    const changed = this.changedValidator(res);
    if (changed !== null)
      throw new HttpDiskError(
        HttpDiskErrorCode.CHANGED,
        `${this.url}: the file changed since it was opened (${changed})`,
        false,
        res.status,
      );
  }

  /** How the answer's validator differs from the pinned one, or null (a missing one is not a difference). */
  private changedValidator(res: Response): string | null {
    const v = validators(res);
    if (this.etag !== null && v.etag !== null && v.etag !== this.etag)
      return `ETag ${v.etag}, was ${this.etag}`;
    if (
      this.etag === null &&
      this.lastModified !== null &&
      v.lastModified !== null &&
      v.lastModified !== this.lastModified
    )
      return `Last-Modified ${v.lastModified}, was ${this.lastModified}`;
    return null;
  }

  /** Copies `[offset, offset + len)` out of consecutive chunks starting at chunk `first`. */
  private copyOut(
    offset: number,
    first: number,
    chunks: readonly Uint8Array[],
    buffers: readonly Uint8Array[],
  ): void {
    const c = this.chunkSize;
    let pos = offset;
    for (const b of buffers) {
      let done = 0;
      while (done < b.length) {
        const k = Math.floor(pos / c);
        const chunk = chunks[k - first] as Uint8Array;
        const at = pos - k * c;
        const n = Math.min(b.length - done, chunk.length - at);
        b.set(chunk.subarray(at, at + n), done);
        done += n;
        pos += n;
      }
    }
  }
}

/** The answer's strong `ETag` (a weak one cannot be used in If-Range, §13.1.5) and `Last-Modified`. */
function validators(res: Response): { etag: string | null; lastModified: string | null } {
  const etag = res.headers.get("ETag");
  return {
    etag: etag !== null && !etag.startsWith("W/") ? etag : null,
    lastModified: res.headers.get("Last-Modified"),
  };
}

/** Reads a body of exactly `length` bytes into one buffer; fewer or more is SHORT_BODY. */
async function readExactly(res: Response, length: number, what: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  if (res.body === null) {
    if (length === 0) return out;
    throw new HttpDiskError(HttpDiskErrorCode.SHORT_BODY, `${what}: empty body`, true, res.status);
  }
  const reader = res.body.getReader();
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (got + value.length > length) {
      await reader.cancel().catch(() => undefined);
      throw new HttpDiskError(
        HttpDiskErrorCode.SHORT_BODY,
        `${what}: the body is longer than the ${length} bytes Content-Range announced`,
        false,
        res.status,
      );
    }
    out.set(value, got);
    got += value.length;
  }
  if (got !== length)
    throw new HttpDiskError(
      HttpDiskErrorCode.SHORT_BODY,
      `${what}: the body ended after ${got} of ${length} bytes`,
      true,
      res.status,
    );
  return out;
}

/** A readable reason from whatever `fetch` threw (undici hides the socket error in `cause`). */
function describeCause(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return describeValue(e);
}
