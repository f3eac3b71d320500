/**
 * Lesson 01, horizontal scaling by hand: the source's steps as functions
 * (used by `reset()`, the tests and the exercises), the re-partitioning
 * under load experiment, and the notebook's exercises.
 *
 * The notebook runs the source's SQL in its cells; the functions here run
 * the same SQL, so `reset(cluster, section)` reaches the state the notebook
 * has at the start of each section.
 *
 * ```ts
 * import { lesson01 } from "../lib/mod.ts";
 * await lesson01.reset(cluster, "year 2"); // 2 nodes, customer hashed MODULUS 2, 2000 rows
 * ```
 *
 * @module
 */

import type { Cluster, NodeOptions } from "../cluster.ts";
import { type Displayable, table } from "../display.ts";
import { WorkshopError } from "../errors.ts";
import { type CheckResult, defineExercise } from "../exercises.ts";
import { linkNodes } from "../fdw.ts";
import { partitionTree } from "../inspect.ts";
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

/** Notebook file name (without extension). */
export const NOTEBOOK = "01_horizontal_scaling";

/** The notebook's sections, in order; `reset()` reaches the state at the start of each. */
export const SECTIONS = [
  "before",
  "year 1",
  "year 2",
  "year 5",
  "scratchpad",
  "summary",
  "under load",
  "after",
  "exercises",
] as const;

/** A section of the notebook. */
export type Section = typeof SECTIONS[number];

/** The lesson's nodes: three in London, three in N. Virginia. */
export const NODES = {
  eu_db_1: { name: "eu_db_1", region: "eu-west-2", role: "coordinator" },
  eu_db_2: { name: "eu_db_2", region: "eu-west-2", role: "shard" },
  eu_db_3: { name: "eu_db_3", region: "eu-west-2", role: "shard" },
  us_db_1: { name: "us_db_1", region: "us-east-1", role: "shard" },
  us_db_2: { name: "us_db_2", region: "us-east-1", role: "shard" },
  us_db_3: { name: "us_db_3", region: "us-east-1", role: "shard" },
} as const satisfies Record<string, NodeOptions>;

type LessonNode = keyof typeof NODES;

/** Rows a bulk insert sends per round trip to a US node once the notebook set it. */
export const US_BATCH_SIZE = 100;

// ---------------------------------------------------------------------------
// The source's SQL

/** The source's customer table (with the year-5 region column when asked). */
export function customerDdl(name = "customer", withRegion = false): string {
  return `CREATE TABLE ${name} (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  email VARCHAR(255) NOT NULL${withRegion ? ",\n  region VARCHAR(255) NOT NULL" : ""}
);`;
}

/** The source's 1000-row insert (with a random uk/us region in year 5). */
export function insertCustomers(withRegion = false): string {
  return withRegion
    ? `INSERT INTO customer (id, email, region)
  SELECT
    gen_random_uuid(),
    CONCAT(gen_random_uuid(), '@gmail.com'),
    ('{uk, us}'::TEXT[])[CEIL(RANDOM()*2)]
  FROM generate_series(1, 1000);`
    : `INSERT INTO customer (id, email)
  SELECT
    gen_random_uuid(),
    CONCAT(gen_random_uuid(), '@gmail.com')
  FROM generate_series(1, 1000);`;
}

const YEAR1_PARTITIONS = `CREATE TABLE customer_partitioned
  (LIKE customer)
  PARTITION BY HASH (id);

CREATE TABLE customer_0 PARTITION OF customer_partitioned
  FOR VALUES WITH (MODULUS 2, REMAINDER 0);

CREATE FOREIGN TABLE customer_1
  PARTITION OF customer_partitioned
  FOR VALUES WITH (MODULUS 2, REMAINDER 1)
  SERVER eu_db_2
  OPTIONS (
    table_name 'customer'
  );`;

const YEAR2_PARTITIONS = `CREATE TABLE customer_partitioned
  (LIKE customer)
  PARTITION BY HASH (id);

CREATE TABLE customer_0_new PARTITION OF customer_partitioned
  FOR VALUES WITH (MODULUS 3, REMAINDER 0);

CREATE FOREIGN TABLE customer_1_new
  PARTITION OF customer_partitioned
  FOR VALUES WITH (MODULUS 3, REMAINDER 1)
  SERVER eu_db_2
  OPTIONS (
    table_name 'customer_new'
  );

CREATE FOREIGN TABLE customer_2_new
  PARTITION OF customer_partitioned
  FOR VALUES WITH (MODULUS 3, REMAINDER 2)
  SERVER eu_db_3
  OPTIONS (
    table_name 'customer'
  );`;

