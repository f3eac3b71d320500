/**
 * Lesson 01, horizontal scaling by hand: the source's SQL and steps as
 * functions (used by `reset()`, the tests and the exercises), and `reset()`.
 * The re-partitioning under load experiment and the read-path latency chart
 * are in 01_horizontal_scaling_measurements.ts, the exercises in
 * 01_horizontal_scaling_exercises.ts; this module re-exports both, so
 * `lesson01` in mod.ts has them all.
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
import { linkNodes } from "../fdw.ts";
import type { Node } from "../node.ts";
import { renameRemote, type SwapProcedure, swapTables } from "../repartition.ts";
import { sectionIndex } from "./_lesson.ts";
import { startExercises } from "./01_horizontal_scaling_exercises.ts";

export {
  duplicateIdsOnNodes,
  duplicates,
  modulus4,
  shrink,
  startExercises,
} from "./01_horizontal_scaling_exercises.ts";
export {
  pathLatencyPlot,
  runUnderLoad,
  type UnderLoadMove,
  type UnderLoadOptions,
  underLoadRows,
  type UnderLoadRun,
} from "./01_horizontal_scaling_measurements.ts";

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
  sectionIndex(NOTEBOOK, SECTIONS, section);
  const stage = STAGE[section];
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
