import assert from "node:assert/strict";
import {
  type Cluster,
  exercise,
  isWorkshopError,
  latencyFromRegions,
  lesson02,
  linkNodes,
  type Node,
  partitionTree,
  sharedTargets,
  startCluster,
} from "../lib/mod.ts";
import { withLatencyScale } from "./_helpers.ts";

const { SHARDS, attempt, misplacedCustomers, qualified, reset, storedRows } = lesson02;

async function lessonCluster(name: string): Promise<Cluster> {
  return await startCluster({ name: `t-02-${name}` });
}

/** Where rows with this email are stored, read on every node directly (not through the FDW). */
async function storedOn(cluster: Cluster, email: string): Promise<string[]> {
  const places = [
    { node: "eu_db", table: "global.customer_default" },
    ...SHARDS.map((s) => ({ node: s.node, table: `${s.schema}.customer` })),
  ];
  const found: string[] = [];
  for (const p of places) {
    const node = cluster.node(p.node);
    const rows = await node.sql.unsafe(`SELECT country FROM ${p.table} WHERE email = $1`, [email]);
    for (const r of rows) found.push(`${p.node}:${r.country}`);
  }
  return found.sort();
}

Deno.test('reset("all-data-on-all-nodes") has the copy-paste slip: 12 test rows on eu_db_2, each seen 3 times, flagged by sharedTargets()', async () => {
  await using cluster = await lessonCluster("slip");
  await reset(cluster, "all-data-on-all-nodes");
  const eu = cluster.node("eu_db");
  assert.deepEqual(
    (await storedRows(cluster)).map((r) => [r.node, r.rows]),
    [["eu_db", 0], ["eu_db_2", 12], ["us_db", 0], ["jp_db", 0]],
  );
  const [{ n }] = await eu.sql`SELECT count(*) AS n FROM global.customer`;
  assert.equal(n, 36);
  const shared = sharedTargets(qualified(await partitionTree(eu, "global.customer")));
  assert.deepEqual(shared, [{
    target: "eu_db_2:eu.customer",
    partitions: ["eu.customer", "jp.customer", "us.customer"],
  }]);
});

Deno.test("global.customer routes every country of the source's lists to its shard and any other to the default partition on eu_db", async () => {
  await using cluster = await lessonCluster("routing");
  await reset(cluster, "direct-inserts");
  const eu = cluster.node("eu_db");
  assert.deepEqual(sharedTargets(qualified(await partitionTree(eu, "global.customer"))), []);
  const others = ["ie", "cn", "au", "gb", "zz"];
  const countries = [...SHARDS.flatMap((s) => s.countries), ...others];
  await eu.sql`INSERT INTO global.customer (country, email)
    SELECT c, 'route_' || c || '@test' FROM unnest(${countries}::text[]) AS c`;
  for (const shard of SHARDS) {
    for (const country of shard.countries) {
      assert.deepEqual(await storedOn(cluster, `route_${country}@test`), [
        `${shard.node}:${country}`,
      ]);
    }
  }
  for (const country of others) {
    assert.deepEqual(await storedOn(cluster, `route_${country}@test`), [`eu_db:${country}`]);
  }
  // The section's own rows: the source's 12 test rows, one per shard country, where they belong.
  for (const shard of SHARDS) {
    const node = cluster.node(shard.node);
    const rows = await node.sql.unsafe(
      `SELECT country FROM ${shard.schema}.customer WHERE email LIKE '%\\_a@gmail.com' ORDER BY 1`,
    );
    assert.deepEqual(rows.map((r) => r.country), [...shard.countries].sort());
  }
});

Deno.test("Direct inserts into the shards are visible through the coordinator; misrouted ones escape partition pruning and stay put on UPDATE", async () => {
  await using cluster = await lessonCluster("direct");
  await reset(cluster, "purchase"); // the state right after section 6
  const eu = cluster.node("eu_db");
  const direct = await eu.sql`
    SELECT email, tableoid::regclass::text AS partition FROM global.customer
    WHERE email LIKE '%\\_direct@gmail.com' ORDER BY email`;
  assert.deepEqual(direct.map((r) => `${r.email} ${r.partition}`), [
    "de_direct@gmail.com eu.customer",
    "fr_direct@gmail.com eu.customer",
    "jp_direct@gmail.com jp.customer",
    "us_direct@gmail.com us.customer", // now with country 'jp': the UPDATE did not move it
  ]);
  const [counts] = await eu.sql`
    SELECT (SELECT count(*) FROM global.customer WHERE country = 'us') AS pruned,
           (SELECT count(*) FILTER (WHERE country = 'us') FROM global.customer) AS scanned`;
  assert.equal((counts.scanned as number) - (counts.pruned as number), 2);
  const pruned = await eu.sql`SELECT email FROM global.customer WHERE country = 'us'`;
  assert.ok(!pruned.some((r) => /us_in_/.test(r.email as string)));
  assert.deepEqual(await storedOn(cluster, "us_direct@gmail.com"), ["us_db:jp"]);
  assert.deepEqual(
    (await misplacedCustomers(cluster)).map((m) => `${m.node} ${m.email} ${m.country}`),
    [
      "eu_db_2 us_in_eu@gmail.com us",
      "us_db us_direct@gmail.com jp",
      "jp_db us_in_jp@gmail.com us",
    ],
  );
  // A foreign partition takes a row outside its bound; the local default partition does not.
  const viaPartition = await attempt(
    eu,
    `INSERT INTO jp.customer (country, email) VALUES ('us', 'x@test');`,
  );
  const viaDefault = await attempt(
    eu,
    `INSERT INTO global.customer_default (country, email) VALUES ('us', 'y@test');`,
  );
  assert.equal(viaPartition.outcome, "ok");
  assert.equal(viaDefault.outcome, "ERROR");
  assert.match(viaDefault.says, /violates partition constraint/);
});