const YEAR5_PARTITIONS = `CREATE TABLE customer_partitioned (
  LIKE customer,
  region VARCHAR(255) NOT NULL DEFAULT 'uk'
)
PARTITION BY LIST (region);

CREATE TABLE customer_us PARTITION OF customer_partitioned
FOR VALUES IN ('us')
PARTITION BY HASH (id);

CREATE FOREIGN TABLE customer_us_partitioned_0
  PARTITION OF customer_us
  FOR VALUES WITH (MODULUS 3, REMAINDER 0)
  SERVER us_db_1
  OPTIONS (
    table_name 'customer'
  );

CREATE FOREIGN TABLE customer_us_partitioned_1
  PARTITION OF customer_us
  FOR VALUES WITH (MODULUS 3, REMAINDER 1)
  SERVER us_db_2
  OPTIONS (
    table_name 'customer'
  );

CREATE FOREIGN TABLE customer_us_partitioned_2
  PARTITION OF customer_us
  FOR VALUES WITH (MODULUS 3, REMAINDER 2)
  SERVER us_db_3
  OPTIONS (
    table_name 'customer'
  );

CREATE TABLE customer_uk PARTITION OF customer_partitioned
FOR VALUES IN ('uk')
PARTITION BY HASH (id);

CREATE TABLE customer_uk_partitioned_0 PARTITION OF customer_uk
  FOR VALUES WITH (MODULUS 3, REMAINDER 0);

CREATE FOREIGN TABLE customer_uk_partitioned_1
  PARTITION OF customer_uk
  FOR VALUES WITH (MODULUS 3, REMAINDER 1)
  SERVER eu_db_2
  OPTIONS (
    table_name 'customer_new'
  );

CREATE FOREIGN TABLE customer_uk_partitioned_2
  PARTITION OF customer_uk
  FOR VALUES WITH (MODULUS 3, REMAINDER 2)
  SERVER eu_db_3
  OPTIONS (
    table_name 'customer_new'
  );`;

/** The source's "rename customer_new to customer" on a shard. */
export const RENAME_ON_SHARD = `BEGIN;
DROP TABLE customer;
ALTER TABLE customer_new RENAME TO customer;
COMMIT;`;

/** The source's "alter the foreign table back to customer" on eu_db_1. */
export function pointBack(foreignTable: string): string {
  return `ALTER FOREIGN TABLE ${foreignTable}
OPTIONS (
  SET table_name 'customer'
);`;
}

// ---------------------------------------------------------------------------
// The steps

async function enableFdw(...nodes: Node[]): Promise<void> {
  for (const node of nodes) await node.exec(`CREATE EXTENSION IF NOT EXISTS postgres_fdw;`);
}

/** Before: the customer table on eu_db_1 with 1000 rows. */
export async function createCustomers(cluster: Cluster): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  await eu1.exec(`${customerDdl()}\n\n${insertCustomers()}`);
}

/** Year 1 up to the copy: eu_db_2, its table, the foreign server, the empty partitioned table. */
export async function prepareYear1(cluster: Cluster): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  const eu2 = await cluster.addNode(NODES.eu_db_2);
  await enableFdw(eu1, eu2);
  await eu2.exec(customerDdl());
  await linkNodes(eu1, eu2);
  await eu1.exec(YEAR1_PARTITIONS);
}

/** Year 1 in full: prepare, copy and swap (by `procedure`), 1000 more rows. */
export async function year1(cluster: Cluster, procedure: SwapProcedure = "source"): Promise<void> {
  await prepareYear1(cluster);
  const eu1 = cluster.node("eu_db_1");
  await swapTables(eu1, { table: "customer", replacement: "customer_partitioned", procedure });
  await eu1.exec(insertCustomers());
}

/** Year 2 up to the copy: eu_db_3, customer_new on eu_db_2, the MODULUS 3 table. */
export async function prepareYear2(cluster: Cluster): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  const eu2 = cluster.node("eu_db_2");
  const eu3 = await cluster.addNode(NODES.eu_db_3);
  await enableFdw(eu3);
  await eu3.exec(customerDdl());
  await linkNodes(eu1, eu3);
  await eu2.exec(customerDdl("customer_new"));
  await eu1.exec(YEAR2_PARTITIONS);
}

/** The renames the year-2 swap does after the new table took the name "customer". */
export const YEAR2_RENAMES: [string, string][] = [
  ["customer_0_new", "customer_0"],
  ["customer_1_new", "customer_1"],
  ["customer_2_new", "customer_2"],
];

