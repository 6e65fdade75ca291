/**
 * A small typed event emitter for devices and drivers, in place of Node's `EventEmitter`
 * (and of the `events` polyfill a browser bundle would otherwise carry). It implements
 * the `typed-emitter` interface, so `device.on("link", (up) => …)` is checked against the
 * device's event map.
 *
 * @module
 */

// Types only: tsup inlines these declarations into the published .d.ts (see the
// `dtsResolve` option in tsup.config.ts), so consumers need neither `typed-emitter` nor
// its default export, which strict `node16` resolution cannot use as a type.
import type TypedEventEmitter from "typed-emitter";
import type { EventMap as TypedEmitterEventMap } from "typed-emitter";

/**
 * The shape of an event map: event names to listener signatures, e.g.
 * `{ link: (up: boolean) => void }`. The same as `typed-emitter`'s `EventMap`.
 */
export type EventMap = TypedEmitterEventMap;

/**
 * The `typed-emitter` interface: Node's `EventEmitter` API with event names and listener
 * arguments taken from `Events`. Every pvkit device and driver implements it through
 * {@link Emitter}; annotate with it to accept any emitter of those events.
 *
 * @typeParam Events - the event map
 */
export type TypedEmitter<Events extends EventMap> = TypedEventEmitter<Events>;

/** A listener as stored: any function (the event map types it at the API). */
type AnyListener = (...args: unknown[]) => void;

/** What {@link Emitter.once} stores: a wrapper that remembers the listener it wraps. */
interface OnceWrapper {
  (...args: unknown[]): void;
  /** The listener passed to `once`. */
  readonly listener: AnyListener;
}

/** Every wrapper {@link Emitter.once} made (a listener's own `listener` property is not one). */
const onceWrappers = new WeakSet<AnyListener>();

/** The function `on`/`once` was given for a stored listener. */
function unwrap(l: AnyListener): AnyListener {
  return onceWrappers.has(l) ? (l as OnceWrapper).listener : l;
}

/** Node's default for {@link Emitter.getMaxListeners}. */
const DEFAULT_MAX_LISTENERS = 10;

function checkListener(listener: unknown): asserts listener is AnyListener {
  if (typeof listener !== "function") {
    throw new TypeError(`The "listener" argument must be a function, got ${typeof listener}`);
  }
}

/**
 * A typed event emitter with the semantics of Node's `EventEmitter` for everything the
 * `typed-emitter` interface covers:
 *
 * - listeners run synchronously, in the order they were added (`prepend*` puts one
 *   first), with `this` set to the emitter;
 * - `emit` calls the listeners registered when it starts: a listener added or removed
 *   during an emit takes effect from the next emit on;
 * - a `once` listener is removed before it runs, and runs at most once even when the
 *   event is emitted again from inside a listener;
 * - `off`/`removeListener` remove the most recently added registration of that function
 *   (also one added with `once`);
 * - an exception thrown by a listener propagates out of `emit`, and the listeners after it
 *   do not run for that emit; the emitter stays usable.
 *
 * Differences from Node: no `newListener`/`removeListener` meta-events, no special
 * `"error"` event (emitting `"error"` without listeners returns `false` rather than
 * throwing), and no leak warning (`setMaxListeners` is kept for source compatibility).
 *
 * Adding and removing listeners copies the listener list, so `emit` allocates nothing
 * beyond its arguments; check {@link listenerCount} first to skip building costly
 * arguments nobody listens to.
 *
 * @typeParam Events - the event map: names to listener signatures
 *
 * @example
 * ```ts
 * type DoorEvents = { opened: (by: string) => void; closed: () => void };
 * class Door extends Emitter<DoorEvents> {
 *   open(by: string): void {
 *     this.emit("opened", by);
 *   }
 * }
 * const door = new Door();
 * door.on("opened", (by) => console.log(`opened by ${by}`));
 * ```
 */
export class Emitter<Events extends EventMap> implements TypedEmitter<Events> {
  // Keyed by PropertyKey, not `keyof Events`, so that the private state does not make
  // Emitter<A & B> unassignable to Emitter<A> (a device to its base class).
  #listeners = new Map<PropertyKey, readonly AnyListener[]>();
  #maxListeners = DEFAULT_MAX_LISTENERS;

