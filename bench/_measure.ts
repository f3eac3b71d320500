/**
 * Measurement helpers of the bench: repeated and interleaved timings,
 * medians and percentiles, goal checks, and the result rows every section
 * returns. Nothing here touches a database.
 *
 * @module
 */

/** How a figure compares with its goal. */
export type RowStatus = "met" | "missed" | "info" | "skipped" | "error";

/** One line of the final table (and of the JSON). */
export interface Row {
  /** Section id: bringup, client, proxy, kit, fdw. */
  section: string;
  /** What is measured, e.g. "6-node cluster / bare initdb+start". */
  figure: string;
  /** The goal in words, or "" for figures that only inform. */
  goal: string;
  /** The measured value in words, e.g. "1.84 s vs 0.41 s". */
  measured: string;
  /** The ratio the goal is about (or the main ratio), null when there is none. */
  ratio: number | null;
  /** met, missed, info (no goal), skipped (optional piece missing), error (not measured). */
  status: RowStatus;
  /** Why a row is skipped or failed, or a short remark. */
  note?: string;
}

/** Repetition counts for one measurement. */
export interface Repeat {
  /** Runs thrown away first (cold caches, first connections). @default 1 */
  warmup?: number;
  /** Runs kept. @default 5 */
  runs?: number;
}

/**
 * Runs several measurements interleaved, rotating which goes first on each
 * round (A B C, B C A, C A B, ...), so that a busy moment of the machine
 * hits all alike. Each function returns its own measurement (a duration in
 * ms, a rate...). Returns the kept values of each, by key.
 *
 * @example
 * ```ts
 * const { bare, cluster } = await interleave({
 *   bare: () => timed(startBare),
 *   cluster: () => timed(startCluster6),
 * }, { warmup: 1, runs: 5 });
 * ratio(median(cluster), median(bare));
 * ```
 */
export async function interleave<K extends string>(
  measurements: Record<K, () => Promise<number>>,
  repeat: Repeat = {},
): Promise<Record<K, number[]>> {
  const { warmup = 1, runs = 5 } = repeat;
  const keys = Object.keys(measurements) as K[];
  const result = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let i = 0; i < warmup + runs; i++) {
    for (let j = 0; j < keys.length; j++) {
      const key = keys[(i + j) % keys.length];
      const value = await measurements[key]();
      if (i >= warmup) result[key].push(value);
    }
  }
  return result;
}

/** Duration of one call of `fn`, in ms. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/** Median of the values (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Nearest-rank percentile of unsorted values; NaN when empty. */
export function quantile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

/** Median, p5/p95, min, max and count of durations, for the JSON. */
export interface Spread {
  n: number;
  median: number;
  p5: number;
  p95: number;
  min: number;
  max: number;
}

/** Summary of a list of values (ms, MB/s, ...), rounded to 3 decimals. */
export function spread(values: readonly number[]): Spread {
  return {
    n: values.length,
    median: round(median(values)),
    p5: round(quantile(values, 5)),
    p95: round(quantile(values, 95)),
    min: round(Math.min(...values)),
    max: round(Math.max(...values)),
  };
}

/** `value / base`, or NaN when the base is not a positive number. */
export function ratio(value: number, base: number): number {
  return base > 0 && Number.isFinite(value) ? value / base : NaN;
}

/** Rounds to `digits` decimals (3 by default), keeping NaN. */
export function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** "met" when `value <= limit`, else "missed"; "error" for NaN. */
export function atMost(value: number, limit: number): RowStatus {
  if (!Number.isFinite(value)) return "error";
  return value <= limit ? "met" : "missed";
}

/** Milliseconds for people: "0.420 ms", "3.81 ms", "38.2 ms", "1.84 s". */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "n/a";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  return `${ms.toFixed(3)} ms`;
}

/** A ratio for people: "1.84x". */
export function formatRatio(value: number | null): string {
  if (value === null) return "";
  if (!Number.isFinite(value)) return "n/a";
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(2)}x`;
}

/** A row for a figure that could not be taken because of an error. */
export function errorRow(section: string, figure: string, error: unknown): Row {
  return {
    section,
    figure,
    goal: "",
    measured: "not measured",
    ratio: null,
    status: "error",
    note: firstLine(error),
  };
}

/** The first line of an error's message (WorkshopError messages carry a fix on later lines). */
export function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0].trim();
}

/**
 * Renders rows as a plain-text table with the columns section, figure,
 * goal, measured, ratio and met?.
 *
 * @example
 * ```ts
 * console.log(renderTable(rows));
 * ```
 */
export function renderTable(rows: readonly Row[]): string {
  const mark: Record<RowStatus, string> = {
    met: "yes",
    missed: "NO",
    info: "-",
    skipped: "skipped",
    error: "ERROR",
  };
  const cells = [
    ["section", "figure", "goal", "measured", "ratio", "met?"],
    ...rows.map((r) => [
      r.section,
      r.figure,
      r.goal || "-",
      r.measured,
      formatRatio(r.ratio),
      mark[r.status] +
      (r.note
        ? (r.status === "skipped" || r.status === "error" ? `: ${r.note}` : ` (${r.note})`)
        : ""),
    ]),
  ];
  const widths = cells[0].map((_, i) => Math.max(...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((v, i) => (i === 5 ? v : v.padEnd(widths[i]))).join("  ").trimEnd();
  const rule = widths.map((w, i) => "-".repeat(i === 5 ? 4 : w)).join("  ");
  return [line(cells[0]), rule, ...cells.slice(1).map(line)].join("\n");
}
