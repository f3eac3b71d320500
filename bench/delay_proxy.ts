/**
 * Section "proxy": the delay proxy of lib/latency_proxy.ts.
 *
 * - Round trip: `SELECT 1` through a proxy with a configured round trip
 *   (one-way = half of it, the kit's default 2 % jitter), minus `SELECT 1`
 *   on a direct connection, sampled in alternation; goal: within 10 % of
 *   the configured value + 2 ms.
 * - Throughput at delay 0 (scale 0): a bulk `COPY ... TO STDOUT` and a big
 *   `SELECT` through the proxy vs a direct connection, as ratios.
 *
 * @module
 */

import { connect, type Sql, startCluster, startDelayProxy } from "../lib/mod.ts";
import {
  atMost,
  formatMs,
  interleave,
  median,
  ratio,
  type Row,
  spread,
  timed,
} from "./_measure.ts";
import type { SectionContext, SectionResult } from "./bench.ts";

/** Configured round trips, ms: inside a region, London-Frankfurt, London-N. Virginia, London-Tokyo. */
export const ROUND_TRIPS = [1, 14, 76, 210];

/** The allowed error for a configured round trip: 10 % + 2 ms. */
export function allowedError(configuredMs: number): number {
  return configuredMs * 0.1 + 2;
}

/**
 * Bytes a `COPY ... TO STDOUT` delivered, read as a stream in flowing mode.
 * (Reading it with `for await` stalls the second COPY on a connection
 * through the proxy: postgres.js's pause/resume of the socket under
 * backpressure; flowing mode has no backpressure.)
 */
export async function copyOut(sql: Sql, query: string): Promise<number> {
  const stream = await sql.unsafe(query).readable();
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    stream.on("data", (chunk: Uint8Array) => bytes += chunk.length);
    stream.on("end", () => resolve());
    stream.on("error", reject);
  });
  return bytes;
}

/** Runs the section. */
export async function delayProxy(ctx: SectionContext): Promise<SectionResult> {
  const samples = ctx.quick ? 5 : 15;
  const throughputRuns = ctx.quick ? 2 : 5;
  const copyRows = ctx.quick ? 4_000 : 40_000; // rows of 1000 bytes: 4 MB / 40 MB
  const selectRows = ctx.quick ? 10_000 : 100_000;
  await using cluster = await startCluster({
    name: "bench-proxy",
    nodes: [{ name: "eu_db_1", region: "eu-west-2" }],
  });
  const node = cluster.node("eu_db_1");
  const target = { host: node.host, port: node.port };
  const client = (port: number) =>
    connect({ host: "127.0.0.1", port }, node.user, node.password, {
      database: node.database,
      applicationName: "pgsw-bench-proxy",
    });
  const direct = client(node.port);
  const rows: Row[] = [];
  const data: Record<string, unknown> = { samplesPerValue: samples, jitter: 0.02 };
  try {
    const roundTrips: Record<string, unknown>[] = [];
    for (const configured of ROUND_TRIPS) {
      await using proxy = await startDelayProxy(target, {
        oneWayMs: configured / 2,
        label: `bench ${configured} ms`,
      });
      const through = client(proxy.port);
      try {
        const values = await interleave({
          direct: () => timed(() => direct`SELECT 1`),
          proxied: () => timed(() => through`SELECT 1`),
        }, { warmup: 2, runs: samples });
        const added = median(values.proxied) - median(values.direct);
        const error = added - configured;
        const status = atMost(Math.abs(error), allowedError(configured));
        ctx.log(
          `  ${configured} ms configured: ${formatMs(added)} added ` +
            `(proxied ${formatMs(median(values.proxied))}, direct ${
              formatMs(median(values.direct))
            })`,
        );
        rows.push({
          section: "proxy",
          figure: `round trip through the proxy, configured ${configured} ms`,
          goal: `within ${formatMs(allowedError(configured))} (10% + 2 ms)`,
          measured: `${formatMs(added)} (${error >= 0 ? "+" : ""}${formatMs(error)})`,
          ratio: ratio(added, configured),
          status,
        });
        roundTrips.push({
          configuredMs: configured,
          addedMs: added,
          errorMs: error,
          proxiedMs: spread(values.proxied),
          directMs: spread(values.direct),
        });
      } finally {
        await through.end({ timeout: 1 });
      }
    }
    data.roundTrips = roundTrips;

    await using proxy = await startDelayProxy(target, { oneWayMs: 0, label: "bench scale 0" });
    const through = client(proxy.port);
    try {
      const copySql =
        `COPY (SELECT repeat('x', 999) FROM generate_series(1, ${copyRows})) TO STDOUT`;
      const selectQuery = (sql: Sql) =>
        sql`SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, ${selectRows}::int) g`;
      let bytes = 0;
      const rate = (sql: Sql) => async () => {
        const started = performance.now();
        bytes = await copyOut(sql, copySql);
        return bytes / 2 ** 20 / ((performance.now() - started) / 1000); // MiB/s
      };
      const copy = await interleave({ direct: rate(direct), proxied: rate(through) }, {
        warmup: 1,
        runs: throughputRuns,
      });
      const rowRate = (sql: Sql) => async () => {
        const started = performance.now();
        const result = await selectQuery(sql);
        if (result.length !== selectRows) throw new Error(`SELECT returned ${result.length} rows`);
        return selectRows / ((performance.now() - started) / 1000); // rows/s
      };
      const select = await interleave({ direct: rowRate(direct), proxied: rowRate(through) }, {
        warmup: 1,
        runs: throughputRuns,
      });
      const mb = (x: number) => `${x.toFixed(0)} MiB/s`;
      const kRows = (x: number) => `${(x / 1000).toFixed(0)}k rows/s`;
      const copyRatio = ratio(median(copy.proxied), median(copy.direct));
      const selectRatio = ratio(median(select.proxied), median(select.direct));
      ctx.log(
        `  COPY ${(bytes / 2 ** 20).toFixed(0)} MiB: ${mb(median(copy.proxied))} proxied, ` +
          `${mb(median(copy.direct))} direct; SELECT ${selectRows} rows: ` +
          `${kRows(median(select.proxied))} proxied, ${kRows(median(select.direct))} direct`,
      );
      rows.push({
        section: "proxy",
        figure: `throughput at delay 0 / direct, COPY TO STDOUT ${
          (bytes / 2 ** 20).toFixed(0)
        } MiB`,
        goal: "",
        measured: `${mb(median(copy.proxied))} vs ${mb(median(copy.direct))}`,
        ratio: copyRatio,
        status: "info",
      }, {
        section: "proxy",
        figure: `throughput at delay 0 / direct, SELECT of ${selectRows / 1000}k rows`,
        goal: "",
        measured: `${kRows(median(select.proxied))} vs ${kRows(median(select.direct))}`,
        ratio: selectRatio,
        status: "info",
      });
      data.throughput = {
        copy: {
          bytes,
          proxiedMiBs: spread(copy.proxied),
          directMiBs: spread(copy.direct),
          ratio: copyRatio,
        },
        select: {
          rows: selectRows,
          proxiedRowsPerS: spread(select.proxied),
          directRowsPerS: spread(select.direct),
          ratio: selectRatio,
        },
      };
    } finally {
      await through.end({ timeout: 1 });
    }
  } finally {
    await direct.end({ timeout: 1 });
  }
  return { rows, data };
}
