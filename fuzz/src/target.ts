/**
 * The contract between the fuzz runner and its targets. A target is a structure-aware
 * generator of hostile-guest cases (a fast-check arbitrary) and a function that plays one
 * case against fresh pvkit objects and checks the invariants every target shares:
 *
 * - no exception reaches the caller (the device answers with a protocol error or NEEDS_RESET);
 * - the bus's contained-fault counter stays 0;
 * - nothing outside guest memory, or outside the buffers the driver made writable, is written
 *   (canary bytes);
 * - bounded work per access (the runner's watchdog reports a case that runs too long as a hang);
 * - the device serves again after a reset;
 * - nothing acknowledged is lost (checked against a model where the target has state).
 *
 * @module
 */

import type * as fc from "fast-check";

/** How the runner counts a target's cases in its totals (issue 17 counts ring cases). */
export type FuzzCaseKind = "ring" | "register" | "hypercall" | "other";

/** A broken invariant: thrown by {@link FuzzTarget.run}, reported with the seed and case number. */
export class FuzzFinding extends Error {
  /** The invariant that broke, e.g. `"canary"`, `"escaped-exception"`, `"lost-ack"`. */
  readonly invariant: string;

  /**
   * @param invariant - short name of the invariant that broke
   * @param message - what was observed, with enough detail to debug without a replay
   */
  constructor(invariant: string, message: string) {
    super(`${invariant}: ${message}`);
    this.name = "FuzzFinding";
    this.invariant = invariant;
  }
}

/** One fuzz target: a generator of cases and the function that plays one. */
export interface FuzzTarget<C = unknown> {
  /** Short name used on the command line (`pnpm fuzz <name>`), kebab-case. */
  readonly name: string;
  /** One sentence: the surface the target drives. */
  readonly description: string;
  /** How the runner counts this target's cases. */
  readonly kind: FuzzCaseKind;
  /**
   * Share of the run's time budget relative to other targets (default 1). The ring target
   * weighs more: issue 17 counts 10⁷ ring cases per long run.
   */
  readonly weight?: number;
  /** Structure-aware generator of cases; shrinking comes from fast-check. */
  readonly arbitrary: fc.Arbitrary<C>;
  /**
   * Plays one case on fresh objects and checks every invariant. Throws {@link FuzzFinding}
   * when an invariant breaks; any other exception escaping is itself a finding.
   */
  run(testCase: C): void | Promise<void>;
}
