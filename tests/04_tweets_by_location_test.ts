import assert from "node:assert/strict";
import {
  type CheckStatus,
  connect,
  distribution,
  exercise,
  lesson04,
  partitionTree,
  startCluster,
} from "../lib/mod.ts";

const { REGIONAL_APPS, HOST_APP, GENERATED } = lesson04;
const EU = REGIONAL_APPS.europe;
const US = REGIONAL_APPS.usa;
const ASIA = REGIONAL_APPS.asia;

/** Rows of a regional table, counted on its node as its application role. */
async function countOn(
  node: Parameters<typeof lesson04.loginAs>[0],
  app: lesson04.RegionalApp,
  where = "true",
): Promise<number> {
  const [{ rows: [row] }] = await lesson04.loginAs(node, app).exec(
    `SELECT count(*) AS n FROM ${app.table} WHERE ${where}`,
  );
  return Number(row.n);
}

/** The SQLSTATE of what `attempt` rejects with ("none" when it does not reject). */
async function sqlState(attempt: Promise<unknown>): Promise<string> {
  return await attempt.then(() => "none", (e) => String((e as { code?: string }).code));
}

Deno.test("lesson04.reset(cluster, 'testing') LIST-partitions tweets over europe and usa with a local default", async () => {
  await using cluster = await startCluster({ name: "t-04-layout" });
  await lesson04.reset(cluster, "testing");
  const host = cluster.node("host");
  const tree = await partitionTree(host, "tweets");
  assert.deepEqual(
    tree.filter((p) => p.level === 1).map((p) => [p.partition, p.kind, p.bound, p.node]),
    [
      ["europe_tweets", "foreign", "FOR VALUES IN ('europe')", "europe"],
      ["tweets_default", "local", "DEFAULT", "host"],
      ["us_tweets", "foreign", "FOR VALUES IN ('usa')", "usa"],
    ],
  );
  const servers = await host.sql`
    SELECT srvname, (SELECT o FROM unnest(srvoptions) o WHERE o LIKE 'dbname=%') AS dbname
    FROM pg_foreign_server ORDER BY 1`;
  assert.deepEqual(servers.map((s) => [s.srvname, s.dbname]), [
    ["europe", "dbname=eutweets"],
    ["usa", "dbname=ustweets"],
  ]);
  const mappings = await host.sql`
    SELECT srvname, usename FROM pg_user_mappings ORDER BY 1, 2`;
  assert.deepEqual(mappings.map((m) => `${m.srvname}:${m.usename}`), [
    "europe:postgres",
    "europe:tweets_app",
    "usa:postgres",
    "usa:tweets_app",
  ]);
});

Deno.test("tweets routes each location to its node and unknown locations to tweets_default", async () => {
  await using cluster = await startCluster({ name: "t-04-routing" });
  await lesson04.reset(cluster, "testing");
  const host = cluster.node("host");
  await host.exec(`
    INSERT INTO tweets (location, text, owner_id, like_count) VALUES
      ('europe', 'to frankfurt', 1, 0), ('usa', 'to virginia', 2, 0), ('mars', 'to london', 3, 0)`);
  assert.equal(await countOn(cluster.node("europe"), EU, "text = 'to frankfurt'"), 1);
  assert.equal(await countOn(cluster.node("usa"), US, "text = 'to virginia'"), 1);
  const [{ n: local }] = await host.sql`
    SELECT count(*) AS n FROM tweets_default WHERE text = 'to london'`;
  assert.equal(local, 1);
  assert.equal(await lesson04.routeOf(host, "europe"), "europe_tweets");
  assert.equal(await lesson04.routeOf(host, "canada"), "tweets_default");
  const [{ n: probes }] = await host
    .sql`SELECT count(*) AS n FROM tweets WHERE text = 'routing probe'`;
  assert.equal(probes, 0, "routeOf() writes nothing");
});

