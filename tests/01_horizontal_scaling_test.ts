/**
 * Tests of lesson 01 (horizontal scaling): the source's steps on real
 * PostgreSQL nodes, the catalog they leave, re-partitioning under load, the
 * workload's marks and percentiles, reset() and the exercises.
 */

import assert from "node:assert/strict";
import {
  type Cluster,
  distribution,
  exercise,
  foreignServers,
  lesson01,
  loadReport,
  type Node,
  rowsPerNode,
  startCluster,
  startWorkload,
  swapTables,
  totalRows,
  type Workload,
} from "../lib/mod.ts";
import { latencyPercentiles, latencyTimeline } from "../lib/plot_latency.ts";

function lessonCluster(name: string): Promise<Cluster> {
  return startCluster({ name, nodes: [lesson01.NODES.eu_db_1] });
}

async function count(node: Node, relation = "customer"): Promise<number> {
  const [{ n }] = await node.sql`SELECT count(*) AS n FROM ${node.sql(relation)}`;
  return n as number;
}

/** Rows per node, counted on each node; the sum must equal the coordinator's count. */
async function conserved(cluster: Cluster): Promise<Record<string, number>> {
  const eu1 = cluster.node("eu_db_1");
  const shards = await distribution(eu1, "customer");
  assert.equal(totalRows(shards), await count(eu1), "rows on the nodes == rows through eu_db_1");
  for (const shard of shards.filter((s) => s.kind === "foreign")) {
    assert.equal(
      await count(eu1, shard.partition),
      shard.rows,
      `${shard.partition} through postgres_fdw == ${shard.remoteTable} on ${shard.node}`,
    );
  }
  return rowsPerNode(shards);
}

function sum(perNode: Record<string, number>): number {
  return Object.values(perNode).reduce((a, b) => a + b, 0);
}

async function leaves(eu1: Node, parent: string): Promise<Record<string, unknown>[]> {
  return [
    ...await eu1.sql`
    SELECT c.relname AS name, c.relkind AS kind, pg_get_expr(c.relpartbound, c.oid) AS bound,
           s.srvname AS server, f.ftoptions AS options
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    LEFT JOIN pg_foreign_table f ON f.ftrelid = c.oid
    LEFT JOIN pg_foreign_server s ON s.oid = f.ftserver
    WHERE i.inhparent = ${parent}::regclass
    ORDER BY c.relname`,
  ];
}

async function tables(node: Node): Promise<string[]> {
  const rows = await node.sql`
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f') ORDER BY 1`;
  return rows.map((r) => r.relname as string);
}

Deno.test("year1(), year2() and year5() keep every row through each swap, counted on each node", async () => {
  await using cluster = await lessonCluster("t-l01-conserve");
  await lesson01.reset(cluster, "year 1");
  const eu1 = cluster.node("eu_db_1");
  assert.equal(await count(eu1), 1000);

  await lesson01.prepareYear1(cluster);
  await swapTables(eu1, {
    table: "customer",
    replacement: "customer_partitioned",
    procedure: "source",
  });
  const y1 = await conserved(cluster);
  assert.deepEqual(Object.keys(y1).sort(), ["eu_db_1", "eu_db_2"]);
  assert.equal(sum(y1), 1000, "the year-1 swap keeps the 1000 rows");
  await eu1.exec(lesson01.insertCustomers());
  assert.equal(sum(await conserved(cluster)), 2000);

  await lesson01.prepareYear2(cluster);
  await swapTables(eu1, {
    table: "customer",
    replacement: "customer_partitioned",
    procedure: "source",
    renames: lesson01.YEAR2_RENAMES,
  });
  const y2 = await conserved(cluster);
  assert.deepEqual(Object.keys(y2).sort(), ["eu_db_1", "eu_db_2", "eu_db_3"]);
  assert.equal(sum(y2), 2000, "the year-2 swap keeps the 2000 rows");
  await eu1.exec(lesson01.insertCustomers());
  const beforeRename = await conserved(cluster);
  await cluster.node("eu_db_2").exec(lesson01.RENAME_ON_SHARD);
  await eu1.exec(lesson01.pointBack("customer_1"));
  assert.deepEqual(await conserved(cluster), beforeRename, "the rename dance moves no row");
  assert.equal(sum(beforeRename), 3000);

  await lesson01.prepareYear5(cluster, { usBatchSize: lesson01.US_BATCH_SIZE });
  await swapTables(eu1, {
    table: "customer",
    replacement: "customer_partitioned",
    procedure: "source",
  });
  const y5 = await conserved(cluster);
  assert.equal(sum(y5), 3000, "the year-5 swap keeps the 3000 rows");
  assert.equal(await count(eu1, "customer_us"), 0, "existing customers get region 'uk'");
  await eu1.exec(lesson01.insertCustomers(true));
  const [{ uk, us }] = await eu1.sql`
    SELECT count(*) FILTER (WHERE region = 'uk') AS uk, count(*) FILTER (WHERE region = 'us') AS us
    FROM customer`;
  assert.equal((uk as number) + (us as number), 4000);
  assert.ok((us as number) > 350 && (us as number) < 650, `about half of 1000 are 'us': ${us}`);
  assert.equal(await count(eu1, "customer_us"), us, "every 'us' row is in the US branch");
});

