/** Shared by the fuzz target tests. */
import { FuzzFinding } from "../src/target.js";

/** Runs `f` (a target's `run`, sync or async) and returns the finding it threw, if any. */
export async function findingOf(f: () => void | Promise<void>): Promise<FuzzFinding | null> {
  try {
    await f();
    return null;
  } catch (e) {
    if (e instanceof FuzzFinding) return e;
    throw e;
  }
}
