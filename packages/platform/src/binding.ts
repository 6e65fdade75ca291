/**
 * Driver binding on the guest side: at most one driver drives a device, as in Linux's
 * driver core (`dev->driver`; a second `probe` of a bound device never happens). pvkit's
 * guest drivers (virtio-blk, virtio-net, virtio-rng, the 8139too-like RTL8139 driver)
 * bind here when they start and unbind when they are reset or closed, so a second driver
 * on the same device is refused with a message naming the one that holds it instead of
 * two drivers silently fighting over the same rings and registers.
 *
 * A device is named by a *scope* — the object the driver reaches it through, normally
 * the `Bus` — and a key within it, normally its register window (`"mmio 0xfeb00000"`),
 * so two transports probed separately at the same address still meet here. The table
 * holds its scopes weakly: dropping a `Bus` drops its bindings.
 *
 * @module
 */

/** Who drives a device, as recorded by {@link bindDriver}. */
export interface DriverBinding {
  /** The device, for messages, e.g. `"virtio-mmio device at mmio 0xfeb00000"`. */
  readonly device: string;
  /** The driver, e.g. `"VirtioBlkDriver"`. */
  readonly driver: string;
  /** How to release the device, for messages, e.g. `"call its close()"`. */
  readonly release: string;
}

const bindings = new WeakMap<object, Map<string, DriverBinding>>();

/**
 * The driver bound to device `key` in `scope`.
 *
 * @param scope - what the device is reached through (its `Bus`)
 * @param key - the device within the scope (its register window)
 * @returns the binding, or `undefined` when no driver holds the device
 */
export function boundDriver(scope: object, key: string): DriverBinding | undefined {
  return bindings.get(scope)?.get(key);
}

/**
 * The message for a refused second bind: names the device, the driver that holds it and
 * how to release it.
 *
 * @param held - the binding in place
 * @returns `"<device> is already driven by <driver>; <release> first"`
 */
export function alreadyBoundMessage(held: DriverBinding): string {
  return `${held.device} is already driven by ${held.driver}; ${held.release} first`;
}

/**
 * Binds a driver to device `key` in `scope`, unless another binding holds it.
 *
 * @param scope - what the device is reached through (its `Bus`)
 * @param key - the device within the scope (its register window)
 * @param binding - the device, the driver and how to release it
 * @returns `undefined` when bound, else the binding that holds the device (see
 *   {@link alreadyBoundMessage})
 */
export function bindDriver(
  scope: object,
  key: string,
  binding: DriverBinding,
): DriverBinding | undefined {
  let table = bindings.get(scope);
  if (table === undefined) {
    table = new Map();
    bindings.set(scope, table);
  }
  const held = table.get(key);
  if (held !== undefined) return held;
  table.set(key, binding);
  return undefined;
}

/**
 * Releases device `key` in `scope`; a no-op when nothing is bound.
 *
 * @param scope - what the device is reached through
 * @param key - the device within the scope
 * @param only - release only if this is the binding in place (a driver closing after
 *   another one took over must not unbind it); omit for a device reset, which ends any
 *   binding
 */
export function unbindDriver(scope: object, key: string, only?: DriverBinding): void {
  const table = bindings.get(scope);
  if (table === undefined) return;
  if (only !== undefined && table.get(key) !== only) return;
  table.delete(key);
}
