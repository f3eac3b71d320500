/**
 * Section "client": the workload client (lib/workload.ts, postgres.js in
 * Deno) against pgbench (libpq, C) with one client, on the same node and
 * the same statements, back to back, in alternating rounds. Compares the
 * median (p50) per-statement latency; pgbench's per-transaction log
 * (`--log`) gives its distribution. pgbench runs with `-M prepared`, as
 * postgres.js uses named prepared statements.
 *
 * @module
 */

import {
  type Node,
  type Operation,
  seededRandom,
  seededUuid,
  startCluster,
  startWorkload,
} from "../lib/mod.ts";
import { pgbenchPath } from "./_machine.ts";
import { atMost, formatMs, median, quantile, ratio, type Row, spread } from "./_measure.ts";
import type { SectionContext, SectionResult } from "./bench.ts";

/** Goal: the workload's p50 within this factor of pgbench's. */
const GOAL = 1.3;
/** Operations thrown away at the start of every round (connection, first prepare). */
const WARM = 20;
const TABLE = "bench_customer";
const ROWS = 1000;

/** A statement run by every client. */
export interface Statement {
  name: string;
  /** The statement as an operation (what a bare postgres.js loop runs). */
  op: Operation;
  /** Use the workload's built-in operation of this name instead of `op`. */
  builtin?: "count";
  /** The same statement as a pgbench script. */
  pgbench: string;
}

/** The statements compared: the built-in `count`, and a point read by primary key. */
export const STATEMENTS: Statement[] = [
  {
    name: "count",
    builtin: "count", // SELECT count(*) FROM "bench_customer"
    op: (sql) => sql`SELECT count(*) FROM ${sql(TABLE)}`,
    pgbench: `SELECT count(*) FROM "${TABLE}";\n`,
  },
  {
    name: "point",
    op: (sql, ctx) =>
      sql`SELECT id, email FROM bench_customer WHERE id = ${1 + Math.floor(ctx.random() * ROWS)}`,
    pgbench: `\\set id random(1, ${ROWS})\nSELECT id, email FROM bench_customer WHERE id = :id;\n`,
  },
];

/** What a pgbench per-transaction log says, in ms. */
export interface PgbenchTimes {
  /**
   * The latency field of each line. Unreliable on a busy machine: pgbench
   * 15 reuses a cached clock reading when the reply is already waiting, and
   * then logs 0 for transactions that took ~0.1 ms.
   */
  reported: number[];
  /**
   * Time between the ends of consecutive transactions (from each line's
   * timestamp), one fewer than the lines. With one client running back to
   * back this is each transaction's latency plus pgbench's few microseconds
   * of bookkeeping; the bench uses it.
   */
  intervals: number[];
}

/**
 * Reads a pgbench per-transaction log (`--log`): lines of
 * `client transaction latency_us script epoch_s epoch_us`.
 *
 * @example
 * ```ts
 * parsePgbenchLog("0 1 412 0 1715150000 123456\n0 2 398 0 1715150000 123900\n");
 * // { reported: [0.412, 0.398], intervals: [0.444] }
 * ```
 */
export function parsePgbenchLog(text: string): PgbenchTimes {
  const reported: number[] = [];
  const ends: number[] = [];
  for (const line of text.trim().split("\n").filter(Boolean)) {
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length < 6 || fields.slice(0, 6).some((f) => !Number.isFinite(f))) {
      throw new Error(`Unexpected pgbench log line "${line}"`);
    }
    reported.push(fields[2] / 1000);
    ends.push(fields[4] * 1e6 + fields[5]); // µs since the epoch: exact in a double
  }
  const intervals = ends.slice(1).map((end, i) => (end - ends[i]) / 1000);
  return { reported, intervals };
}