  #add(event: PropertyKey, listener: AnyListener, prepend: boolean): this {
    checkListener(listener);
    const list = this.#listeners.get(event);
    if (list === undefined) this.#listeners.set(event, [listener]);
    else this.#listeners.set(event, prepend ? [listener, ...list] : [...list, listener]);
    return this;
  }

  #remove(event: PropertyKey, listener: AnyListener): void {
    const list = this.#listeners.get(event);
    if (list === undefined) return;
    for (let i = list.length - 1; i >= 0; i--) {
      const l = list[i] as AnyListener;
      if (l === listener || unwrap(l) === listener) {
        if (list.length === 1) this.#listeners.delete(event);
        else this.#listeners.set(event, [...list.slice(0, i), ...list.slice(i + 1)]);
        return;
      }
    }
  }

  #wrapOnce(event: PropertyKey, listener: AnyListener): OnceWrapper {
    checkListener(listener);
    let fired = false;
    const emitter = this;
    const wrapper = Object.assign(
      function (this: unknown, ...args: unknown[]): void {
        if (fired) return;
        fired = true;
        emitter.#remove(event, wrapper);
        listener.apply(this, args);
      },
      { listener },
    );
    onceWrappers.add(wrapper);
    return wrapper;
  }

  /**
   * Adds `listener` to the end of the listeners of `event`. The same function may be
   * added more than once; it then runs once per registration.
   *
   * @returns this emitter, for chaining
   */
  on<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.#add(event, listener as AnyListener, false);
  }

  /** The same as {@link on}. */
  addListener<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.#add(event, listener as AnyListener, false);
  }

  /** Adds `listener` to the start of the listeners of `event`. */
  prependListener<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.#add(event, listener as AnyListener, true);
  }

  /** Adds a listener that is removed the first time `event` is emitted, then runs. */
  once<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.#add(event, this.#wrapOnce(event, listener as AnyListener), false);
  }

  /** {@link once}, at the start of the listeners of `event`. */
  prependOnceListener<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.#add(event, this.#wrapOnce(event, listener as AnyListener), true);
  }

  /**
   * Removes the most recently added registration of `listener` for `event` (including one
   * added with {@link once}); does nothing when it is not registered.
   */
  removeListener<E extends keyof Events>(event: E, listener: Events[E]): this {
    checkListener(listener);
    this.#remove(event, listener);
    return this;
  }

  /** The same as {@link removeListener}. */
  off<E extends keyof Events>(event: E, listener: Events[E]): this {
    return this.removeListener(event, listener);
  }

  /** Removes every listener of `event`, or of every event when `event` is omitted. */
  removeAllListeners<E extends keyof Events>(event?: E): this {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
    return this;
  }

  /**
   * Calls every listener of `event` with `args`, in order (see the class notes on
   * listeners added or removed meanwhile, and on exceptions).
   *
   * @returns whether `event` had listeners
   */
  emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): boolean {
    const list = this.#listeners.get(event);
    if (list === undefined) return false;
    // `list` is never mutated (add/remove replace it), so this is the snapshot.
    for (let i = 0; i < list.length; i++) (list[i] as AnyListener).apply(this, args);
    return true;
  }

  /** The number of listeners of `event`. */
  listenerCount<E extends keyof Events>(event: E): number {
    return this.#listeners.get(event)?.length ?? 0;
  }

  /** A copy of the listeners of `event`, as passed to `on`/`once`. */
  listeners<E extends keyof Events>(event: E): Events[E][] {
    const list = this.#listeners.get(event) ?? [];
    return list.map(unwrap) as Events[E][];
  }

  /** A copy of the listeners of `event`, with `once` listeners as their wrappers. */
  rawListeners<E extends keyof Events>(event: E): Events[E][] {
    return [...(this.#listeners.get(event) ?? [])] as Events[E][];
  }

  /** The events that have listeners, in the order their first listener was added. */
  eventNames(): (keyof Events | string | symbol)[] {
    return [...this.#listeners.keys()];
  }

  /** The value last set by {@link setMaxListeners} (default 10); it has no other effect. */
  getMaxListeners(): number {
    return this.#maxListeners;
  }

  /**
   * Kept for source compatibility with Node's `EventEmitter`: stores `n` for
   * {@link getMaxListeners}; this emitter never warns about listener counts.
   *
   * @throws RangeError when `n` is negative or NaN
   */
  setMaxListeners(n: number): this {
    if (typeof n !== "number" || n < 0 || Number.isNaN(n)) {
      throw new RangeError(`The max listeners must be a non-negative number, got ${n}`);
    }
    this.#maxListeners = n;
    return this;
  }
}
