import { Writable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BAR_DELAY_SECONDS, startProgress } from "../src/progress.js";

/** A terminal-like stream that records what is written to it. */
function fakeTty(): NodeJS.WriteStream & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  }) as unknown as NodeJS.WriteStream & { text: () => string };
  Object.assign(w, { isTTY: true, columns: 120, rows: 40, text: () => chunks.join("") });
  return w;
}

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe("progress", () => {
  it("without a terminal: log lines only, no bar", () => {
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    const err = fakeTty();
    const p = startProgress("nic-compare", 10, false, err);
    p.log("a line");
    p.progress(1, 2);
    p.stop();
    expect(log).toHaveBeenCalledWith("a line");
    expect(err.text()).toBe("");
  });

  it("on a terminal: a bar after the delay, log lines above it, removed at the end", () => {
    vi.useFakeTimers({
      toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "performance", "Date"],
    });
    const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    vi.spyOn(console, "log").mockImplementation(() => {});
    const err = fakeTty();
    const p = startProgress("split-queue", 80, true, err);
    p.log("first line");
    expect(err.text()).toBe(""); // too early for a bar
    vi.advanceTimersByTime(BAR_DELAY_SECONDS * 1000 + 300);
    expect(err.text()).toContain("split-queue");
    expect(err.text()).toContain("(estimate)"); // no steps reported yet: time against the last run
    p.progress(3, 12);
    vi.advanceTimersByTime(500); // cli-progress redraws at most every 2 × 200 ms
    expect(err.text()).toContain("25% | ");
    p.log("second line");
    expect(out).toHaveBeenCalledWith("second line\n");
    expect(err.text()).toContain("\r\x1b[2K");
    p.stop();
    const after = err.text().length;
    vi.advanceTimersByTime(5000);
    expect(err.text().length).toBe(after); // nothing redrawn once stopped
  });
});