/** Year 2 in full: prepare, copy and swap, 1000 more rows, the rename dance on eu_db_2. */
export async function year2(cluster: Cluster, procedure: SwapProcedure = "source"): Promise<void> {
  await prepareYear2(cluster);
  const eu1 = cluster.node("eu_db_1");
  await swapTables(eu1, {
    table: "customer",
    replacement: "customer_partitioned",
    procedure,
    renames: YEAR2_RENAMES,
  });
  await eu1.exec(insertCustomers());
  await renameRemote(eu1, {
    remote: cluster.node("eu_db_2"),
    remoteSql: RENAME_ON_SHARD,
    coordinatorSql: pointBack("customer_1"),
    table: "customer",
    procedure,
  });
}

/** Options for {@link prepareYear5}. */
export interface Year5Options {
  /** postgres_fdw batch_size on the US foreign servers (unset: postgres_fdw's default, 1). @default undefined */
  usBatchSize?: number;
}

/** Year 5 up to the copy: the US nodes, their tables, customer_new on eu_db_2/3, LIST+HASH layout. */
export async function prepareYear5(cluster: Cluster, options: Year5Options = {}): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  const us = await cluster.addNodes([NODES.us_db_1, NODES.us_db_2, NODES.us_db_3]);
  await enableFdw(...us);
  for (const node of us) await node.exec(customerDdl("customer", true));
  for (const name of ["eu_db_2", "eu_db_3"]) {
    await cluster.node(name).exec(customerDdl("customer_new", true));
  }
  for (const node of us) await linkNodes(eu1, node, { batchSize: options.usBatchSize });
  await eu1.exec(YEAR5_PARTITIONS);
}

/** Year 5 in full: prepare, copy and swap, 1000 uk/us rows, the rename dance on eu_db_2 and eu_db_3. */
export async function year5(
  cluster: Cluster,
  options: Year5Options & { procedure?: SwapProcedure } = {},
): Promise<void> {
  await prepareYear5(cluster, options);
  const eu1 = cluster.node("eu_db_1");
  const procedure = options.procedure ?? "source";
  await swapTables(eu1, { table: "customer", replacement: "customer_partitioned", procedure });
  await eu1.exec(insertCustomers(true));
  const renames = [
    ["eu_db_2", "customer_uk_partitioned_1"],
    ["eu_db_3", "customer_uk_partitioned_2"],
  ];
  for (const [shard, foreign] of renames) {
    await renameRemote(eu1, {
      remote: cluster.node(shard),
      remoteSql: RENAME_ON_SHARD,
      coordinatorSql: pointBack(foreign),
      table: "customer",
      procedure,
    });
  }
}

/**
 * The scratchpad: three rows inserted directly into us_db_1, then a row on
 * us_db_1 with the id of an existing UK customer. Returns that id.
 */
export async function scratchpad(cluster: Cluster): Promise<string> {
  const us1 = cluster.node("us_db_1");
  for (const i of [1, 2, 3]) {
    await us1.exec(
      `INSERT INTO customer (email, region) VALUES ('us_${i}@gmail.com', 'us');`,
    );
  }
  const id = await existingUkId(cluster);
  await us1.exec(
    `INSERT INTO customer (id, email, region) VALUES ('${id}', 'us_3@gmail.com', 'us');`,
  );
  return id;
}

/** The id the scratchpad duplicates: the first UK customer on eu_db_1, by id. */
export async function existingUkId(cluster: Cluster): Promise<string> {
  const [row] = await cluster.node("eu_db_1").sql`
    SELECT id::text FROM customer_uk_partitioned_0 ORDER BY id LIMIT 1`;
  return row.id as string;
}

// ---------------------------------------------------------------------------
// Reset

const STAGE: Record<Section, number> = {
  "before": 0,
  "year 1": 1,
  "year 2": 2,
  "year 5": 3,
  "scratchpad": 4,
  "summary": 5,
  "under load": 5,
  "after": 5,
  "exercises": 6,
};

const NODES_AT_STAGE: LessonNode[][] = [
  ["eu_db_1"],
  ["eu_db_1"],
  ["eu_db_1", "eu_db_2"],
  ["eu_db_1", "eu_db_2", "eu_db_3"],
  ["eu_db_1", "eu_db_2", "eu_db_3", "us_db_1", "us_db_2", "us_db_3"],
];

/** Options for {@link reset}. */
export interface ResetOptions {
  /** Keep (and wipe) lesson nodes that the section does not have yet, instead of removing them. @default false */
  keepNodes?: boolean;
}

/**
 * Brings a cluster (fresh, half-way, or broken by a learner) to the state at
 * the start of `section`: the nodes the notebook has there, each wiped, then
 * the source's steps up to that point. Nodes that are not part of the lesson
 * (an exercise's eu_db_4) are removed. Stop your workloads first.
 *
 * @example
 * ```ts
 * await lesson01.reset(cluster, "year 5"); // 3 EU nodes, customer hashed MODULUS 3, 3000 rows
 * ```
 */
