/**
 * What notebook 01 measures beyond the source's steps: years 1 and 2
 * replayed while a client writes without pause (the source's procedure
 * against a locked one), and the latency of read paths per user region.
 * Re-exported by the lesson module (`lesson01`).
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import type { Node } from "../node.ts";
import { type Figure, renderPlot } from "../plot.ts";
import { simulatedLatencyNote } from "../plot_latency.ts";
import type { RegionLatencyRow } from "../region_latency.ts";
import { getRegion } from "../regions.ts";
import {
  holdWindow,
  type LoadReport,
  loadReport,
  renameRemote,
  type SwapProcedure,
  swapTables,
} from "../repartition.ts";
import { startWorkload, type Workload } from "../workload.ts";
import {
  pointBack,
  prepareYear1,
  prepareYear2,
  RENAME_ON_SHARD,
  reset,
  YEAR2_RENAMES,
} from "./01_horizontal_scaling.ts";

/** Options for {@link runUnderLoad}. */
export interface UnderLoadOptions {
  /** How the moves run: the source's way, or locked. */
  procedure: SwapProcedure;
  /** Pause between two operations of one client worker, in ms. @default 5 */
  intervalMs?: number;
  /** Client workers, each with its own connection to eu_db_1. @default 2 */
  concurrency?: number;
  /**
   * Time between two commands the source types separately (copy, then swap;
   * rename on eu_db_2, then point the foreign table back), in ms. The wait
   * also lasts until the client acknowledged 3 writes after the copy, and
   * until a query failed after the rename (at most 5 s).
   * @default 300
   */
  thinkMs?: number;
  /** Time the client runs before, between and after the moves, in ms. @default 200 */
  settleMs?: number;
}

/** One move of an under-load run. */
export interface UnderLoadMove {
  step: string;
  /** ms from its first statement to its last. */
  ms: number;
  /** ms in which writes had to wait for a lock. */
  lockedMs: number;
}

/** What {@link runUnderLoad} measured. */
export interface UnderLoadRun {
  procedure: SwapProcedure;
  /** The (stopped) workload: samples, marks, acknowledged ids. */
  load: Workload;
  /** What the workload saw. */
  report: LoadReport;
  /** The moves and how long each took. */
  moves: UnderLoadMove[];
  /** Rows in customer before the client started. */
  rowsBefore: number;
  /** Rows in customer at the end. */
  rowsAfter: number;
  /** Of the rows that existed before, how many are still there. */
  originalRowsKept: number;
}

/**
 * Years 1 and 2 again, on `cluster`, while a client writes through eu_db_1
 * without pause: resets to the start of year 1 (keeping the nodes), starts
 * the client, runs the year-1 move, the year-2 move and the year-2 rename on
 * eu_db_2 with `procedure`, stops the client and reports.
 *
 * The client inserts customers with ids it chose (so every acknowledged
 * write can be looked for afterwards) and counts them, and marks the steps:
 * "1 node", "year 1 move", "2 nodes", "year 2 move", "rename", "3 nodes".
 *
 * @example
 * ```ts
 * const naive = await lesson01.runUnderLoad(lab, { procedure: "source" });
 * naive.report.lost.length; // > 0: writes between the copy and the swap are gone
 * ```
 */