Deno.test("year2() ends with the source's catalog: the rename dance points customer_1 back at customer", async () => {
  await using cluster = await lessonCluster("t-l01-catalog");
  await lesson01.reset(cluster, "year 5");
  const eu1 = cluster.node("eu_db_1");
  assert.deepEqual(await leaves(eu1, "customer"), [
    {
      name: "customer_0",
      kind: "r",
      bound: "FOR VALUES WITH (modulus 3, remainder 0)",
      server: null,
      options: null,
    },
    {
      name: "customer_1",
      kind: "f",
      bound: "FOR VALUES WITH (modulus 3, remainder 1)",
      server: "eu_db_2",
      options: ["table_name=customer"],
    },
    {
      name: "customer_2",
      kind: "f",
      bound: "FOR VALUES WITH (modulus 3, remainder 2)",
      server: "eu_db_3",
      options: ["table_name=customer"],
    },
  ]);
  assert.deepEqual(await tables(eu1), ["customer", "customer_0", "customer_1", "customer_2"]);
  assert.deepEqual(await tables(cluster.node("eu_db_2")), ["customer"], "customer_new was renamed");
  assert.deepEqual(await tables(cluster.node("eu_db_3")), ["customer"]);
  const servers = await foreignServers(eu1);
  assert.deepEqual(servers.map((s) => [s.server, s.target]), [
    ["eu_db_2", "eu_db_2"],
    ["eu_db_3", "eu_db_3"],
  ]);
});

Deno.test("year5() nests LIST (region) over HASH (id), each branch on its region's nodes", async () => {
  await using cluster = await lessonCluster("t-l01-year5");
  await lesson01.reset(cluster, "scratchpad");
  const eu1 = cluster.node("eu_db_1");
  assert.deepEqual(
    (await leaves(eu1, "customer")).map((l) => [l.name, l.kind, l.bound]),
    [
      ["customer_uk", "p", "FOR VALUES IN ('uk')"],
      ["customer_us", "p", "FOR VALUES IN ('us')"],
    ],
  );
  assert.deepEqual(
    (await leaves(eu1, "customer_uk")).map((l) => [l.name, l.kind, l.server, l.options]),
    [
      ["customer_uk_partitioned_0", "r", null, null],
      ["customer_uk_partitioned_1", "f", "eu_db_2", ["table_name=customer"]],
      ["customer_uk_partitioned_2", "f", "eu_db_3", ["table_name=customer"]],
    ],
  );
  assert.deepEqual(
    (await leaves(eu1, "customer_us")).map((l) => [l.name, l.kind, l.server, l.bound]),
    [0, 1, 2].map((
      i,
    ) => [
      `customer_us_partitioned_${i}`,
      "f",
      `us_db_${i + 1}`,
      `FOR VALUES WITH (modulus 3, remainder ${i})`,
    ]),
  );
  const servers = await foreignServers(eu1);
  assert.deepEqual(
    servers.map((s) => [s.server, s.target, cluster.node(s.target!).region]),
    [
      ["eu_db_2", "eu_db_2", "eu-west-2"],
      ["eu_db_3", "eu_db_3", "eu-west-2"],
      ["us_db_1", "us_db_1", "us-east-1"],
      ["us_db_2", "us_db_2", "us-east-1"],
      ["us_db_3", "us_db_3", "us-east-1"],
    ],
  );
  assert.ok(
    servers.filter((s) => s.server.startsWith("us_")).every((s) =>
      s.options.includes(`batch_size=${lesson01.US_BATCH_SIZE}`)
    ),
    "reset() leaves the US servers with the batch_size the notebook sets",
  );
  const shards = await distribution(eu1, "customer");
  assert.equal(totalRows(shards), 4000);
  for (const shard of shards.filter((s) => s.partition.startsWith("customer_us"))) {
    assert.equal(cluster.node(shard.node!).region, "us-east-1", `${shard.partition} is in the US`);
  }
});

