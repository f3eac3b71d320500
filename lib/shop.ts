/**
 * The simulated shop of the manual-sharding lesson: a handful of customers,
 * each placing a purchase about once a second, from the region they live
 * in. Every purchase is one measured operation of a {@link Workload}, so the
 * shop's latency can be plotted per step and per user region.
 *
 * ```ts
 * const eu = shopCustomers("uk", 4);
 * await node.sql`INSERT INTO customer ${node.sql(eu, "id", "email")}`;
 * const shop = await startShop(node, { customers: eu, step: "1 · EU only" });
 * // ... later
 * await shop.stop();
 * await show(latencyTimeline(shopTimeline([shop])));
 * ```
 *
 * @module
 */

import { settings } from "./config.ts";
import { WorkshopError } from "./errors.ts";
import type { Node } from "./node.ts";
import { seededRandom, seededUuid } from "./random.ts";
import type { RegionLatencyRow } from "./region_latency.ts";
import { getRegion, type RegionId } from "./regions.ts";
import type { TimelineSource } from "./plot_latency.ts";
import {
  type Operation,
  percentile,
  type Sample,
  startWorkload,
  type StepMark,
  type Workload,
} from "./workload.ts";

/** One customer of the shop. */
export interface ShopCustomer {
  /** Customer id (a UUID). */
  id: string;
  /** E-mail address, unique per country and index. */
  email: string;
  /** Two-letter country code as the lesson writes it ("uk", "us", "jp"). */
  country: string;
}

/** Options for {@link shopCustomers}. */
export interface ShopCustomersOptions {
  /** Seed of the ids; the same seed and country give the same ids. @default settings().seed */
  seed?: number;
}

/**
 * A handful of customers from one country, with ids that repeat from run
 * to run (seeded), so a section reset can recreate them exactly.
 *
 * @param country Country code stored with each customer, e.g. "uk".
 * @param count How many customers.
 * @returns Customers `<country>_shopper_<n>@shop.test`.
 * @example
 * ```ts
 * shopCustomers("us", 3).map((c) => c.email); // ["us_shopper_1@shop.test", ...]
 * ```
 */
export function shopCustomers(
  country: string,
  count: number,
  options: ShopCustomersOptions = {},
): ShopCustomer[] {
  if (!Number.isInteger(count) || count < 1) {
    throw new WorkshopError("INVALID_SETTING", `Invalid number of shop customers ${count}`, {
      fix: "Ask for a whole number of customers, 1 or more",
    });
  }
  let hash = options.seed ?? settings().seed;
  for (const ch of country) hash = Math.imul(hash ^ ch.charCodeAt(0), 0x9e3779b1);
  const rng = seededRandom(hash);
  return Array.from({ length: count }, (_, i) => ({
    id: seededUuid(rng),
    email: `${country}_shopper_${i + 1}@shop.test`,
    country,
  }));
}

/** Options for {@link startShop}. */
export interface ShopOptions {
  /** Customers placing purchases; each has its own connection. */
  customers: readonly ShopCustomer[];
  /** Region the customers sit in. @default the node's region */
  from?: RegionId;
  /** Table purchases go to, optionally schema-qualified. @default "purchase" */
  table?: string;
  /** Also write the customer's country into the purchase (sharded purchase tables need it). @default false */
  withCountry?: boolean;
  /** Pause between the starts of two purchases of one customer, in ms. @default 1000 */
  intervalMs?: number;
  /** The shop closes by itself after this long, in ms. @default 120000 */
  maxDurationMs?: number;
  /** Step label until the first `mark()`. @default "start" */
  step?: string;
}

/**
 * Opens the shop: each customer places a purchase (`INSERT ... RETURNING id`,
 * amount and id chosen by the database) every `intervalMs`, through a
 * connection from `from`. Returns at once; the purchases run in the background
 * until `stop()`.
 *
 * @param node The node the shop's application talks to.
 * @returns A workload whose operations are all named "purchase".
 * @throws {WorkshopError} `INVALID_SETTING` without customers.
 * @example
 * ```ts
 * const us = await startShop(eu, { customers: shopCustomers("us", 3), from: "us-east-1" });
 * await us.waitForSamples(6);
 * await us.stop();
 * ```
 */
