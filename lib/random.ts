/**
 * A small seeded random number generator, so that generated data, jitter and
 * plots repeat from run to run.
 *
 * @module
 */

import { settings } from "./config.ts";

/** A function returning uniformly distributed numbers in [0, 1). */
export type Rng = () => number;

/**
 * Creates a seeded generator (mulberry32).
 *
 * @param seed Any integer; defaults to the `seed` setting.
 * @returns A function returning numbers in [0, 1).
 * @example
 * ```ts
 * const rng = seededRandom(7);
 * rng(); // always the same first value for seed 7
 * ```
 */
export function seededRandom(seed: number = settings().seed): Rng {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random version-4 UUID drawn from `rng`, for reproducible ids.
 *
 * @example
 * ```ts
 * seededUuid(seededRandom(1)); // "…-4…-…" the same on every run
 * ```
 */
export function seededUuid(rng: Rng): string {
  const hex = Array.from({ length: 32 }, () => Math.floor(rng() * 16).toString(16));
  hex[12] = "4";
  hex[16] = ((parseInt(hex[16], 16) & 0x3) | 0x8).toString(16);
  const s = hex.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}
