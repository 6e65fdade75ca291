/**
 * A small HTTP server on 127.0.0.1 (port 0) serving one disk image with range requests
 * (RFC 9110 §14), for HttpDisk tests — and able to misbehave on chosen requests: drop the
 * connection mid-body, ignore `Range`, send a wrong `Content-Range`, a short body, an
 * error status, or answer late.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** How the server answers one request (undefined: correctly). */
export type Misbehaviour =
  | undefined
  | { kind: "drop" } // headers with the full Content-Length, half the body, then a reset
  | { kind: "ignore-range" } // 200 with the whole file
  | { kind: "shift-range"; by: number } // the bytes and Content-Range of another range
  | { kind: "lie-range" } // the right bytes under a wrong Content-Range
  | { kind: "short-body" } // chunked encoding, half the bytes, then a clean end
  | { kind: "status"; status: number }
  | { kind: "delay"; ms: number };

/** One request the server saw. */
export interface SeenRequest {
  readonly range: string | undefined;
  readonly ifRange: string | undefined;
  readonly status: number;
}

/** A running image server. */
export interface ImageServer {
  readonly url: string;
  /** Every request, in arrival order. */
  readonly seen: SeenRequest[];
  /** The served bytes (replace to "change the file"). */
  image: Uint8Array;
  /** The ETag sent (null: none). */
  etag: string | null;
  /** Last-Modified sent (null: none). */
  lastModified: string | null;
  /** Honour If-Range (true, as RFC 9110 §13.1.5 requires). */
  honourIfRange: boolean;
  /** Chooses a misbehaviour for request number `n` (0-based) and its range. */
  misbehave: (n: number, range: { start: number; end: number } | null) => Misbehaviour;
  close(): Promise<void>;
}

const RANGE = /^bytes=(\d+)-(\d*)$/;

/** Starts a server for `image` on 127.0.0.1 at a free port. */
export async function serveImage(image: Uint8Array): Promise<ImageServer> {
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let pending = 0; // delayed requests not yet recorded
  const state: ImageServer = {
    url: "",
    seen: [],
    image,
    etag: '"v1"',
    lastModified: "Tue, 01 Dec 2026 10:00:00 GMT",
    honourIfRange: true,
    misbehave: () => undefined,
    close: async () => {},
  };
  const parseRange = (req: IncomingMessage): { start: number; end: number } | null => {
    const m = req.headers.range === undefined ? null : RANGE.exec(req.headers.range);
    if (m === null) return null;
    const end = m[2] === "" ? state.image.length : Math.min(Number(m[2]) + 1, state.image.length);
    return { start: Number(m[1]), end };
  };
  const answer = (req: IncomingMessage, res: ServerResponse, how: Misbehaviour): void => {
    const rangeHeader = req.headers.range;
    const ifRange = req.headers["if-range"] as string | undefined;
    const img = state.image;
    const range = parseRange(req);
    const record = (status: number): void => {
      state.seen.push({ range: rangeHeader, ifRange, status });
    };
    const headers: Record<string, string> = { "Accept-Ranges": "bytes" };
    if (state.etag !== null) headers.ETag = state.etag;
    if (state.lastModified !== null) headers["Last-Modified"] = state.lastModified;
    const stale =
      ifRange !== undefined &&
      state.honourIfRange &&
      ifRange !== state.etag &&
      ifRange !== state.lastModified;
    const whole = (): void => {
      record(200);
      res.writeHead(200, { ...headers, "Content-Length": String(img.length) });
      res.end(img);
    };
    if (how?.kind === "status") {
      record(how.status);
      res.writeHead(how.status, { "Content-Length": "0" });
      res.end();
      return;
    }
    if (range === null || how?.kind === "ignore-range" || stale) {
      whole();
      return;
    }
    if (range.start >= img.length) {
      record(416);
      res.writeHead(416, { ...headers, "Content-Range": `bytes */${img.length}` });
      res.end();
      return;
    }
    let { start, end } = range;
    if (how?.kind === "shift-range") {
      start += how.by;
      end += how.by;
    }
    const body = img.subarray(start, end);
    const contentRange =
      how?.kind === "lie-range"
        ? `bytes ${start + 512}-${end - 1 + 512}/${img.length}`
        : `bytes ${start}-${end - 1}/${img.length}`;
    record(206);
    if (how?.kind === "short-body") {
      res.writeHead(206, { ...headers, "Content-Range": contentRange }); // chunked, no length
      res.end(body.subarray(0, body.length >> 1));
      return;
    }
    res.writeHead(206, {
      ...headers,
      "Content-Range": contentRange,
      "Content-Length": String(body.length),
    });
    if (how?.kind === "drop") {
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
      return;
    }
    res.end(body);
  };
  const server = createServer((req, res) => {
    // Asked once per request, when it arrives.
    const how = state.misbehave(state.seen.length + pending, parseRange(req));
    if (how?.kind === "delay") {
      pending++;
      // Answer later (the client's timeout fires first); the timer dies with close().
      const t = setTimeout(() => {
        timers.delete(t);
        pending--;
        if (!res.destroyed) answer(req, res, undefined);
        else state.seen.push({ range: req.headers.range, ifRange: undefined, status: 0 });
      }, how.ms);
      timers.add(t);
      return;
    }
    answer(req, res, how);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(state, {
    url: `http://127.0.0.1:${port}/disk.img`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  });
  return state;
}