export async function reset(
  cluster: Cluster,
  section: Section,
  options: ResetOptions = {},
): Promise<void> {
  const stage = STAGE[section];
  if (stage === undefined) {
    throw new WorkshopError("INVALID_SETTING", `Unknown section "${section}" of notebook 01`, {
      fix: `Use one of: ${SECTIONS.map((name) => `"${name}"`).join(", ")}`,
    });
  }
  const wanted = NODES_AT_STAGE[Math.min(stage, 4)];
  for (const node of cluster.nodes) {
    const lesson = node.name in NODES;
    if (!lesson || (!options.keepNodes && !wanted.includes(node.name as LessonNode))) {
      await cluster.removeNode(node.name);
    }
  }
  await cluster.addNodes(wanted.map((name) => NODES[name]));
  for (const node of cluster.nodes) {
    if (node.stopped) await node.restart();
    await wipe(node);
  }
  if (stage >= 1) await createCustomers(cluster);
  if (stage >= 2) await year1(cluster);
  if (stage >= 3) await year2(cluster);
  if (stage >= 4) await year5(cluster, { usBatchSize: US_BATCH_SIZE });
  if (stage >= 5) await scratchpad(cluster);
  if (stage >= 6) await startExercises(cluster);
}

async function wipe(node: Node): Promise<void> {
  await node.exec(`BEGIN;
SET LOCAL lock_timeout = '10s';
DROP EXTENSION IF EXISTS postgres_fdw CASCADE;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMIT;`);
}

// ---------------------------------------------------------------------------
// Re-partitioning under load

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

// ---------------------------------------------------------------------------
// Exercises

const BASELINE = "exercise_baseline";

/**
 * Records who the customers are before the exercises (a table
 * `exercise_baseline` of ids and regions on eu_db_1, kept if it exists), so
 * the checks can tell whether a re-partitioning lost anyone. Returns a
 * summary to show.
 *
 * @example
 * ```ts
 * await show(await lesson01.startExercises(cluster));
 * ```
 */
export async function startExercises(cluster: Cluster): Promise<Displayable> {
  const eu1 = cluster.node("eu_db_1");
  await eu1.exec(
    `CREATE TABLE IF NOT EXISTS ${BASELINE} AS SELECT id, region FROM customer;`,
  );
  const rows = await eu1.sql`
    SELECT region, count(*) AS customers FROM ${eu1.sql(BASELINE)} GROUP BY region ORDER BY region`;
  return table(rows, { caption: "customers recorded before the exercises (exercise_baseline)" });
}

interface UkLeaf {
  partition: string;
  modulus: number;
  remainder: number;
  node: string | null;
}

/** The partition of customer that holds region 'uk' (customer_uk, or whatever replaced it). */
async function ukBranch(eu1: Node): Promise<string | null> {
  const [row] = await eu1.sql`
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'customer'::regclass
      AND pg_get_expr(c.relpartbound, c.oid) LIKE '%''uk''%'`;
  return (row?.relname as string | undefined) ?? null;
}

async function ukLeaves(eu1: Node): Promise<UkLeaf[]> {
  const branch = await ukBranch(eu1);
  if (!branch) return [];
  const tree = await partitionTree(eu1, branch);
  return tree.filter((p) => p.kind !== "partitioned").map((p) => {
    const m = /modulus (\d+), remainder (\d+)/i.exec(p.bound ?? "");
    return {
      partition: p.partition,
      modulus: m ? Number(m[1]) : NaN,
      remainder: m ? Number(m[2]) : NaN,
      node: p.node,
    };
  }).sort((a, b) => a.remainder - b.remainder);
}

function isOriginalUk(leaves: UkLeaf[]): boolean {
  return leaves.length === 3 &&
    leaves.every((l, i) => l.modulus === 3 && l.node === `eu_db_${i + 1}`) &&
    leaves.map((l) => l.partition).join() ===
      "customer_uk_partitioned_0,customer_uk_partitioned_1,customer_uk_partitioned_2";
}

async function hasBaseline(eu1: Node): Promise<boolean> {
  const [row] = await eu1.sql`SELECT to_regclass(${BASELINE}) IS NOT NULL AS present`;
  return row.present as boolean;
}

