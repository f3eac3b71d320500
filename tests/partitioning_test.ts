import assert from "node:assert/strict";
import {
  distribution,
  hashPartition,
  listHashPartition,
  listPartition,
  type Node,
  partitionTree,
  rowsPerNode,
  seededRandom,
  seededUuid,
  sharedTargets,
  startCluster,
  totalRows,
} from "../lib/mod.ts";

const CUSTOMER = { id: "UUID NOT NULL", email: "TEXT NOT NULL" };

/** Inserts `n` customers with ids from a seeded generator, so the spread repeats exactly. */
async function insertCustomers(node: Node, table: string, n: number, seed = 1): Promise<void> {
  const rng = seededRandom(seed);
  const ids = Array.from({ length: n }, () => seededUuid(rng));
  await node.sql`INSERT INTO ${node.sql(table)} (id, email)
    SELECT id::uuid, id || '@example.com' FROM unnest(${ids}::text[]) AS id`;
}

async function directCount(node: Node, table: string): Promise<number> {
  const [{ n }] = await node.sql`SELECT count(*) AS n FROM ${node.sql(table)}`;
  return n as number;
}

Deno.test("hashPartition() spreads 1000 rows over 3 nodes within 15% of even and loses none", async () => {
  await using cluster = await startCluster({
    name: "t-hash",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }, { name: "eu_db_3" }],
  });
  const [eu1, eu2, eu3] = cluster.nodes;
  await hashPartition(eu1, "customer", {
    column: "id",
    columns: CUSTOMER,
    primaryKey: ["id"],
    shards: [eu1, eu2, eu3],
  });
  await insertCustomers(eu1, "customer", 1000);
  const shards = await distribution(eu1, "customer");
  assert.deepEqual(shards.map((s) => [s.partition, s.kind, s.node]), [
    ["customer_0", "local", "eu_db_1"],
    ["customer_1", "foreign", "eu_db_2"],
    ["customer_2", "foreign", "eu_db_3"],
  ]);
  assert.equal(totalRows(shards), 1000);
  for (const s of shards) {
    assert.ok(Math.abs(s.rows - 1000 / 3) <= 1000 / 3 * 0.15, `${s.partition}: ${s.rows}`);
  }
  // Inspection numbers equal a direct count(*) on each node.
  assert.equal(shards[0].rows, await directCount(eu1, "customer_0"));
  assert.equal(shards[1].rows, await directCount(eu2, "customer_1"));
  assert.equal(shards[2].rows, await directCount(eu3, "customer_2"));
  assert.ok(shards.every((s) => (s.bytes ?? 0) > 0));
});

