/**
 * The runner's progress bar (cli-progress), one per suite, on a terminal only: it appears
 * once a suite has run for a second, shows the suite's own progress when the suite
 * reports it (`SuiteOptions.progress`) and otherwise an estimate from the suite's
 * previous run time, keeps the suite's log lines scrolling above it, and is removed when
 * the suite ends. When stdout or stderr is not a terminal, or `CI` is set, there is no
 * bar and log lines are printed as they come (CI logs stay clean).
 *
 * @module
 */

import cliProgress from "cli-progress";

/** What the runner hands a suite for one run. */
export interface SuiteProgress {
  /** Prints a log line (above the bar, if one is shown). */
  log(line: string): void;
  /** The suite's own progress: `done` of `total` steps. */
  progress(done: number, total: number): void;
  /** Removes the bar. */
  stop(): void;
}

/** Seconds a suite runs before its bar appears. */
export const BAR_DELAY_SECONDS = 1;

/** Whether bars are drawn in this process (both streams are terminals and not in CI). */
export function progressEnabled(): boolean {
  return Boolean(process.stdout.isTTY && process.stderr.isTTY && !process.env.CI);
}

/** Log lines only: what a run gets when bars are off. */
function plain(): SuiteProgress {
  return { log: (line) => console.log(line), progress: () => {}, stop: () => {} };
}

/**
 * Starts the progress display of one suite.
 *
 * @param suite - the suite's name
 * @param expectedSeconds - its previous run time, for the estimate (none: 30 s)
 * @param enabled - draw a bar (default {@link progressEnabled})
 * @param err - where the bar is drawn (default stderr; log lines go to stdout)
 */
export function startProgress(
  suite: string,
  expectedSeconds: number | undefined,
  enabled = progressEnabled(),
  err: NodeJS.WriteStream = process.stderr,
): SuiteProgress {
  if (!enabled) return plain();
  const t0 = performance.now();
  const estimate = Math.max(1, expectedSeconds ?? 30);
  let bar: cliProgress.SingleBar | null = null;
  let steps: { done: number; total: number } | null = null;
  let status = "";
  let stopped = false;

  const elapsed = (): number => (performance.now() - t0) / 1000;
  const value = (): { value: number; total: number } =>
    steps !== null
      ? { value: steps.done, total: Math.max(1, steps.total) }
      : // Time-based: tenths of a second against the previous run's time, never full before the end.
        { value: Math.min(Math.round(elapsed() * 10), estimate * 10 - 1), total: estimate * 10 };
  const payload = (): Record<string, string> => ({
    suite: suite.padEnd(14),
    status: status.length > 70 ? `${status.slice(0, 69)}…` : status,
    kind: steps !== null ? "" : " (estimate)",
    elapsed: `${Math.round(elapsed())} s`,
  });
  const ensure = (): void => {
    if (bar !== null || stopped || elapsed() < BAR_DELAY_SECONDS) return;
    bar = new cliProgress.SingleBar(
      {
        format: "{suite} {bar} {percentage}%{kind} | {elapsed} | {status}",
        stream: err,
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        linewrap: false,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    const v = value();
    bar.start(v.total, v.value, payload());
  };
  const refresh = (): void => {
    ensure();
    if (bar === null) return;
    const v = value();
    bar.setTotal(v.total);
    bar.update(v.value, payload());
  };
  const timer = setInterval(refresh, 250);
  timer.unref();
  return {
    log(line) {
      status = line.trim();
      if (bar === null) {
        console.log(line);
        ensure();
        return;
      }
      // Clear the bar's line, print the log line, then draw the bar again below it (and
      // save that position: cli-progress restores the cursor to it when it stops).
      err.write("\r\x1b[2K");
      process.stdout.write(`${line}\n`);
      err.write("\x1b7");
      refresh();
      bar.render();
    },
    progress(done, total) {
      steps = { done, total };
      refresh();
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      if (bar !== null) {
        err.write("\x1b7");
        bar.stop();
        bar = null;
      }
    },
  };
}