/** UK customers of the baseline missing from the UK branch, and the row counts. */
async function ukConservation(
  eu1: Node,
): Promise<{ missing: number; expected: number; actual: number }> {
  const [row] = await eu1.sql`
    SELECT
      (SELECT count(*) FROM exercise_baseline b
        WHERE b.region = 'uk' AND NOT EXISTS (
          SELECT 1 FROM customer c WHERE c.region = 'uk' AND c.id = b.id)) AS missing,
      (SELECT count(*) FROM exercise_baseline WHERE region = 'uk') AS expected,
      (SELECT count(*) FROM customer WHERE region = 'uk') AS actual`;
  return {
    missing: row.missing as number,
    expected: row.expected as number,
    actual: row.actual as number,
  };
}

function joinAnd(items: string[]): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

function describeLeaves(leaves: UkLeaf[]): string {
  return leaves.map((l) => `${l.partition} (MODULUS ${l.modulus}) on ${l.node ?? "?"}`).join(
    ", ",
  ) || "no partitions";
}

async function rehashCheck(
  cluster: Cluster,
  target: { nodes: string[]; extraNode?: string },
): Promise<CheckResult> {
  if (!cluster.has("eu_db_1")) {
    return {
      status: "wrong",
      message:
        'eu_db_1 is not in the cluster; start over with await lesson01.reset(cluster, "exercises")',
    };
  }
  const eu1 = cluster.node("eu_db_1");
  if (!(await hasBaseline(eu1))) {
    return {
      status: "not-attempted",
      message:
        "run await lesson01.startExercises(cluster) first, so the check knows who the customers are",
    };
  }
  const leaves = await ukLeaves(eu1);
  const extraMissing = target.extraNode && !cluster.has(target.extraNode);
  if (isOriginalUk(leaves) && (extraMissing || !target.extraNode)) {
    return {
      status: "not-attempted",
      message: `customer_uk is still hashed over eu_db_1, eu_db_2 and eu_db_3 (MODULUS 3)${
        extraMissing ? ` and there is no ${target.extraNode} yet` : ""
      }`,
    };
  }
  if (extraMissing) {
    return {
      status: "wrong",
      message:
        `add ${target.extraNode} first: await cluster.addNode({ name: "${target.extraNode}", region: "eu-west-2", role: "shard" })`,
    };
  }
  const n = target.nodes.length;
  if (leaves.length !== n || leaves.some((l) => l.modulus !== n)) {
    return {
      status: "wrong",
      message:
        `customer_uk should have ${n} hash partitions with MODULUS ${n}; it has ${leaves.length}: ${
          describeLeaves(leaves)
        }`,
    };
  }
  const placed = leaves.map((l) => l.node ?? "?").sort();
  if (placed.join() !== [...target.nodes].sort().join()) {
    return {
      status: "wrong",
      message: `each of ${joinAnd(target.nodes)} should hold one partition; now: ${
        describeLeaves(leaves)
      }`,
    };
  }
  const rows = await ukConservation(eu1);
  if (rows.missing > 0) {
    return {
      status: "wrong",
      message:
        `the layout is right, but ${rows.missing} of the ${rows.expected} UK customers from before are missing: copy the rows before dropping the old partitions`,
    };
  }
  if (rows.actual !== rows.expected) {
    return {
      status: "wrong",
      message:
        `customer_uk holds ${rows.actual} rows but there were ${rows.expected} UK customers: some were copied twice`,
    };
  }
  return {
    status: "correct",
    message: `customer_uk is hashed over ${
      joinAnd(target.nodes)
    } with MODULUS ${n}, and all ${rows.expected} UK customers are there`,
  };
}