export async function startShop(node: Node, options: ShopOptions): Promise<Workload> {
  const customers = options.customers;
  if (!customers?.length) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot open a shop on "${node.name}" without customers`,
      {
        fix: 'Pass customers, e.g. { customers: shopCustomers("uk", 4) }',
      },
    );
  }
  const table = options.table ?? "purchase";
  let next = 0;
  const purchase: Operation = async (sql, ctx) => {
    const customer = customers[next++ % customers.length];
    const amount = (1 + Math.floor(ctx.random() * 9900) / 100).toFixed(2);
    const row: Record<string, string> = { customer_id: customer.id, amount };
    if (options.withCountry) row.country = customer.country;
    const [created] = await sql`INSERT INTO ${sql(table)} ${sql(row)} RETURNING id`;
    ctx.acknowledge(String(created.id));
  };
  return await startWorkload(node, {
    from: options.from,
    operations: { purchase },
    concurrency: customers.length,
    intervalMs: options.intervalMs ?? 1000,
    maxDurationMs: options.maxDurationMs ?? 120_000,
    step: options.step,
  });
}

/**
 * Several shops on one clock, for {@link latencyTimeline}: each sample's
 * operation becomes "purchase from <region>", and step marks are merged
 * (the earliest time a step was marked wins).
 *
 * @param shops Shops started at different times (their clocks are aligned).
 * @example
 * ```ts
 * await show(latencyTimeline(shopTimeline([euShop, usShop, jpShop])));
 * ```
 */
export function shopTimeline(shops: readonly Workload[]): TimelineSource {
  if (shops.length === 0) return { samples: [], marks: [] };
  const reference = shops[0].elapsed();
  const samples: Sample[] = [];
  const firstMark = new Map<string, number>();
  for (const shop of shops) {
    const offset = reference - shop.elapsed();
    const label = `purchase from ${getRegion(shop.from).label}`;
    for (const s of shop.samples) samples.push({ ...s, t: s.t + offset, op: label });
    for (const m of shop.marks) {
      const t = m.t + offset;
      if (!firstMark.has(m.step) || t < firstMark.get(m.step)!) firstMark.set(m.step, t);
    }
  }
  const marks: StepMark[] = [...firstMark].map(([step, t]) => ({ step, t })).sort((a, b) =>
    a.t - b.t
  );
  const start = Math.min(0, ...marks.map((m) => m.t), ...samples.map((s) => s.t));
  return {
    samples: samples.map((s) => ({ ...s, t: s.t - start })).sort((a, b) => a.t - b.t),
    marks: marks.map((m) => ({ ...m, t: m.t - start })),
  };
}

/** Options for {@link shopLatencyRows}. */
export interface ShopLatencyOptions {
  /** Label of the rows (the plot's step). */
  step: string;
  /** Use only samples taken while this step of the shop was current. @default every sample */
  onlyStep?: string;
}

/**
 * Median purchase latency per user region, as rows for `regionLatencyPlot()`.
 * The first purchase of every connection (which also opens it, and through a
 * coordinator opens the coordinator's connection to the shard) is left out,
 * and so are failed purchases.
 *
 * @example
 * ```ts
 * const rows = [...shopLatencyRows(before, { step: "before" }), ...shopLatencyRows(after, { step: "after" })];
 * await show(regionLatencyPlot(rows));
 * ```
 */
export function shopLatencyRows(
  shops: readonly Workload[],
  options: ShopLatencyOptions,
): RegionLatencyRow[] {
  const byRegion = new Map<RegionId, number[]>();
  for (const shop of shops) {
    const firstDone = Math.min(...shop.samples.map((s) => s.t + s.ms));
    const kept = shop.samples.filter((s) =>
      s.ok && s.t >= firstDone && (options.onlyStep === undefined || s.step === options.onlyStep)
    );
    byRegion.set(shop.from, [...(byRegion.get(shop.from) ?? []), ...kept.map((s) => s.ms)]);
  }
  return [...byRegion].filter(([, ms]) => ms.length > 0).map(([region, ms]) => {
    const sorted = [...ms].sort((a, b) => a - b);
    return {
      region,
      step: options.step,
      query: "purchase",
      ms: percentile(sorted, 50),
      samples: ms,
      latencyScale: settings().latencyScale,
    };
  });
}