Deno.test("Nothing keeps ids unique across shards: a copied id shows twice and no unique index can be made", async () => {
  await using cluster = await lessonCluster("ids");
  await reset(cluster, "direct-inserts");
  const [eu, us, jp] = ["eu_db", "us_db", "jp_db"].map((n) => cluster.node(n));
  const [{ id }] = await jp.sql`SELECT id::text FROM jp.customer LIMIT 1`;
  await us
    .sql`INSERT INTO us.customer (id, country, email) VALUES (${id}::uuid, 'us', 'copy@test')`;
  const [{ n }] = await eu.sql`SELECT count(*) AS n FROM global.customer WHERE id = ${id}::uuid`;
  assert.equal(n, 2);
  const index = await attempt(eu, `CREATE UNIQUE INDEX ON global.customer (id);`);
  assert.equal(index.outcome, "ERROR");
  assert.match(index.says, /contains partitions that are foreign tables/);
});

Deno.test("purchase cannot reference global.customer, DROP ... CASCADE removes its foreign key quietly, and orphans follow", async () => {
  await using cluster = await lessonCluster("fk");
  await reset(cluster, "purchase");
  const [eu, us] = ["eu_db", "us_db"].map((n) => cluster.node(n));
  const refused = [
    await attempt(
      eu,
      `ALTER TABLE purchase ADD FOREIGN KEY (customer_id) REFERENCES global.customer (id);`,
    ),
    await attempt(eu, `ALTER TABLE global.customer ADD PRIMARY KEY (id);`),
    await attempt(eu, `ALTER TABLE global.customer ADD PRIMARY KEY (country, id);`),
    await attempt(eu, `DROP TABLE customer;`),
  ];
  assert.deepEqual(refused.map((a) => a.outcome), ["ERROR", "ERROR", "ERROR", "ERROR"]);
  assert.match(refused[0].says, /no unique constraint matching given keys/);
  assert.match(refused[1].says, /must include all partitioning columns/);
  assert.match(refused[2].says, /partitions that are foreign tables/);
  assert.match(refused[3].says, /other objects depend on it/);
  const cascade = await attempt(eu, `DROP TABLE customer CASCADE;`);
  assert.equal(cascade.outcome, "ok");
  assert.match(cascade.says, /drop cascades to constraint purchase_customer_id_fkey/);
  const [{ fks }] = await eu.sql`
    SELECT count(*) AS fks FROM pg_constraint WHERE contype = 'f' AND conrelid = 'purchase'::regclass`;
  assert.equal(fks, 0);
  await eu.exec(`INSERT INTO purchase (customer_id, amount) VALUES (gen_random_uuid(), 19.99);`);
  await eu.exec(`INSERT INTO purchase (customer_id, amount)
    SELECT id, 42.00 FROM global.customer WHERE country = 'mx';`);
  await us.exec(`DELETE FROM us.customer WHERE country = 'mx';`);
  const orphans = await eu.sql`
    SELECT amount FROM purchase p
    WHERE NOT EXISTS (SELECT 1 FROM global.customer c WHERE c.id = p.customer_id) ORDER BY 1`;
  assert.deepEqual(orphans.map((o) => o.amount), ["19.99", "42.00"]);
});

Deno.test("Co-located purchase: each shard's foreign key refuses a purchase for a customer on another node and a delete with purchases, but not a mismatched country", async () => {
  await using cluster = await lessonCluster("colocated");
  await reset(cluster, "after");
  const eu = cluster.node("eu_db");
  const tries = [
    await attempt(
      eu,
      `INSERT INTO global.purchase (country, customer_id, amount)
       SELECT 'jp', id, 9.99 FROM global.customer WHERE country = 'us' AND email = 'us_shopper_1@shop.test';`,
    ),
    await attempt(
      eu,
      `DELETE FROM global.customer WHERE country = 'jp' AND email = 'jp_shopper_1@shop.test';`,
    ),
    await attempt(
      eu,
      `INSERT INTO global.purchase (country, customer_id, amount)
       SELECT 'sg', id, 5.00 FROM global.customer WHERE country = 'jp' AND email = 'jp_shopper_2@shop.test';`,
    ),
  ];
  assert.deepEqual(tries.map((t) => t.outcome), ["ERROR", "ERROR", "ok"]);
  assert.match(tries[0].says, /violates foreign key constraint/);
  assert.match(tries[1].says, /is still referenced/);
  // The old purchases moved to the shards, except the two orphans (no customer, no shard).
  const [{ old }] = await eu.sql`SELECT count(*) AS old FROM purchase`;
  const [{ moved }] = await eu.sql`
    SELECT count(*) AS moved FROM global.purchase WHERE id IN (SELECT id FROM purchase)`;
  assert.equal((old as number) - (moved as number), 2);
});