Deno.test("scratchpad() inserts an existing id on us_db_1: it succeeds and eu_db_1 sees two rows", async () => {
  await using cluster = await lessonCluster("t-l01-dup");
  await lesson01.reset(cluster, "scratchpad");
  const eu1 = cluster.node("eu_db_1");
  const id = await lesson01.scratchpad(cluster);
  const rows = await eu1.sql`SELECT region FROM customer WHERE id = ${id}::uuid ORDER BY region`;
  assert.deepEqual(rows.map((r) => r.region), ["uk", "us"], "the same id, stored twice");
  assert.equal(
    await count(eu1),
    4004,
    "3 direct rows and the duplicate are visible through eu_db_1",
  );
  assert.deepEqual(await lesson01.duplicateIdsOnNodes(cluster), [id]);
  let viaCoordinator = 0;
  await eu1.sql.begin(async (tx) => {
    await tx`INSERT INTO customer (id, email, region) VALUES (${id}::uuid, 'again@gmail.com', 'uk')`;
    [{ n: viaCoordinator }] = await tx`SELECT count(*) AS n FROM customer WHERE id = ${id}::uuid`;
    throw new Error("roll back");
  }).catch((error) => assert.equal(error.message, "roll back"));
  assert.equal(
    viaCoordinator,
    3,
    "(LIKE customer) dropped the key: eu_db_1's own partition takes it too",
  );
  const eu2 = cluster.node("eu_db_2");
  const [{ id: onEu2 }] = await eu2.sql`SELECT id::text FROM customer LIMIT 1`;
  await assert.rejects(
    eu2.exec(
      `INSERT INTO customer (id, email, region) VALUES ('${onEu2}', 'again@gmail.com', 'uk')`,
    ),
    /duplicate key/,
    "a remote table keeps its own primary key, for its own rows only",
  );
});

Deno.test("startWorkload() through the lesson steps: marks in order, percentiles per step", async () => {
  await using cluster = await lessonCluster("t-l01-workload");
  await lesson01.reset(cluster, "year 1");
  const eu1 = cluster.node("eu_db_1");
  const ids = (await eu1.sql`SELECT id::text FROM customer LIMIT 20`).map((r) => r.id as string);
  let next = 0;
  const load: Workload = await startWorkload(eu1, {
    mix: { count: 1 },
    operations: {
      lookup: (sql) => sql`SELECT email FROM customer WHERE id = ${ids[next++ % ids.length]}::uuid`,
    },
    intervalMs: 2,
    step: "1 node",
  });
  try {
    await load.waitForSamples(20);
    await lesson01.year1(cluster);
    load.mark("2 nodes");
    await load.waitForSamples(20);
    await lesson01.year2(cluster);
    load.mark("3 nodes");
    await load.waitForSamples(20);
  } finally {
    await load.stop();
  }
  assert.deepEqual(load.marks.map((m) => m.step), ["1 node", "2 nodes", "3 nodes"]);
  assert.ok(load.marks.every((m, i) => i === 0 || m.t > load.marks[i - 1].t));
  const summary = load.summary();
  assert.deepEqual(
    summary.map((s) => [s.step, s.op]),
    ["1 node", "2 nodes", "3 nodes"].flatMap((step) => [[step, "count"], [step, "lookup"]]),
  );
  for (const s of summary) {
    assert.ok(s.count > 0 && s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max, JSON.stringify(s));
  }
  const charts = await Promise.all([latencyTimeline(load), latencyPercentiles(load)]);
  assert.ok(charts.every((c) => c.html.includes("latency (ms)")));
  const staggered = await latencyTimeline(load, { labelRows: 3 });
  for (const step of ["1 node", "2 nodes", "3 nodes"]) {
    assert.ok(staggered.html.includes(`>${step}<`), `the timeline labels "${step}"`);
  }
  assert.ok(staggered.html.includes('viewBox="0 0 760 368"'), "two more label lines: 28 px taller");
});

