/**
 * Section "fdw": the postgres_fdw costs the notebooks teach, measured on a
 * coordinator (eu_db_1, London) with foreign partitions on a node in the
 * same region (eu_db_2: a direct connection, no simulated latency) and on
 * a node across the Atlantic (us_db_1, N. Virginia: through the delay
 * proxy at LATENCY_SCALE=0.1, a 7.6 ms round trip).
 *
 * - Insert of N rows (1000) through the partitioned table into a foreign
 *   partition, `batch_size` 1 vs 100.
 * - `count(*)` over the partitioned table, whose foreign partition holds
 *   10000 rows: without partitionwise aggregation the rows themselves come
 *   over, `fetch_size` 100 vs 10000 (the plan's Remote SQL is checked).
 *
 * All statements run on one connection, so postgres_fdw's connection to
 * each node is opened once in the warm-up and reused.
 *
 * @module
 */

import { configure, linkNodes, roundTripMs, settings, startCluster } from "../lib/mod.ts";
import { formatMs, interleave, median, ratio, type Row, spread, timed } from "./_measure.ts";
import type { SectionContext, SectionResult } from "./bench.ts";

const SCALE = 0.1;

/** Runs the section. */
export async function fdwCosts(ctx: SectionContext): Promise<SectionResult> {
  const insertRows = ctx.quick ? 100 : 1000;
  const countRows = ctx.quick ? 2000 : 10_000;
  const insertRuns = ctx.quick ? 1 : 3;
  const countRuns = ctx.quick ? 2 : 5;
  const before = settings().latencyScale;
  configure({ latencyScale: SCALE });
  try {
    await using cluster = await startCluster({
      name: "bench-fdw",
      nodes: [
        { name: "eu_db_1", region: "eu-west-2", role: "coordinator" },
        { name: "eu_db_2", region: "eu-west-2", role: "shard" },
        { name: "us_db_1", region: "us-east-1", role: "shard" },
      ],
    });
    const eu1 = cluster.node("eu_db_1");
    const targets = [
      { key: "eu", node: cluster.node("eu_db_2"), label: "same region (direct)" },
      {
        key: "us",
        node: cluster.node("us_db_1"),
        label: `cross-region, ${(roundTripMs("eu-west-2", "us-east-1") * SCALE).toFixed(1)} ms RTT`,
      },
    ];
    for (const t of targets) {
      await linkNodes(eu1, t.node);
      await t.node.exec(`
        CREATE TABLE fdw_target (id int, target text, payload text);
        CREATE TABLE fdw_rows (id int, target text, payload text);
        INSERT INTO fdw_rows SELECT g, '${t.key}', md5(g::text) FROM generate_series(1, ${countRows}) g;
        ANALYZE fdw_rows;
      `);
    }
    await eu1.exec(`
      CREATE TABLE fdw_ins (id int, target text, payload text) PARTITION BY LIST (target);
      CREATE TABLE fdw_cnt (id int, target text, payload text) PARTITION BY LIST (target);
      ${
      targets.map((t) => `
      CREATE FOREIGN TABLE fdw_ins_${t.key} PARTITION OF fdw_ins FOR VALUES IN ('${t.key}')
        SERVER ${t.node.name} OPTIONS (table_name 'fdw_target', batch_size '1');
      CREATE FOREIGN TABLE fdw_cnt_${t.key} PARTITION OF fdw_cnt FOR VALUES IN ('${t.key}')
        SERVER ${t.node.name} OPTIONS (table_name 'fdw_rows', fetch_size '100');`).join("")
    }
    `);
    const sql = await eu1.client({ max: 1, applicationName: "pgsw-bench-fdw" });
    const rows: Row[] = [];
    const data: Record<string, unknown> = {
      latencyScale: SCALE,
      insertRows,
      countRows,
      insertRuns,
      countRuns,
      conditions: Object.fromEntries(targets.map((t) => [t.key, t.label])),
    };
    try {
      for (const t of targets) {
        // Warm-up: opens postgres_fdw's connection to the node on this backend.
        await sql.unsafe(
          `INSERT INTO fdw_ins SELECT g, '${t.key}', 'w' FROM generate_series(1, 5) g`,
        );
        await sql.unsafe(`SELECT count(*) FROM fdw_cnt WHERE target = '${t.key}'`);
        await t.node.sql`TRUNCATE fdw_target`;
        const plan = await sql.unsafe(
          `EXPLAIN (VERBOSE, COSTS OFF) SELECT count(*) FROM fdw_cnt WHERE target = '${t.key}'`,
        );
        const remote = plan.map((r) => String(r["QUERY PLAN"])).filter((l) => /Remote SQL/.test(l));
        if (remote.length !== 1 || /count\(/i.test(remote[0])) {
          throw new Error(`count(*) does not fetch rows (Remote SQL: ${remote.join(" | ")})`);
        }

        const insert = (batch: number) => async () => {
          await sql.unsafe(
            `ALTER FOREIGN TABLE fdw_ins_${t.key} OPTIONS (SET batch_size '${batch}')`,
          );
          const ms = await timed(() =>
            sql.unsafe(
              `INSERT INTO fdw_ins SELECT g, '${t.key}', md5(g::text) FROM generate_series(1, ${insertRows}) g`,
            )
          );
          const [{ n }] = await t.node.sql`SELECT count(*) AS n FROM fdw_target`;
          if (Number(n) !== insertRows) throw new Error(`Expected ${insertRows} rows, found ${n}`);
          await t.node.sql`TRUNCATE fdw_target`;
          return ms;
        };
        const inserts = await interleave({ batch1: insert(1), batch100: insert(100) }, {
          warmup: 0,
          runs: insertRuns,
        });
        const count = (fetch: number) => async () => {
          await sql.unsafe(
            `ALTER FOREIGN TABLE fdw_cnt_${t.key} OPTIONS (SET fetch_size '${fetch}')`,
          );
          let n = 0;
          const ms = await timed(async () => {
            [{ n }] = await sql.unsafe(
              `SELECT count(*) AS n FROM fdw_cnt WHERE target = '${t.key}'`,
            );
          });
          if (Number(n) !== countRows) throw new Error(`count(*) gave ${n}, expected ${countRows}`);
          return ms;
        };
        const counts = await interleave({ fetch100: count(100), fetch10000: count(10_000) }, {
          warmup: 1,
          runs: countRuns,
        });
        const insertRatio = ratio(median(inserts.batch1), median(inserts.batch100));
        const countRatio = ratio(median(counts.fetch100), median(counts.fetch10000));
        ctx.log(
          `  ${t.label}: insert ${insertRows} rows ${
            formatMs(median(inserts.batch1))
          } (batch 1) vs ` +
            `${formatMs(median(inserts.batch100))} (batch 100); count ${countRows} rows ` +
            `${formatMs(median(counts.fetch100))} (fetch 100) vs ${
              formatMs(median(counts.fetch10000))
            } (fetch 10000)`,
        );
        rows.push({
          section: "fdw",
          figure: `insert ${insertRows} rows via foreign partition, batch_size 1 / 100, ${t.label}`,
          goal: "",
          measured: `${formatMs(median(inserts.batch1))} vs ${formatMs(median(inserts.batch100))}`,
          ratio: insertRatio,
          status: "info",
        }, {
          section: "fdw",
          figure: `count(*) over ${countRows} remote rows, fetch_size 100 / 10000, ${t.label}`,
          goal: "",
          measured: `${formatMs(median(counts.fetch100))} vs ${
            formatMs(median(counts.fetch10000))
          }`,
          ratio: countRatio,
          status: "info",
        });
        data[t.key] = {
          remoteSql: remote[0].trim(),
          insertBatch1Ms: spread(inserts.batch1),
          insertBatch100Ms: spread(inserts.batch100),
          countFetch100Ms: spread(counts.fetch100),
          countFetch10000Ms: spread(counts.fetch10000),
          insertRatio,
          countRatio,
        };
      }
    } finally {
      await eu1.closeClient(sql);
    }
    return { rows, data };
  } finally {
    configure({ latencyScale: before });
  }
}