Deno.test("rows written on a regional node are visible through the host, with ids in the node's range", async () => {
  await using cluster = await startCluster({ name: "t-04-visibility" });
  await lesson04.reset(cluster, "testing");
  const host = cluster.node("host");
  await host.exec(`INSERT INTO tweets (location, text, owner_id, like_count)
    VALUES ('europe', 'via host', 1, 0)`);
  const [{ rows: [direct] }] = await lesson04.loginAs(cluster.node("europe"), EU).exec(`
    INSERT INTO europe_tweets (location, text, owner_id, like_count)
      VALUES ('europe', 'written in Frankfurt', 9, 0) RETURNING id`);
  assert.ok(Number(direct.id) >= EU.idStart, `direct id ${direct.id} in europe's range`);
  const seen = await host.sql`
    SELECT tableoid::regclass::text AS partition, id, text FROM tweets ORDER BY id`;
  assert.deepEqual(seen.map((r) => [r.partition, r.text]), [
    ["europe_tweets", "via host"],
    ["europe_tweets", "written in Frankfurt"],
  ]);
  assert.equal(seen[1].id, direct.id);
  const [{ n: viaPartition }] = await host.sql`SELECT count(*) AS n FROM europe_tweets`;
  assert.equal(viaPartition, 2);
});

Deno.test("the application roles have only what they need", async () => {
  await using cluster = await startCluster({ name: "t-04-roles" });
  await lesson04.reset(cluster, "testing");
  const [europe, usa, host] = [cluster.node("europe"), cluster.node("usa"), cluster.node("host")];
  // europe cannot read us_tweets: its credentials do not open the usa node ...
  assert.equal(
    await sqlState(lesson04.loginAs(usa, { ...EU, database: US.database }).exec(`SELECT 1`)),
    "28P01",
  );
  // ... and it cannot build a link there from its own database.
  assert.equal(
    await sqlState(lesson04.loginAs(europe, EU).exec(`CREATE EXTENSION postgres_fdw`)),
    "42501",
  );
  assert.equal(
    await sqlState(
      lesson04.loginAs(europe, { ...EU, database: "postgres" }).exec(`CREATE TABLE x (i int)`),
    ),
    "42501",
  );
  for (const [node, app] of [[europe, EU], [usa, US]] as const) {
    const [role] = await node.sql`
      SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls
      FROM pg_roles WHERE rolname = ${app.user}`;
    assert.deepEqual(Object.values(role), [false, false, false, false, false], app.user);
  }
  // tweets_app on the host: read and insert through tweets, nothing else.
  const asApp = lesson04.loginAs(host, HOST_APP);
  await asApp.exec(`INSERT INTO tweets (location, text, owner_id, like_count)
    VALUES ('usa', 'by tweets_app', 1, 0)`);
  assert.equal(await countOn(usa, US, "text = 'by tweets_app'"), 1);
  for (
    const statement of [
      `DELETE FROM tweets`,
      `UPDATE tweets SET like_count = 1`,
      `TRUNCATE tweets`,
      `SELECT * FROM tweets_default`,
      `INSERT INTO tweets_default (location, text, owner_id, like_count) VALUES ('x', 'y', 1, 0)`,
    ]
  ) {
    assert.equal(await sqlState(asApp.exec(statement)), "42501", statement);
  }
});

Deno.test("distribution() counts foreign partitions in the database their server names", async () => {
  await using cluster = await startCluster({ name: "t-04-distribution" });
  await lesson04.reset(cluster, "apis");
  const shards = await distribution(cluster.node("host"), "tweets");
  assert.deepEqual(
    shards.map((s) => [s.partition, s.node, s.rows]),
    [
      ["europe_tweets", "europe", GENERATED.europe + 2],
      ["tweets_default", "host", GENERATED.asia + GENERATED.canada + 1],
      ["us_tweets", "usa", GENERATED.usa + 41],
    ],
  );
  assert.ok(shards.every((s) => (s.bytes ?? 0) > 0));
});

