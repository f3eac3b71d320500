import assert from "node:assert/strict";
import { connect, foreignServers, linkNodes, startCluster } from "../lib/mod.ts";
import { withLatencyScale } from "./_helpers.ts";

Deno.test("linkNodes() creates extension, server, user mapping and grant, verified in the catalog", async () => {
  await using cluster = await startCluster({
    name: "t-link",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const [eu1, eu2] = cluster.nodes;
  await eu2.exec(
    "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one'), (2, 'two')",
  );
  const link = await linkNodes(eu1, eu2, { fetchSize: 500 });
  assert.equal(link.server, "eu_db_2");
  assert.equal(link.port, eu2.port, "same region: the server points at the node itself");
  const [catalog] = await eu1.sql`
    SELECT s.srvoptions, m.umoptions IS NOT NULL AS mapped, has_server_privilege('eu_db_2', 'USAGE') AS usable
    FROM pg_foreign_server s JOIN pg_user_mappings m ON m.srvid = s.oid WHERE s.srvname = 'eu_db_2'`;
  assert.ok((catalog.srvoptions as string[]).includes("fetch_size=500"));
  assert.equal(catalog.mapped, true);
  assert.equal(catalog.usable, true);
  await eu1.exec(
    "CREATE FOREIGN TABLE items_remote (id int, label text) SERVER eu_db_2 OPTIONS (table_name 'items')",
  );
  const rows = await eu1.sql`SELECT label FROM items_remote ORDER BY id`;
  assert.deepEqual(rows.map((r) => r.label), ["one", "two"]);
});

Deno.test("linkNodes() is idempotent and updates options on a second run", async () => {
  await using cluster = await startCluster({
    name: "t-link-idem",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const [eu1, eu2] = cluster.nodes;
  await linkNodes(eu1, eu2, { batchSize: 1 });
  await linkNodes(eu1, eu2, { batchSize: 100 });
  const servers = await eu1.sql`SELECT srvoptions FROM pg_foreign_server`;
  assert.equal(servers.length, 1);
  assert.ok((servers[0].srvoptions as string[]).includes("batch_size=100"));
  const mappings = await eu1.sql`SELECT count(*) AS n FROM pg_user_mappings`;
  assert.equal(mappings[0].n, 1);
  const listed = await foreignServers(eu1);
  assert.deepEqual(listed.map((s) => [s.server, s.target]), [["eu_db_2", "eu_db_2"]]);
});

Deno.test("linkNodes() across regions leads through a delay proxy that foreign queries pay for", async () => {
  await withLatencyScale(1, async () => {
    await using cluster = await startCluster({
      name: "t-link-region",
      nodes: [{ name: "eu_db_1", region: "eu-west-2" }, { name: "us_db_1", region: "us-east-1" }],
    });
    const [eu1, us1] = cluster.nodes;
    await us1.exec("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10)");
    const link = await linkNodes(eu1, us1);
    assert.notEqual(link.port, us1.port, "cross-region: the server points at a proxy");
    assert.equal((await cluster.nodeAt(link.host, link.port))?.name, "us_db_1");
    await eu1.exec("CREATE FOREIGN TABLE t_remote (x int) SERVER us_db_1 OPTIONS (table_name 't')");
    await eu1.sql`SELECT count(*) FROM t_remote`; // open the FDW connection
    const started = performance.now();
    const [{ n }] = await eu1.sql`SELECT count(*) AS n FROM t_remote`;
    const elapsed = performance.now() - started;
    assert.equal(n, 10);
    // A warm foreign count needs several round trips of 76 ms; well above a local query.
    assert.ok(
      elapsed >= 76,
      `a London -> N. Virginia foreign count took only ${elapsed.toFixed(1)} ms`,
    );
  });
});

Deno.test("Node.client() from another region pays the round trip; from the node's region it does not", async () => {
  await withLatencyScale(1, async () => {
    await using cluster = await startCluster({
      name: "t-client-region",
      nodes: [{ name: "eu_db_1", region: "eu-west-2" }],
    });
    const eu1 = cluster.node("eu_db_1");
    const remote = await eu1.client({ from: "ap-northeast-1" });
    const local = await eu1.client();
    await remote`SELECT 1`;
    await local`SELECT 1`;
    const time = async (sql: typeof remote) => {
      const t = performance.now();
      await sql`SELECT 1`;
      return performance.now() - t;
    };
    const remoteMs = await time(remote);
    const localMs = await time(local);
    assert.ok(remoteMs >= 210, `London <- Tokyo round trip was ${remoteMs.toFixed(1)} ms`);
    assert.ok(localMs < 210, `a local query took ${localMs.toFixed(1)} ms`);
  });
});

Deno.test("Cluster.route() goes direct when the latency scale is 0", async () => {
  await withLatencyScale(0, async () => {
    await using cluster = await startCluster({
      name: "t-scale0",
      nodes: [{ name: "us_db_1", region: "us-east-1" }],
    });
    const us1 = cluster.node("us_db_1");
    const address = await cluster.route("ap-southeast-2", us1);
    assert.equal(address.port, us1.port);
  });
});

Deno.test("linkNodes() with a local role can be re-run (the role's own mapping is updated)", async () => {
  await using cluster = await startCluster({
    name: "t-link-role",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const [eu1, eu2] = cluster.nodes;
  await eu1.exec("CREATE ROLE app LOGIN PASSWORD 'app'");
  await linkNodes(eu1, eu2, { localRole: "app" });
  await linkNodes(eu1, eu2, { localRole: "app" });
  const rows = await eu1.sql`SELECT usename FROM pg_user_mappings WHERE srvname = 'eu_db_2'`;
  assert.deepEqual(rows.map((r) => r.usename), ["app"]);
});

Deno.test("a client reaching a stopped node across regions gets an error, not an endless reconnect", async () => {
  await withLatencyScale(0.1, async () => {
    await using cluster = await startCluster({
      name: "t-refusal",
      nodes: [{ name: "us_db_1", region: "us-east-1" }],
    });
    const us1 = cluster.node("us_db_1");
    const address = await cluster.route("eu-west-2", us1);
    await us1.stop();
    const sql = connect(address, us1.user, us1.password);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise((_, reject) =>
      timer = setTimeout(() => reject(new Error("still waiting after 20 s")), 20_000)
    );
    try {
      await assert.rejects(
        () => Promise.race([sql`SELECT 1`, hung]),
        /node "us_db_1" \(us-east-1\) is not accepting connections/,
      );
    } finally {
      clearTimeout(timer);
      await sql.end({ timeout: 1 });
    }
  });
});
