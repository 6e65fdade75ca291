/**
 * A deterministic pseudo-random generator (xorshift32) for tests: the same seed gives the
 * same sequence on every run and machine.
 *
 * @param seed - any integer (0 is replaced by 1)
 * @returns a function giving the next unsigned 32-bit value
 */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}