const EU4_SOLUTION = `const eu1 = cluster.node("eu_db_1");
const eu4 = await cluster.addNode({ name: "eu_db_4", region: "eu-west-2", role: "shard" });
const to4 = await cluster.peerRoute(eu1, eu4);
await eu4.exec(\`
  CREATE EXTENSION IF NOT EXISTS postgres_fdw;
  CREATE TABLE customer (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL,
    region VARCHAR(255) NOT NULL
  );\`);
await eu1.exec(\`
  CREATE SERVER eu_db_4 FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '\${to4.host}', port '\${to4.port}', dbname '\${eu4.database}');
  CREATE USER MAPPING FOR postgres SERVER eu_db_4
    OPTIONS (user 'postgres', password '\${eu4.password}');\`);
for (const name of ["eu_db_2", "eu_db_3"]) {
  await cluster.node(name).exec(\`
    CREATE TABLE customer_m4 (
      id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
      email VARCHAR(255) NOT NULL,
      region VARCHAR(255) NOT NULL
    );\`);
}
// Copy and swap in one transaction: writes wait instead of being lost.
await eu1.exec(\`
  BEGIN;
  LOCK TABLE customer IN EXCLUSIVE MODE;
  CREATE TABLE customer_uk_m4 (LIKE customer_uk) PARTITION BY HASH (id);
  CREATE TABLE customer_uk_m4_0 PARTITION OF customer_uk_m4
    FOR VALUES WITH (MODULUS 4, REMAINDER 0);
  CREATE FOREIGN TABLE customer_uk_m4_1 PARTITION OF customer_uk_m4
    FOR VALUES WITH (MODULUS 4, REMAINDER 1) SERVER eu_db_2 OPTIONS (table_name 'customer_m4');
  CREATE FOREIGN TABLE customer_uk_m4_2 PARTITION OF customer_uk_m4
    FOR VALUES WITH (MODULUS 4, REMAINDER 2) SERVER eu_db_3 OPTIONS (table_name 'customer_m4');
  CREATE FOREIGN TABLE customer_uk_m4_3 PARTITION OF customer_uk_m4
    FOR VALUES WITH (MODULUS 4, REMAINDER 3) SERVER eu_db_4 OPTIONS (table_name 'customer');
  INSERT INTO customer_uk_m4 SELECT * FROM customer_uk;
  ALTER TABLE customer DETACH PARTITION customer_uk;
  ALTER TABLE customer ATTACH PARTITION customer_uk_m4 FOR VALUES IN ('uk');
  DROP TABLE customer_uk;
  COMMIT;\`);
// The old remote tables were copied; drop them.
for (const name of ["eu_db_2", "eu_db_3"]) await cluster.node(name).exec(\`DROP TABLE customer;\`);`;

async function solveModulus4(cluster: Cluster, copy: boolean): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  const eu4 = await cluster.addNode({ name: "eu_db_4", region: "eu-west-2", role: "shard" });
  const to4 = await cluster.peerRoute(eu1, eu4);
  await eu4.exec(`CREATE EXTENSION IF NOT EXISTS postgres_fdw;\n${customerDdl("customer", true)}`);
  await eu1.exec(`
    CREATE SERVER eu_db_4 FOREIGN DATA WRAPPER postgres_fdw
      OPTIONS (host '${to4.host}', port '${to4.port}', dbname '${eu4.database}');
    CREATE USER MAPPING FOR postgres SERVER eu_db_4
      OPTIONS (user 'postgres', password '${eu4.password}');`);
  for (const name of ["eu_db_2", "eu_db_3"]) {
    await cluster.node(name).exec(customerDdl("customer_m4", true));
  }
  await eu1.exec(`
    BEGIN;
    LOCK TABLE customer IN EXCLUSIVE MODE;
    CREATE TABLE customer_uk_m4 (LIKE customer_uk) PARTITION BY HASH (id);
    CREATE TABLE customer_uk_m4_0 PARTITION OF customer_uk_m4
      FOR VALUES WITH (MODULUS 4, REMAINDER 0);
    CREATE FOREIGN TABLE customer_uk_m4_1 PARTITION OF customer_uk_m4
      FOR VALUES WITH (MODULUS 4, REMAINDER 1) SERVER eu_db_2 OPTIONS (table_name 'customer_m4');
    CREATE FOREIGN TABLE customer_uk_m4_2 PARTITION OF customer_uk_m4
      FOR VALUES WITH (MODULUS 4, REMAINDER 2) SERVER eu_db_3 OPTIONS (table_name 'customer_m4');
    CREATE FOREIGN TABLE customer_uk_m4_3 PARTITION OF customer_uk_m4
      FOR VALUES WITH (MODULUS 4, REMAINDER 3) SERVER eu_db_4 OPTIONS (table_name 'customer');
    ${copy ? "INSERT INTO customer_uk_m4 SELECT * FROM customer_uk;" : ""}
    ALTER TABLE customer DETACH PARTITION customer_uk;
    ALTER TABLE customer ATTACH PARTITION customer_uk_m4 FOR VALUES IN ('uk');
    DROP TABLE customer_uk;
    COMMIT;`);
  for (const name of ["eu_db_2", "eu_db_3"]) await cluster.node(name).exec(`DROP TABLE customer;`);
}