/** Runs pgbench with one client for `transactions` transactions; returns its log's times. */
export async function runPgbench(
  node: Node,
  script: string,
  transactions: number,
): Promise<PgbenchTimes> {
  const dir = await Deno.makeTempDir({ prefix: "pgsw-bench-pgbench-" });
  try {
    await Deno.writeTextFile(`${dir}/script.sql`, script);
    const out = await new Deno.Command(pgbenchPath(), {
      args: [
        "-h",
        node.host,
        "-p",
        String(node.port),
        "-U",
        node.user,
        "-n",
        "-c",
        "1",
        "-j",
        "1",
        "-M",
        "prepared",
        "-t",
        String(transactions),
        "-f",
        `${dir}/script.sql`,
        "--log",
        `--log-prefix=${dir}/tx`,
        node.database,
      ],
      env: { PGPASSWORD: node.password, PGSSLMODE: "disable", PGAPPNAME: "pgsw-bench-pgbench" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `pgbench failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
    const logs = [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("tx."));
    if (logs.length !== 1) throw new Error(`pgbench wrote ${logs.length} log files, expected 1`);
    return parsePgbenchLog(await Deno.readTextFile(`${dir}/${logs[0].name}`));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs the workload client back to back (no pause) for `count` operations; latencies in ms. */
export async function runWorkload(
  node: Node,
  statement: Statement,
  count: number,
): Promise<number[]> {
  const load = await startWorkload(node, {
    table: TABLE,
    ...(statement.builtin
      ? { mix: { [statement.builtin]: 1 } }
      : { operations: { [statement.name]: statement.op } }),
    intervalMs: 0,
    maxDurationMs: 300_000,
  });
  try {
    await load.waitForSamples(count);
  } finally {
    await load.stop();
  }
  const failed = load.samples.find((s) => !s.ok);
  if (failed) throw new Error(`Workload operation ${failed.op} failed: ${failed.error}`);
  return load.samples.slice(0, count).map((s) => s.ms);
}

/**
 * The floor under the workload: the same operation in a bare loop on one
 * postgres.js connection, timed the same way; latencies in ms.
 */
export async function runBareClient(
  node: Node,
  statement: Statement,
  count: number,
): Promise<number[]> {
  const sql = await node.client({ applicationName: "pgsw-bench-bare" });
  const rng = seededRandom();
  const ctx = { random: rng, uuid: () => seededUuid(rng), acknowledge: () => {} };
  const ms: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await statement.op(sql, ctx);
      ms.push(performance.now() - started);
    }
  } finally {
    await node.closeClient(sql);
  }
  return ms;
}

/** Runs the section. */
export async function clientLatency(ctx: SectionContext): Promise<SectionResult> {
  const rounds = ctx.quick ? 2 : 5;
  const perRound = ctx.quick ? 200 : 1000;
  await using cluster = await startCluster({
    name: "bench-client",
    nodes: [{ name: "eu_db_1", region: "eu-west-2" }],
  });
  const node = cluster.node("eu_db_1");
  await node.exec(`
    CREATE TABLE ${TABLE} (id int PRIMARY KEY, email text NOT NULL);
    INSERT INTO ${TABLE} SELECT g, g || '@example.com' FROM generate_series(1, ${ROWS}) g;
    ANALYZE ${TABLE};
  `);
  const rows: Row[] = [];
  const data: Record<string, unknown> = {
    rounds,
    perRound,
    warmPerRound: WARM,
    pgbenchMode: "prepared",
  };
  for (const statement of STATEMENTS) {
    const reported: number[][] = []; // pgbench's own latency field, for the JSON
    const runners = {
      workload: () => runWorkload(node, statement, WARM + perRound),
      pgbench: async () => {
        const times = await runPgbench(node, statement.pgbench, WARM + perRound + 1);
        reported.push(times.reported.slice(WARM + 1));
        return times.intervals;
      },
      postgresjs: () => runBareClient(node, statement, WARM + perRound),
    };
    const who = Object.keys(runners) as (keyof typeof runners)[];
    const kept = { workload: [] as number[], pgbench: [] as number[], postgresjs: [] as number[] };
    const roundP50 = {
      workload: [] as number[],
      pgbench: [] as number[],
      postgresjs: [] as number[],
    };
    // One warm-up round of each, then rounds rotating which goes first.
    for (let round = 0; round <= rounds; round++) {
      for (let j = 0; j < who.length; j++) {
        const key = who[(round + j) % who.length];
        const all = await runners[key]();
        if (round === 0) continue;
        const measured = all.slice(WARM);
        kept[key].push(...measured);
        roundP50[key].push(median(measured));
      }
    }
    const p50 = {
      workload: quantile(kept.workload, 50),
      pgbench: quantile(kept.pgbench, 50),
      postgresjs: quantile(kept.postgresjs, 50),
    };
    const r = ratio(p50.workload, p50.pgbench);
    const overBare = ratio(p50.workload, p50.postgresjs);
    ctx.log(
      `  ${statement.name}: p50 workload ${formatMs(p50.workload)}, pgbench ${
        formatMs(p50.pgbench)
      }, bare postgres.js ${formatMs(p50.postgresjs)}`,
    );
    rows.push({
      section: "client",
      figure: `workload p50 / pgbench p50, "${statement.name}" (1 client)`,
      goal: `<= ${GOAL}x`,
      measured: `${formatMs(p50.workload)} vs ${formatMs(p50.pgbench)}`,
      ratio: r,
      status: atMost(r, GOAL),
    }, {
      section: "client",
      figure: `workload p50 / bare postgres.js loop p50, "${statement.name}"`,
      goal: "",
      measured: `${formatMs(p50.workload)} vs ${formatMs(p50.postgresjs)}`,
      ratio: overBare,
      status: "info",
    });
    data[statement.name] = {
      pgbenchScript: statement.pgbench,
      workloadMs: { ...spread(kept.workload), p99: quantile(kept.workload, 99) },
      pgbenchMs: { ...spread(kept.pgbench), p99: quantile(kept.pgbench, 99) },
      pgbenchReportedMs: spread(reported.slice(1).flat()), // round 0 is the warm-up
      barePostgresjsMs: { ...spread(kept.postgresjs), p99: quantile(kept.postgresjs, 99) },
      roundP50,
      p50Ratio: r,
      p50OverBarePostgresjs: overBare,
    };
  }
  return { rows, data };
}