export async function runUnderLoad(
  cluster: Cluster,
  options: UnderLoadOptions,
): Promise<UnderLoadRun> {
  const { procedure } = options;
  const thinkMs = options.thinkMs ?? 300;
  const settleMs = options.settleMs ?? 200;
  await reset(cluster, "year 1", { keepNodes: true });
  await prepareYear1(cluster);
  const eu1 = cluster.node("eu_db_1");
  const rowsBefore = await countCustomers(eu1);
  const load = await startWorkload(eu1, {
    mix: { insert: 3, count: 1 },
    intervalMs: options.intervalMs ?? 5,
    concurrency: options.concurrency ?? 2,
    step: "1 node",
    maxDurationMs: 120_000,
  });
  const moves: UnderLoadMove[] = [];
  const settle = () => holdWindow({ minMs: settleMs });
  const typeNextCommand = async () => {
    const acked = load.acknowledged.length;
    await holdWindow({ minMs: thinkMs, until: () => load.acknowledged.length >= acked + 3 });
  };
  try {
    await settle();
    load.mark("year 1 move");
    const first = await swapTables(eu1, {
      table: "customer",
      replacement: "customer_partitioned",
      procedure,
      between: typeNextCommand,
    });
    moves.push({ step: "year 1 move", ms: first.totalMs, lockedMs: first.lockedMs });
    load.mark("2 nodes");
    await settle();
    await prepareYear2(cluster);
    load.mark("year 2 move");
    const second = await swapTables(eu1, {
      table: "customer",
      replacement: "customer_partitioned",
      procedure,
      renames: YEAR2_RENAMES,
      between: typeNextCommand,
    });
    moves.push({ step: "year 2 move", ms: second.totalMs, lockedMs: second.lockedMs });
    load.mark("rename");
    const from = load.samples.length;
    const renameMs = await renameRemote(eu1, {
      remote: cluster.node("eu_db_2"),
      remoteSql: RENAME_ON_SHARD,
      coordinatorSql: pointBack("customer_1"),
      table: "customer",
      procedure,
      between: () =>
        holdWindow({
          minMs: thinkMs,
          until: () => load.samples.slice(from).some((s) => !s.ok),
        }).then(() => {}),
    });
    moves.push({
      step: "rename on eu_db_2",
      ms: renameMs,
      lockedMs: procedure === "locked" ? renameMs : 0,
    });
    load.mark("3 nodes");
    await settle();
  } finally {
    await load.stop();
  }
  const report = await loadReport(load);
  const [kept] = await eu1.sql`
    SELECT count(*) AS n FROM customer WHERE email NOT LIKE '%@load.test'`;
  return {
    procedure,
    load,
    report,
    moves,
    rowsBefore,
    rowsAfter: await countCustomers(eu1),
    originalRowsKept: kept.n as number,
  };
}

/**
 * One row per run for a comparison table: acknowledged, failed, blocked and
 * lost writes, how long the moves locked writes out, the slowest write, the
 * longest time without a successful write, and the original rows kept.
 */
export function underLoadRows(runs: readonly UnderLoadRun[]): Record<string, unknown>[] {
  return runs.map((run) => ({
    procedure: run.procedure === "source" ? "source (copy, then swap)" : "locked (one transaction)",
    "writes acknowledged": run.report.acknowledged,
    "writes failed": run.report.failedWrites,
    "reads failed": run.report.failedReads,
    "writes locked out (ms)": run.moves.reduce((sum, m) => sum + m.lockedMs, 0),
    "writes blocked": run.report.blockedWrites,
    "slowest write (ms)": run.report.slowestWriteMs,
    "longest gap without a write (ms)": run.report.longestGapMs,
    "acknowledged writes lost": run.report.lost.length,
    "original 1000 kept": run.originalRowsKept,
  }));
}

async function countCustomers(node: Node): Promise<number> {
  const [{ n }] = await node.sql`SELECT count(*) AS n FROM customer`;
  return n as number;
}

/**
 * Latency of several read paths (one {@link latencyFromRegions} run per path,
 * the path as its `step`), as grouped bars: one bar per path and user region.
 *
 * @example
 * ```ts
 * await show(lesson01.pathLatencyPlot(rows, { title: "Reading one customer by id" }));
 * ```
 */
export function pathLatencyPlot(
  rows: readonly RegionLatencyRow[],
  options: { title?: string; subtitle?: string } = {},
): Promise<Figure> {
  const data = rows.map((r) => ({
    ...r,
    label: `${r.step} · user in ${getRegion(r.region).city}`,
    user: getRegion(r.region).label,
  }));
  const longest = Math.max(10, ...data.map((d) => d.label.length));
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(rows[0]?.latencyScale),
    height: 70 + 26 * data.length,
    marginLeft: Math.min(340, 10 + longest * 6.4),
    marginRight: 70,
    y: { domain: data.map((d) => d.label), label: null },
    x: { label: "median latency (ms)", grid: true },
    color: { legend: true, label: "user region" },
    marks: [
      Plot.barX(data, { y: "label", x: "ms", fill: "user", inset: 2 }),
      Plot.text(data, {
        y: "label",
        x: "ms",
        text: (d: { ms: number }) => `${d.ms.toFixed(1)} ms`,
        textAnchor: "start",
        dx: 4,
      }),
      Plot.ruleX([0]),
    ],
  }));
}