Deno.test("hashPartition() is idempotent: a second run changes nothing", async () => {
  await using cluster = await startCluster({
    name: "t-hash-idem",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const [eu1, eu2] = cluster.nodes;
  const options = { column: "id", columns: CUSTOMER, primaryKey: ["id"], shards: [eu1, eu2] };
  await hashPartition(eu1, "customer", options);
  await insertCustomers(eu1, "customer", 200);
  await hashPartition(eu1, "customer", options);
  assert.equal(totalRows(await distribution(eu1, "customer")), 200);
  const tree = await partitionTree(eu1, "customer");
  assert.equal(tree.length, 3);
});

Deno.test("listPartition() routes each value to its node and the rest to the default", async () => {
  await using cluster = await startCluster({
    name: "t-list",
    nodes: [{ name: "host" }, { name: "europe", region: "eu-central-1" }, {
      name: "usa",
      region: "us-east-1",
    }],
  });
  const [host, europe, usa] = cluster.nodes;
  await listPartition(host, "tweets", {
    column: "location",
    columns: { id: "INT NOT NULL", location: "TEXT NOT NULL" },
    partitions: [
      { name: "europe_tweets", values: ["europe"], node: europe },
      { name: "us_tweets", values: ["usa"], node: usa },
      { name: "tweets_default", values: "default", node: host },
    ],
  });
  await host.exec(
    `INSERT INTO tweets VALUES (1, 'europe'), (2, 'europe'), (3, 'usa'), (4, 'mars')`,
  );
  assert.deepEqual((await europe.sql`SELECT id FROM europe_tweets ORDER BY id`).map((r) => r.id), [
    1,
    2,
  ]);
  assert.deepEqual((await usa.sql`SELECT id FROM us_tweets`).map((r) => r.id), [3]);
  assert.deepEqual((await host.sql`SELECT id FROM tweets_default`).map((r) => r.id), [4]);
  assert.deepEqual(rowsPerNode(await distribution(host, "tweets")), { europe: 2, usa: 1, host: 1 });
});

Deno.test("listHashPartition() builds LIST then HASH across each group's nodes, conserving rows", async () => {
  await using cluster = await startCluster({
    name: "t-list-hash",
    nodes: [
      { name: "eu_db_1" },
      { name: "eu_db_2" },
      { name: "us_db_1", region: "us-east-1" },
      { name: "us_db_2", region: "us-east-1" },
    ],
  });
  const [eu1, eu2, us1, us2] = cluster.nodes;
  await listHashPartition(eu1, "customer", {
    listColumn: "region",
    hashColumn: "id",
    columns: { ...CUSTOMER, region: "TEXT NOT NULL DEFAULT 'uk'" },
    primaryKey: ["id"],
    groups: [
      { name: "customer_uk", values: ["uk"], nodes: [eu1, eu2] },
      { name: "customer_us", values: ["us"], nodes: [us1, us2] },
    ],
  });
  await eu1.exec(`INSERT INTO customer (id, email, region)
    SELECT gen_random_uuid(), 'c' || i, CASE WHEN i % 2 = 0 THEN 'uk' ELSE 'us' END FROM generate_series(1, 400) i`);
  const tree = await partitionTree(eu1, "customer");
  assert.deepEqual(tree.map((p) => [p.partition, p.level, p.kind]), [
    ["customer", 0, "partitioned"],
    ["customer_uk", 1, "partitioned"],
    ["customer_us", 1, "partitioned"],
    ["customer_uk_partitioned_0", 2, "local"],
    ["customer_uk_partitioned_1", 2, "foreign"],
    ["customer_us_partitioned_0", 2, "foreign"],
    ["customer_us_partitioned_1", 2, "foreign"],
  ]);
  const [servers] = await eu1.sql`
    SELECT array_agg(DISTINCT s.srvname ORDER BY s.srvname) AS names
    FROM pg_inherits i JOIN pg_foreign_table f ON f.ftrelid = i.inhrelid JOIN pg_foreign_server s ON s.oid = f.ftserver`;
  assert.deepEqual(servers.names, ["eu_db_2", "us_db_1", "us_db_2"]);
  const perNode = rowsPerNode(await distribution(eu1, "customer"));
  assert.equal(perNode.eu_db_1 + perNode.eu_db_2, 200);
  assert.equal(perNode.us_db_1 + perNode.us_db_2, 200);
  const [{ n }] = await us1
    .sql`SELECT count(*) AS n FROM customer_us_partitioned_0 WHERE region <> 'us'`;
  assert.equal(n, 0, "no UK row landed on a US node");
});

Deno.test("sharedTargets() finds foreign partitions that all point at the same table", async () => {
  await using cluster = await startCluster({
    name: "t-shared",
    nodes: [{ name: "coord" }, { name: "eu_db" }],
  });
  const [coord, eu] = cluster.nodes;
  await listPartition(coord, "customer", {
    column: "country",
    columns: { country: "TEXT NOT NULL" },
    partitions: [{ name: "eu", values: ["de"], node: eu }],
    remoteTable: () => "customer",
  });
  const healthy = await partitionTree(coord, "customer");
  assert.deepEqual(sharedTargets(healthy), []);
  await coord.exec(`CREATE FOREIGN TABLE us PARTITION OF customer FOR VALUES IN ('us')
    SERVER eu_db OPTIONS (table_name 'customer')`);
  const broken = await partitionTree(coord, "customer");
  assert.deepEqual(sharedTargets(broken), [{
    target: "eu_db:public.customer",
    partitions: ["eu", "us"],
  }]);
});
