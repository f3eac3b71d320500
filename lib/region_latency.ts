/**
 * The same query run by users in each region against the current topology:
 * how far away the data is, in milliseconds. Notebooks run it after each
 * step and plot the rows with `regionLatencyPlot()`.
 *
 * @module
 */

import { settings } from "./config.ts";
import type { Node, Sql } from "./node.ts";
import { type RegionId, REGIONS } from "./regions.ts";

/** One measurement: the median latency a user in `region` saw for `query` at `step`. */
export interface RegionLatencyRow {
  /** Region of the user. */
  region: RegionId;
  /** Lesson step the measurement belongs to. */
  step: string;
  /** Label of the query. */
  query: string;
  /** Median latency in ms. */
  ms: number;
  /** Every measured latency in ms. */
  samples: number[];
  /** Latency scale the simulation used (0 = off). */
  latencyScale: number;
}

/** Options for {@link latencyFromRegions}. */
export interface RegionLatencyOptions {
  /** User regions to measure from. @default every region in REGIONS */
  regions?: RegionId[];
  /** Measurements per region after one warm-up. @default 5 */
  repeat?: number;
  /** Step label. @default "now" */
  step?: string;
  /** Query label. @default "query" */
  label?: string;
}

/**
 * Runs `query` from a user in each region (a client whose connection crosses
 * the simulated latency to `node`) and returns the median per region. The
 * connection is opened and warmed up first, so only the query is timed.
 *
 * @param node The node users connect to (the coordinator, an API's database...).
 * @param query Runs the query on the given client.
 * @example
 * ```ts
 * const rows = await latencyFromRegions(eu1, (sql) => sql`SELECT count(*) FROM customer`,
 *   { regions: ["eu-west-2", "us-east-1"], step: "year 1" });
 * await show(regionLatencyPlot(rows));
 * ```
 */
export async function latencyFromRegions(
  node: Node,
  query: (sql: Sql) => Promise<unknown>,
  options: RegionLatencyOptions = {},
): Promise<RegionLatencyRow[]> {
  const regions = options.regions ?? (Object.keys(REGIONS) as RegionId[]);
  const repeat = options.repeat ?? 5;
  const rows: RegionLatencyRow[] = [];
  for (const region of regions) {
    const sql = await node.client({ from: region, applicationName: `pgsw-user-${region}` });
    try {
      await query(sql);
      const samples: number[] = [];
      for (let i = 0; i < repeat; i++) {
        const started = performance.now();
        await query(sql);
        samples.push(performance.now() - started);
      }
      const sorted = [...samples].sort((a, b) => a - b);
      rows.push({
        region,
        step: options.step ?? "now",
        query: options.label ?? "query",
        ms: sorted[Math.floor((sorted.length - 1) / 2)],
        samples,
        latencyScale: settings().latencyScale,
      });
    } finally {
      await node.closeClient(sql);
    }
  }
  return rows;
}