/** Exercise 1: add eu_db_4 and re-partition the UK customers to MODULUS 4, losing no one. */
export const modulus4 = defineExercise({
  id: "01.modulus4",
  notebook: NOTEBOOK,
  title: "Grow the UK to four nodes",
  prompt:
    "The UK user base keeps growing. Add `eu_db_4` (eu-west-2) and re-partition `customer_uk` to " +
    "`MODULUS 4`, one partition on each of eu_db_1..eu_db_4, without losing a single customer.",
  hints: [
    "A hash partition's MODULUS cannot be changed in place: build a new partitioned table for the UK " +
    "branch (`CREATE TABLE customer_uk_m4 (LIKE customer_uk) PARTITION BY HASH (id)`) with four partitions.",
    "eu_db_4 needs the extension, a `customer` table with the region column, and a foreign server plus " +
    "user mapping on eu_db_1 (`cluster.peerRoute(eu1, eu4)` gives the host and port). eu_db_2 and eu_db_3 " +
    "need a new table for their new share (e.g. `customer_m4`), because their `customer` still holds the old one.",
    "Swap the branch in one transaction: `LOCK TABLE customer IN EXCLUSIVE MODE`, copy with " +
    "`INSERT INTO customer_uk_m4 SELECT * FROM customer_uk`, `DETACH PARTITION customer_uk`, " +
    "`ATTACH PARTITION customer_uk_m4 FOR VALUES IN ('uk')`, drop the old branch, COMMIT.",
  ],
  solution: EU4_SOLUTION,
  setup: (cluster) => reset(cluster, "exercises"),
  check: (cluster) =>
    rehashCheck(cluster, {
      nodes: ["eu_db_1", "eu_db_2", "eu_db_3", "eu_db_4"],
      extraNode: "eu_db_4",
    }),
  solve: (cluster) => solveModulus4(cluster, true),
  attemptWrong: (cluster) => solveModulus4(cluster, false),
});

const SHRINK_SOLUTION = `const eu1 = cluster.node("eu_db_1");
await cluster.node("eu_db_2").exec(\`
  CREATE TABLE customer_m2 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL,
    region VARCHAR(255) NOT NULL
  );\`);
await eu1.exec(\`
  BEGIN;
  LOCK TABLE customer IN EXCLUSIVE MODE;
  CREATE TABLE customer_uk_m2 (LIKE customer_uk) PARTITION BY HASH (id);
  CREATE TABLE customer_uk_m2_0 PARTITION OF customer_uk_m2
    FOR VALUES WITH (MODULUS 2, REMAINDER 0);
  CREATE FOREIGN TABLE customer_uk_m2_1 PARTITION OF customer_uk_m2
    FOR VALUES WITH (MODULUS 2, REMAINDER 1) SERVER eu_db_2 OPTIONS (table_name 'customer_m2');
  INSERT INTO customer_uk_m2 SELECT * FROM customer_uk;
  ALTER TABLE customer DETACH PARTITION customer_uk;
  ALTER TABLE customer ATTACH PARTITION customer_uk_m2 FOR VALUES IN ('uk');
  DROP TABLE customer_uk;
  COMMIT;\`);
// Both old remote tables were copied; eu_db_3 now holds no customers.
for (const name of ["eu_db_2", "eu_db_3"]) await cluster.node(name).exec(\`DROP TABLE customer;\`);`;

async function solveShrink(cluster: Cluster, forgetEu3: boolean): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  await cluster.node("eu_db_2").exec(customerDdl("customer_m2", true));
  const source = forgetEu3
    ? "SELECT * FROM customer_uk_partitioned_0 UNION ALL SELECT * FROM customer_uk_partitioned_1"
    : "SELECT * FROM customer_uk";
  await eu1.exec(`
    BEGIN;
    LOCK TABLE customer IN EXCLUSIVE MODE;
    CREATE TABLE customer_uk_m2 (LIKE customer_uk) PARTITION BY HASH (id);
    CREATE TABLE customer_uk_m2_0 PARTITION OF customer_uk_m2
      FOR VALUES WITH (MODULUS 2, REMAINDER 0);
    CREATE FOREIGN TABLE customer_uk_m2_1 PARTITION OF customer_uk_m2
      FOR VALUES WITH (MODULUS 2, REMAINDER 1) SERVER eu_db_2 OPTIONS (table_name 'customer_m2');
    INSERT INTO customer_uk_m2 ${source};
    ALTER TABLE customer DETACH PARTITION customer_uk;
    ALTER TABLE customer ATTACH PARTITION customer_uk_m2 FOR VALUES IN ('uk');
    DROP TABLE customer_uk;
    COMMIT;`);
  for (const name of ["eu_db_2", "eu_db_3"]) await cluster.node(name).exec(`DROP TABLE customer;`);
}

