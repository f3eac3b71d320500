/**
 * Regions and the round-trip times between them.
 *
 * On one machine every node sits on loopback, so the reason these designs
 * exist (users and data far apart) never shows. Each node and each simulated
 * user has a region; links between different regions carry a delay taken from
 * the table below, multiplied by the `latencyScale` setting.
 *
 * Source of the round-trip times: median (P50) AWS inter-region latencies as
 * published by cloudping.co ("AWS Latency Monitoring", https://www.cloudping.co/grid,
 * one-year P50 view), rounded to the millisecond. They are typical values, not
 * guarantees; the real figures move by a few percent from week to week.
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";

/** A cloud region the kit can place nodes and users in. */
export interface Region {
  /** AWS region id, for example "eu-west-2". */
  id: RegionId;
  /** City the region is in. */
  city: string;
  /** Short label for plots. */
  label: string;
}

/** Every known region. */
export const REGIONS = {
  "eu-west-2": { id: "eu-west-2", city: "London", label: "London (eu-west-2)" },
  "eu-central-1": { id: "eu-central-1", city: "Frankfurt", label: "Frankfurt (eu-central-1)" },
  "us-east-1": { id: "us-east-1", city: "N. Virginia", label: "N. Virginia (us-east-1)" },
  "us-west-2": { id: "us-west-2", city: "Oregon", label: "Oregon (us-west-2)" },
  "ap-northeast-1": { id: "ap-northeast-1", city: "Tokyo", label: "Tokyo (ap-northeast-1)" },
  "ap-southeast-2": { id: "ap-southeast-2", city: "Sydney", label: "Sydney (ap-southeast-2)" },
} as const satisfies Record<string, { id: string; city: string; label: string }>;

/** A region id from {@link REGIONS}. */
export type RegionId = keyof typeof REGIONS;

/** Round trip inside one region (between availability zones), in ms. */
export const SAME_REGION_RTT_MS = 1;

/** Median round-trip times in ms between regions (cloudping.co P50, rounded). */
const RTT_MS: Record<string, number> = {
  "eu-west-2|eu-central-1": 14,
  "eu-west-2|us-east-1": 76,
  "eu-west-2|us-west-2": 130,
  "eu-west-2|ap-northeast-1": 210,
  "eu-west-2|ap-southeast-2": 265,
  "eu-central-1|us-east-1": 90,
  "eu-central-1|us-west-2": 145,
  "eu-central-1|ap-northeast-1": 225,
  "eu-central-1|ap-southeast-2": 252,
  "us-east-1|us-west-2": 63,
  "us-east-1|ap-northeast-1": 146,
  "us-east-1|ap-southeast-2": 198,
  "us-west-2|ap-northeast-1": 98,
  "us-west-2|ap-southeast-2": 138,
  "ap-northeast-1|ap-southeast-2": 105,
};

/**
 * Looks up a region by id.
 *
 * @throws {WorkshopError} `UNKNOWN_REGION` naming the known regions.
 * @example
 * ```ts
 * getRegion("eu-west-2").city; // "London"
 * ```
 */
export function getRegion(id: string): Region {
  const region = (REGIONS as Record<string, Region>)[id];
  if (!region) {
    throw new WorkshopError("UNKNOWN_REGION", `Unknown region "${id}"`, {
      fix: `Use one of: ${Object.keys(REGIONS).join(", ")}`,
    });
  }
  return region;
}

/**
 * The real-world median round trip between two regions, in ms (unscaled).
 *
 * @example
 * ```ts
 * roundTripMs("eu-west-2", "us-east-1"); // 76
 * ```
 */
export function roundTripMs(from: string, to: string): number {
  getRegion(from);
  getRegion(to);
  if (from === to) return SAME_REGION_RTT_MS;
  return RTT_MS[`${from}|${to}`] ?? RTT_MS[`${to}|${from}`];
}

/** One row per pair of regions, for display: `{from, to, rttMs}`. */
export function roundTripTable(): { from: RegionId; to: RegionId; rttMs: number }[] {
  const ids = Object.keys(REGIONS) as RegionId[];
  return ids.flatMap((from) => ids.map((to) => ({ from, to, rttMs: roundTripMs(from, to) })));
}