Deno.test("runUnderLoad() loses no acknowledged write when locked; the source's procedure loses some", async () => {
  await using cluster = await lessonCluster("t-l01-load");
  const naive = await lesson01.runUnderLoad(cluster, { procedure: "source" });
  const locked = await lesson01.runUnderLoad(cluster, { procedure: "locked" });

  assert.ok(naive.report.acknowledged > 0 && locked.report.acknowledged > 0);
  assert.ok(
    naive.report.lost.length > 0,
    "writes between the copy and the swap went to the dropped table",
  );
  assert.equal(naive.rowsAfter, 1000 + naive.report.acknowledged - naive.report.lost.length);
  assert.ok(
    naive.report.errors.some((e) => /customer_new" does not exist/.test(e.error)),
    "queries fail between the rename on eu_db_2 and the ALTER FOREIGN TABLE",
  );

  assert.deepEqual(locked.report.lost, []);
  assert.equal(
    locked.rowsAfter,
    1000 + locked.report.acknowledged,
    "every acknowledged write is there",
  );
  assert.equal(
    locked.report.failedWrites + locked.report.failedReads,
    0,
    "queries waited, none failed",
  );
  for (const run of [naive, locked]) {
    assert.equal(run.originalRowsKept, 1000);
    assert.deepEqual(run.load.marks.map((m) => m.step), [
      "1 node",
      "year 1 move",
      "2 nodes",
      "year 2 move",
      "rename",
      "3 nodes",
    ]);
  }
  const rows = lesson01.underLoadRows([naive, locked]);
  assert.equal(rows[1]["acknowledged writes lost"], 0);
});

Deno.test("loadReport() counts failed, blocked and lost writes and the longest gap", async () => {
  const samples = [
    { t: 0, op: "insert", ms: 2, ok: true, step: "a" },
    { t: 5, op: "insert", ms: 2, ok: true, step: "a" },
    { t: 10, op: "insert", ms: 90, ok: true, step: "a" },
    { t: 20, op: "insert", ms: 1, ok: false, step: "a", error: "boom" },
    { t: 30, op: "count", ms: 1, ok: false, step: "a", error: "boom" },
  ];
  const fake = {
    samples,
    acknowledged: ["x", "y", "z"],
    longestGap: () => 93,
    lostWrites: () => Promise.resolve(["y"]),
    node: undefined,
  } as unknown as Workload;
  const report = await loadReport(fake);
  assert.deepEqual(report, {
    writes: 4,
    acknowledged: 3,
    failedWrites: 1,
    failedReads: 1,
    blockedWrites: 1,
    blockedThresholdMs: 20,
    slowestWriteMs: 90,
    longestGapMs: 93,
    lost: ["y"],
    errors: [{ error: "boom", count: 2 }],
  });
});

Deno.test("reset() repairs a broken cluster: removes extra nodes, restarts stopped ones, rebuilds", async () => {
  await using cluster = await lessonCluster("t-l01-reset");
  await lesson01.reset(cluster, "year 2");
  const eu1 = cluster.node("eu_db_1");
  await cluster.addNode({ name: "eu_db_4", region: "eu-west-2", role: "shard" });
  await eu1.exec(`DROP FOREIGN TABLE customer_1;`);
  await cluster.node("eu_db_2").stop();
  await lesson01.reset(cluster, "year 2");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db_1", "eu_db_2"]);
  assert.equal(sum(await conserved(cluster)), 2000);
  await lesson01.reset(cluster, "before");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db_1"]);
  assert.deepEqual(await tables(eu1), []);
  await assert.rejects(
    lesson01.reset(cluster, "year 3" as lesson01.Section),
    /Unknown section "year 3" of notebook 01 \[INVALID_SETTING\]/,
  );
});

for (const id of ["01.modulus4", "01.shrink", "01.duplicates"]) {
  Deno.test(`exercise ${id}: not attempted, then wrong, then correct`, async () => {
    await using cluster = await lessonCluster(`t-l01-${id.slice(3)}`);
    const ex = exercise(id, cluster);
    await ex.definition.setup(cluster);
    assert.equal((await ex.check()).status, "not-attempted");
    await ex.definition.attemptWrong(cluster);
    const wrong = await ex.check();
    assert.equal(wrong.status, "wrong", wrong.message);
    await ex.definition.setup(cluster);
    assert.equal((await ex.check()).status, "not-attempted", "setup() starts over");
    await ex.definition.solve(cluster);
    const correct = await ex.check();
    assert.equal(correct.status, "correct", correct.message);
    if (id !== "01.duplicates") {
      assert.equal(
        await count(cluster.node("eu_db_1")),
        4004,
        "the solution keeps every customer",
      );
    }
  });
}
