/**
 * Argument checks for the constructors and factories a user calls first (`GuestMemory`,
 * `IrqLine`, device and transport options). They run once, at construction — never on a
 * hot path — and throw a `TypeError` that says what was expected and what was given.
 * A wrong argument is a host programming mistake, not guest input, so throwing is right
 * here (DESIGN.md: only guest-driven paths must never throw).
 *
 * @module
 */

const MAX_STRING = 40;
const MAX_KEYS = 6;

function article(word: string): string {
  // "an ArrayBuffer", "an Error", but "a Uint8Array" (a "you" sound): vowels except U.
  return /^[aeio]/i.test(word) ? "an" : "a";
}

/**
 * Describes a value for an argument error: `number 4096`, `string "16M"`, `undefined`,
 * `null`, `an array of 2 items`, `an object { memory, irq }`, `a Uint8Array`.
 *
 * @param value - what the caller passed
 * @returns a short description that names the type and, for primitives, the value
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  switch (typeof value) {
    case "number":
    case "boolean":
      return `${typeof value} ${String(value)}`;
    case "bigint":
      return `bigint ${String(value)}n`;
    case "string": {
      const s = value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value;
      return `string ${JSON.stringify(s)}`;
    }
    case "symbol":
      return value.toString();
    case "function":
      return `function ${value.name === "" ? "(anonymous)" : value.name}`;
    default:
      break;
  }
  if (Array.isArray(value))
    return `an array of ${value.length} item${value.length === 1 ? "" : "s"}`;
  const proto: unknown = Object.getPrototypeOf(value);
  const ctor =
    proto === null ? undefined : (proto as { constructor?: { name?: unknown } }).constructor;
  const name = typeof ctor?.name === "string" ? ctor.name : "";
  if (name === "" || name === "Object") {
    const keys = Object.keys(value as object);
    if (keys.length === 0) return "an empty object {}";
    const shown = keys.slice(0, MAX_KEYS).join(", ");
    return `an object { ${shown}${keys.length > MAX_KEYS ? ", …" : ""} }`;
  }
  return `${article(name)} ${name}`;
}

/**
 * Whether `value` is an object (or function) with every named method.
 *
 * @param value - the candidate
 * @param methods - method names it must have
 */
export function hasMethods(value: unknown, ...methods: readonly string[]): boolean {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return false;
  const v = value as Record<string, unknown>;
  for (const m of methods) if (typeof v[m] !== "function") return false;
  return true;
}

/**
 * Checks that a constructor's `options` argument is an object.
 *
 * @param where - who is checking, e.g. `"new VirtioBlkDevice"`
 * @param options - the argument
 * @param shape - the expected shape, e.g. `"{ backend, serial?, … }"`
 * @throws TypeError `"<where> expects an options object <shape>, got <value>"`
 */
export function expectOptions(where: string, options: unknown, shape: string): void {
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new TypeError(
      `${where} expects an options object ${shape}, got ${describeValue(options)}`,
    );
  }
}

/**
 * Checks one option (or argument) with a predicate.
 *
 * @param where - who is checking, e.g. `"new VirtioBlkDevice"`
 * @param name - the option's name as the caller wrote it, e.g. `"options.backend"`
 * @param value - its value
 * @param expected - what it must be, e.g. `"a BlockBackend (readv, writev, …)"`
 * @param ok - the predicate
 * @throws TypeError `"<where>: <name> must be <expected>, got <value>"`
 */
export function expectArgument(
  where: string,
  name: string,
  value: unknown,
  expected: string,
  ok: (value: unknown) => boolean,
): void {
  if (!ok(value)) {
    throw new TypeError(`${where}: ${name} must be ${expected}, got ${describeValue(value)}`);
  }
}

/** Predicate for {@link expectArgument}: a `GuestMemory` (duck-typed: `slice`, `read`, `write`, `readU32`). */
export function isGuestMemoryLike(value: unknown): boolean {
  return hasMethods(value, "slice", "read", "write", "readU32", "locate");
}

/** Predicate for {@link expectArgument}: an `IrqLine` (duck-typed: `raise`, `lower`, `onChange`). */
export function isIrqLineLike(value: unknown): boolean {
  return hasMethods(value, "raise", "lower", "onChange");
}

/** Predicate for {@link expectArgument}: a `NetBackend` (duck-typed: `attach`, `send`, `detach`). */
export function isNetBackendLike(value: unknown): boolean {
  return hasMethods(value, "attach", "send", "detach");
}
