/**
 * The one way pvkit defers work to a later turn of the event loop without a clamped timer.
 *
 * `setTimeout(f, 0)` waits at least 1 ms in Node and 4 ms once nested in browsers (HTML
 * timers, "timer nesting level"), which stalls a guest whose device continues a drain that
 * way. {@link defer} uses `setImmediate` where it exists (Node, Bun) and a `MessageChannel`
 * post elsewhere (browsers, workers): both run as the next macrotask, after the emulator's
 * current slice and after I/O callbacks, never after a timer's clamp.
 *
 * @module
 */

/** A deferred task. */
export type DeferredTask = () => void;

/** Tasks waiting for the channel's message, in order (browsers only). */
let channelQueue: DeferredTask[] | null = null;
let channelPort: MessagePort | null = null;

type SetImmediate = (task: () => void) => unknown;

const immediate: SetImmediate | undefined =
  typeof (globalThis as { setImmediate?: unknown }).setImmediate === "function"
    ? (globalThis as unknown as { setImmediate: SetImmediate }).setImmediate
    : undefined;

/** Runs the oldest waiting task; one message was posted per task. */
function runNext(): void {
  const task = channelQueue?.shift();
  task?.();
}

/**
 * Runs `task` once in a later macrotask: `setImmediate` where it exists (Node), else a
 * `MessageChannel` post (browsers). Never a `setTimeout`, so the delay is one event-loop
 * turn, not the 1–4 ms timer clamp. Tasks run in the order they were deferred. An
 * exception thrown by `task` is not caught here (it reaches the host's uncaught-error
 * handler as with any macrotask).
 *
 * @param task - the work to run later
 */
export function defer(task: DeferredTask): void {
  if (immediate !== undefined) {
    immediate(task);
    return;
  }
  if (channelPort === null) {
    const channel = new MessageChannel();
    channelQueue = [];
    channel.port1.onmessage = runNext;
    channelPort = channel.port2;
  }
  channelQueue!.push(task);
  channelPort.postMessage(0);
}

/**
 * Yields to the event loop once, through {@link defer}.
 *
 * @returns a promise resolved from a fresh macrotask
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise<void>((resolve) => defer(resolve));
}