/** Exercise 2: shrink the UK from three nodes to two. */
export const shrink = defineExercise({
  id: "01.shrink",
  notebook: NOTEBOOK,
  title: "Shrink the UK back to two nodes",
  prompt:
    "The UK user base shrinks and eu_db_3 should go. Re-partition `customer_uk` to `MODULUS 2` on " +
    "eu_db_1 (local) and eu_db_2, so that no partition lives on eu_db_3, without losing a customer.",
  hints: [
    "Going from MODULUS 3 to MODULUS 2 moves far more than eu_db_3's third (the summary counted it): " +
    "build a whole new UK branch, `CREATE TABLE customer_uk_m2 (LIKE customer_uk) PARTITION BY HASH (id)`.",
    "eu_db_2's `customer` holds its current share, so give it a new table (`customer_m2`) for the new one.",
    "In one transaction with `LOCK TABLE customer IN EXCLUSIVE MODE`: copy from `customer_uk` (all three " +
    "old partitions, including eu_db_3's), DETACH the old branch, ATTACH the new one FOR VALUES IN ('uk'), " +
    "drop the old branch.",
  ],
  solution: SHRINK_SOLUTION,
  setup: (cluster) => reset(cluster, "exercises"),
  check: (cluster) => rehashCheck(cluster, { nodes: ["eu_db_1", "eu_db_2"] }),
  solve: (cluster) => solveShrink(cluster, false),
  attemptWrong: (cluster) => solveShrink(cluster, true),
});

/**
 * The ids stored more than once across the nodes, read from every leaf
 * partition's table on the node that holds it (not through eu_db_1).
 */
export async function duplicateIdsOnNodes(cluster: Cluster): Promise<string[]> {
  const eu1 = cluster.node("eu_db_1");
  const leaves = (await partitionTree(eu1, "customer")).filter((p) => p.kind !== "partitioned");
  const seen = new Map<string, number>();
  for (const leaf of leaves) {
    const holder = cluster.node(leaf.node ?? "eu_db_1");
    const [schema, name] = (leaf.remoteTable ?? `${leaf.schema}.${leaf.partition}`).split(".");
    const rows = await holder.sql`SELECT id::text FROM ${holder.sql(schema)}.${holder.sql(name)}`;
    for (const r of rows) seen.set(r.id as string, (seen.get(r.id as string) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([id]) => id).sort();
}

/** Exercise 3: find the ids stored more than once, with one query on eu_db_1. */
export const duplicates = defineExercise({
  id: "01.duplicates",
  notebook: NOTEBOOK,
  title: "Find the duplicate ids",
  prompt:
    "Nothing stops two nodes from holding the same id. With one query on eu_db_1, find every id " +
    "that is stored more than once across the cluster and save them as a table: " +
    "`CREATE TABLE duplicate_ids AS SELECT ...` (one column, `id`).",
  hints: [
    "Through eu_db_1, `customer` is every row on every node: group it by id.",
    "Only the whole table sees both copies: the scratchpad's duplicate is a UK customer's id stored on a US node.",
  ],
  solution: `await cluster.node("eu_db_1").exec(\`
  CREATE TABLE duplicate_ids AS
    SELECT id FROM customer GROUP BY id HAVING count(*) > 1;\`);`,
  setup: (cluster) => reset(cluster, "exercises"),
  async check(cluster) {
    const eu1 = cluster.node("eu_db_1");
    const [{ present }] = await eu1.sql`SELECT to_regclass('duplicate_ids') IS NOT NULL AS present`;
    if (!present) {
      return {
        status: "not-attempted",
        message: "there is no table duplicate_ids on eu_db_1 yet",
      };
    }
    const [{ hasId }] = await eu1.sql`
      SELECT EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_name = 'duplicate_ids' AND column_name = 'id') AS "hasId"`;
    if (!hasId) {
      return { status: "wrong", message: "duplicate_ids needs a column named id" };
    }
    const answer = new Set(
      (await eu1.sql`SELECT DISTINCT id::text FROM duplicate_ids`).map((r) => r.id as string),
    );
    const truth = await duplicateIdsOnNodes(cluster);
    const missing = truth.filter((id) => !answer.has(id));
    const extra = [...answer].filter((id) => !truth.includes(id));
    if (missing.length || extra.length) {
      return {
        status: "wrong",
        message:
          `duplicate_ids has ${answer.size} id(s); ${truth.length} id(s) are stored more than once` +
          (missing.length ? `, ${missing.length} of them missing from your table` : "") +
          (extra.length ? `, and ${extra.length} of yours are stored only once` : ""),
      };
    }
    return {
      status: "correct",
      message: `${truth.length} id(s) stored more than once: ${truth.join(", ")}`,
    };
  },
  async solve(cluster) {
    await cluster.node("eu_db_1").exec(`
      CREATE TABLE duplicate_ids AS
        SELECT id FROM customer GROUP BY id HAVING count(*) > 1;`);
  },
  async attemptWrong(cluster) {
    await cluster.node("eu_db_1").exec(`
      CREATE TABLE duplicate_ids AS
        SELECT id FROM customer_us GROUP BY id HAVING count(*) > 1;`);
  },
});