Deno.test("Users in us-east-1 and ap-northeast-1 buy faster on their regional node than on eu_db before sharding, slower through the coordinator", async () => {
  await using cluster = await lessonCluster("latency");
  await reset(cluster, "after");
  await withLatencyScale(1, async () => {
    const eu = cluster.node("eu_db");
    for (const shard of SHARDS) await linkNodes(eu, cluster.node(shard.node), { batchSize: 100 });
    const shoppers = lesson02.shoppers();
    const buy = (table: string, country: string, id: string) => (sql: Node["sql"]) =>
      sql.unsafe(`INSERT INTO ${table} (country, customer_id, amount) VALUES ($1, $2, 1.00)`, [
        country,
        id,
      ]);
    // Before sharding: one INSERT into eu_db's purchase table, as the shop did in section 3.
    const buyBefore = (id: string) => (sql: Node["sql"]) =>
      sql`INSERT INTO purchase (customer_id, amount) VALUES (${id}, 1.00)`;
    for (const shard of SHARDS.slice(1)) {
      const customer = shoppers[shard.schema as "us" | "jp"][0];
      const options = { regions: [shard.region], repeat: 2 };
      const [before] = await latencyFromRegions(eu, buyBefore(customer.id), options);
      const [direct] = await latencyFromRegions(
        cluster.node(shard.node),
        buy(`${shard.schema}.purchase`, customer.country, customer.id),
        options,
      );
      assert.ok(
        direct.ms < before.ms,
        `${shard.region}: regional node ${direct.ms} ms, eu_db before ${before.ms} ms`,
      );
      if (shard.schema === "us") {
        const [via] = await latencyFromRegions(
          eu,
          buy("global.purchase", customer.country, customer.id),
          options,
        );
        assert.ok(
          via.ms > before.ms,
          `${shard.region}: through the coordinator ${via.ms} ms, before ${before.ms} ms`,
        );
      }
    }
  });
});

Deno.test("startSecondPostmaster() is refused by the lock file and the node keeps serving", async () => {
  await using cluster = await startCluster({ name: "t-02-lock", nodes: [{ name: "eu_db" }] });
  const eu = cluster.node("eu_db");
  const second = await lesson02.startSecondPostmaster(eu);
  assert.equal(second.refused, true, second.log);
  assert.notEqual(second.exitCode, 0);
  assert.match(second.log, /lock file "postmaster\.pid" already exists/);
  const [{ ok }] = await eu.sql`SELECT 1 AS ok`;
  assert.equal(ok, 1);
});

Deno.test("reset() repairs a broken cluster: wrong-region node, extra node, dropped tables; unknown sections are refused", async () => {
  await using cluster = await lessonCluster("broken");
  await reset(cluster, "exercises");
  await cluster.removeNode("jp_db");
  await cluster.addNode({ name: "jp_db", region: "us-west-2" });
  await cluster.addNode({ name: "au_db", region: "ap-southeast-2" });
  await cluster.node("eu_db").exec(`DROP SCHEMA global CASCADE;`);
  const nodes = await reset(cluster, "direct-inserts");
  assert.deepEqual(Object.keys(nodes), ["eu_db", "eu_db_2", "us_db", "jp_db"]);
  assert.equal(cluster.node("jp_db").region, "ap-northeast-1");
  assert.deepEqual(
    (await storedRows(cluster)).map((r) => [r.node, r.rows]),
    [["eu_db", 4], ["eu_db_2", 8], ["us_db", 7], ["jp_db", 7]],
  );
  await reset(cluster, "before");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db"]);
  const [{ n }] = await cluster.node("eu_db").sql`
    SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'`;
  assert.equal(n, 0);
  await assert.rejects(
    reset(cluster, "nope" as lesson02.Section),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /Unknown section "nope"/.test(e.message),
  );
});

for (const id of ["02.route_au", "02.move_misplaced", "02.purchase_country"]) {
  Deno.test(`exercise ${id}: not attempted, then wrong, then correct with the solution`, async () => {
    let cluster = await lessonCluster(`ex-${id}`);
    try {
      const ex = exercise(id, cluster);
      await ex.definition.setup(cluster);
      const untouched = await ex.check();
      assert.equal(untouched.status, "not-attempted", untouched.message);
      await ex.definition.attemptWrong(cluster);
      const wrong = await ex.check();
      assert.equal(wrong.status, "wrong", wrong.message);
      cluster = await lessonCluster(`ex-${id}`); // replaces (stops) the first one
      const fresh = exercise(id, cluster);
      await fresh.definition.setup(cluster);
      await fresh.definition.solve(cluster);
      const solved = await fresh.check();
      assert.equal(solved.status, "correct", solved.message);
    } finally {
      await cluster.stop();
    }
  });
}
