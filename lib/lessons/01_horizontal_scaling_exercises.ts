/**
 * The exercises of notebook 01, registered on import (the lesson module
 * imports this one): grow the UK to four nodes, shrink it to two, find the
 * duplicate ids. Also the baseline the checks compare against.
 *
 * The lesson module imports this module, so this one uses the lesson's
 * exports only inside functions (never while loading), and spells out the
 * notebook name.
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { type Displayable, table } from "../display.ts";
import { type CheckResult, defineExercise } from "../exercises.ts";
import { partitionTree } from "../inspect.ts";
import type { Node } from "../node.ts";
import { customerDdl, reset } from "./01_horizontal_scaling.ts";

const NOTEBOOK = "01_horizontal_scaling";

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

/**
 * Exercise 1's swap, run on eu_db_1: a new UK branch hashed MODULUS 4 over
 * eu_db_1..eu_db_4, filled by `copy`, swapped in for the old one, all under
 * one lock. The solution shows the same text.
 */
function modulus4Swap(copy = "INSERT INTO customer_uk_m4 SELECT * FROM customer_uk;"): string {
  return `BEGIN;
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
  ${copy}
  ALTER TABLE customer DETACH PARTITION customer_uk;
  ALTER TABLE customer ATTACH PARTITION customer_uk_m4 FOR VALUES IN ('uk');
  DROP TABLE customer_uk;
  COMMIT;`;
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
  ${modulus4Swap()}\`);
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
  await eu1.exec(copy ? modulus4Swap() : modulus4Swap(""));
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

/**
 * Exercise 2's swap, run on eu_db_1: a new UK branch hashed MODULUS 2 over
 * eu_db_1 and eu_db_2, filled from `source`, swapped in for the old one,
 * all under one lock. The solution shows the same text.
 */
function shrinkSwap(source = "SELECT * FROM customer_uk"): string {
  return `BEGIN;
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
  COMMIT;`;
}

const SHRINK_SOLUTION = `const eu1 = cluster.node("eu_db_1");
await cluster.node("eu_db_2").exec(\`
  CREATE TABLE customer_m2 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL,
    region VARCHAR(255) NOT NULL
  );\`);
await eu1.exec(\`
  ${shrinkSwap()}\`);
// Both old remote tables were copied; eu_db_3 now holds no customers.
for (const name of ["eu_db_2", "eu_db_3"]) await cluster.node(name).exec(\`DROP TABLE customer;\`);`;

async function solveShrink(cluster: Cluster, forgetEu3: boolean): Promise<void> {
  const eu1 = cluster.node("eu_db_1");
  await cluster.node("eu_db_2").exec(customerDdl("customer_m2", true));
  await eu1.exec(
    forgetEu3
      ? shrinkSwap(
        "SELECT * FROM customer_uk_partitioned_0 UNION ALL SELECT * FROM customer_uk_partitioned_1",
      )
      : shrinkSwap(),
  );
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

/** Exercise 3's answer, on eu_db_1 (the solution shows the same text). */
const DUPLICATE_IDS = `
  CREATE TABLE duplicate_ids AS
    SELECT id FROM customer GROUP BY id HAVING count(*) > 1;`;

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
  solution: `await cluster.node("eu_db_1").exec(\`${DUPLICATE_IDS}\`);`,
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
    await cluster.node("eu_db_1").exec(DUPLICATE_IDS);
  },
  async attemptWrong(cluster) {
    await cluster.node("eu_db_1").exec(`
      CREATE TABLE duplicate_ids AS
        SELECT id FROM customer_us GROUP BY id HAVING count(*) > 1;`);
  },
});
