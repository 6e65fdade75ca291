/**
 * Test-only fuzz targets (not in the registry): one with a planted bug, one that hangs on
 * some cases — the runner's own tests find them.
 *
 * @module
 */

import * as fc from "fast-check";
import { FuzzFinding, type FuzzTarget } from "../src/target.js";

/** Fails ("model") whenever the array holds a value ≥ 900; shrinks to `[900]`. */
export const toyBroken: FuzzTarget<number[]> = {
  name: "toy-broken",
  description: "planted bug: any element ≥ 900 is a finding",
  kind: "other",
  arbitrary: fc.array(fc.nat(1000), { maxLength: 8 }),
  run(xs) {
    if (xs.some((x) => x >= 900)) throw new FuzzFinding("model", `saw ${xs.join(",")}`);
  },
};

/** Throws a plain `TypeError` on odd values: an escaped exception. */
export const toyThrows: FuzzTarget<number> = {
  name: "toy-throws",
  description: "planted bug: a TypeError escapes on odd values",
  kind: "other",
  arbitrary: fc.nat(100),
  run(x) {
    if (x % 2 === 1) throw new TypeError(`odd ${x}`);
  },
};

/** Spins forever when the value is ≥ 90 (a device loop without a bound). */
export const toyHang: FuzzTarget<number> = {
  name: "toy-hang",
  description: "planted hang: an unbounded loop on values ≥ 90",
  kind: "other",
  arbitrary: fc.nat(100),
  run(x) {
    if (x >= 90) for (;;) {}
  },
};

/** The registry of this module, for `runFuzz({ registry })`. */
export const targets: readonly FuzzTarget<never>[] = [
  toyBroken,
  toyThrows,
  toyHang,
] as unknown as readonly FuzzTarget<never>[];