Deno.test("attaching asia fails while tweets_default holds asia rows; moving them first loses none", async () => {
  await using cluster = await startCluster({ name: "t-04-new-region" });
  await lesson04.reset(cluster, "new-region");
  const host = cluster.node("host");
  await host.exec(lesson04.MORE_ASIA_TWEETS);
  const asia = await cluster.addNode(lesson04.ASIA_NODE);
  await lesson04.createRegionalDatabase(asia, ASIA);
  await lesson04.linkRegion(cluster, ASIA, { batchSize: 500 });
  const ids = async (sql: string) => (await host.sql.unsafe(sql)).map((r) => Number(r.id));
  const asiaIds = await ids(`SELECT id FROM tweets_default WHERE location = 'asia' ORDER BY id`);
  const [{ n: total }] = await host.sql`SELECT count(*) AS n FROM tweets`;
  assert.equal(asiaIds.length, GENERATED.asia + 1000);

  await assert.rejects(
    host.exec(`CREATE FOREIGN TABLE asia_tweets PARTITION OF tweets
      FOR VALUES IN ('asia') SERVER asia`),
    /updated partition constraint for default partition "tweets_default" would be violated by some row/,
  );
  assert.deepEqual(
    await ids(`SELECT id FROM tweets_default WHERE location = 'asia' ORDER BY id`),
    asiaIds,
  );

  // If the move fails half-way (the asia node is down), the transaction leaves everything as it was.
  // (On its own connection: node.exec() would return a connection left in the aborted transaction to the pool.)
  await asia.stop();
  const conn = connect({ host: host.host, port: host.port }, host.user, host.password);
  await assert.rejects(conn.unsafe(lesson04.MOVE_ASIA_AND_ATTACH).simple());
  await conn.end();
  assert.deepEqual(
    await ids(`SELECT id FROM tweets_default WHERE location = 'asia' ORDER BY id`),
    asiaIds,
  );
  const [{ n: stray }] = await host
    .sql`SELECT count(*) AS n FROM pg_class WHERE relname = 'asia_tweets'`;
  assert.equal(stray, 0);
  await asia.restart();

  await host.exec(lesson04.MOVE_ASIA_AND_ATTACH);
  const moved = await lesson04.loginAs(asia, ASIA).query(async (sql) =>
    (await sql`SELECT id FROM asia_tweets ORDER BY id`).map((r) => Number(r.id))
  );
  assert.deepEqual(moved, asiaIds, "the same rows, ids kept");
  const [after] = await host.sql`
    SELECT (SELECT count(*) FROM tweets) AS total,
           (SELECT count(*) FROM tweets_default WHERE location = 'asia') AS left_behind`;
  assert.deepEqual([after.total, after.left_behind], [total, 0]);
  assert.equal(await lesson04.routeOf(host, "asia"), "asia_tweets");
});

Deno.test("lesson04.reset() goes back: from 'exercises' to 'apis' removes asia and the APIs it added", async () => {
  await using cluster = await startCluster({ name: "t-04-reset-back" });
  await lesson04.reset(cluster, "exercises");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["host", "europe", "usa", "asia"]);
  assert.deepEqual(cluster.services.map((s) => s.name), [
    "europe_api",
    "usa_api",
    "host_api",
    "asia_api",
  ]);
  await lesson04.reset(cluster, "apis");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["host", "europe", "usa"]);
  assert.deepEqual(cluster.services.map((s) => s.name), []);
  const [{ n: imported }] = await cluster.node("host")
    .sql`SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'usa_remote'`;
  assert.equal(imported, 0);
  await lesson04.reset(cluster, "regional-databases");
  const [{ n: dbs }] = await cluster.node("europe")
    .sql`SELECT count(*) AS n FROM pg_database WHERE datname = 'eutweets'`;
  assert.equal(dbs, 0);
});

for (const id of ["04.like_endpoint", "04.canada_to_usa"]) {
  Deno.test(`exercise ${id}: not attempted, then wrong after a plausible mistake`, async () => {
    await using cluster = await startCluster({ name: `t-04-ex-wrong-${id.slice(3)}` });
    const ex = exercise(id, cluster);
    await ex.definition.setup(cluster);
    const untouched = await ex.check();
    assert.equal(untouched.status, "not-attempted" satisfies CheckStatus, untouched.message);
    await ex.definition.attemptWrong(cluster);
    const wrong = await ex.check();
    assert.equal(wrong.status, "wrong" satisfies CheckStatus, wrong.message);
  });

  Deno.test(`exercise ${id}: correct after the solution`, async () => {
    await using cluster = await startCluster({ name: `t-04-ex-solve-${id.slice(3)}` });
    const ex = exercise(id, cluster);
    await ex.definition.setup(cluster);
    await ex.definition.solve(cluster);
    const solved = await ex.check();
    assert.equal(solved.status, "correct" satisfies CheckStatus, solved.message);
  });
}
