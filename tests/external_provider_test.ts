/**
 * Tests of the external provider: servers given by URL. The "existing
 * servers" here are embedded PostgreSQL nodes started by the test and handed
 * to the provider as URLs, exactly as a user would hand real servers.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { type Cluster, isWorkshopError, linkNodes, startCluster } from "../lib/mod.ts";
import {
  databaseName,
  type ExternalProvider,
  externalProvider,
  type ExternalServer,
  loadExternalServers,
  parseExternalServers,
} from "../lib/providers/external.ts";
import { withLatencyScale } from "./_helpers.ts";
import { portableNotebookCopy } from "./_provider_helpers.ts";

/** Two embedded servers, "eu" in London and "us" in N. Virginia, as URLs. */
async function withServers(
  name: string,
  fn: (servers: ExternalServer[], backing: Cluster) => Promise<void>,
): Promise<void> {
  await using backing = await startCluster({
    name,
    provider: "embedded",
    nodes: [{ name: "eu", region: "eu-west-2" }, { name: "us", region: "us-east-1" }],
  });
  const servers = backing.nodes.map((n) => ({
    name: n.name,
    url: n.connectionString(),
    region: n.region,
  }));
  await fn(servers, backing);
}

async function databases(server: Cluster, node: string): Promise<string[]> {
  const rows = await server.node(node)
    .sql`SELECT datname FROM pg_database WHERE datname LIKE 'pgsw%' ORDER BY 1`;
  return rows.map((r) => r.datname as string);
}

Deno.test("parseExternalServers() reads the name=url#region list and the JSON form", () => {
  assert.deepEqual(
    parseExternalServers(
      "eu=postgres://u:p%23w@db-eu:5432/postgres?sslmode=disable#eu-west-2, postgresql://u@db-us/app#us-east-1",
    ),
    [
      {
        name: "eu",
        url: "postgres://u:p%23w@db-eu:5432/postgres?sslmode=disable",
        region: "eu-west-2",
      },
      { name: "server_2", url: "postgresql://u@db-us/app", region: "us-east-1" },
    ],
  );
  assert.deepEqual(parseExternalServers("postgres://u:p@h/db"), [
    { name: "server_1", url: "postgres://u:p@h/db", region: "eu-west-2" },
  ]);
  assert.deepEqual(
    parseExternalServers(
      '[{"name":"eu","url":"postgres://u:p@h:5433/db","region":"eu-central-1","peerHost":"10.0.0.5","peerPort":5432}]',
    ),
    [{
      name: "eu",
      url: "postgres://u:p@h:5433/db",
      region: "eu-central-1",
      peerHost: "10.0.0.5",
      peerPort: 5432,
    }],
  );
  assert.deepEqual(parseExternalServers("  "), []);
});

Deno.test("parseExternalServers() rejects bad entries with INVALID_SETTING or UNKNOWN_REGION", async () => {
  assert.throws(
    () => parseExternalServers("eu=http://h/db"),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /not a postgres:\/\/ URL/.test(e.message),
  );
  assert.throws(
    () => parseExternalServers("eu=not a url"),
    (e) => isWorkshopError(e, "INVALID_SETTING"),
  );
  assert.throws(
    () => parseExternalServers("eu=postgres://u:secret@h/db#mars-1"),
    (e) => isWorkshopError(e, "UNKNOWN_REGION"),
  );
  assert.throws(
    () => parseExternalServers("a=postgres://h/db,a=postgres://h2/db"),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /appears twice/.test(e.message),
  );
  assert.throws(
    () => parseExternalServers("[{"),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /not valid JSON/.test(e.message),
  );
  // Passwords never appear in messages.
  assert.throws(
    () => parseExternalServers("eu=mysql://u:secret@h/db"),
    (e) => e instanceof Error && !e.message.includes("secret"),
  );
  await assert.rejects(
    () => loadExternalServers(""),
    (e) =>
      isWorkshopError(e, "INVALID_SETTING") && /WORKSHOP_EXTERNAL_NODES is empty/.test(e.message),
  );
  await assert.rejects(
    () => loadExternalServers("@/nonexistent/servers.json"),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /Cannot read/.test(e.message),
  );
});

Deno.test("loadExternalServers() reads @file", async () => {
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, '[{"name":"eu","url":"postgres://u:p@h/db"}]');
    assert.deepEqual(await loadExternalServers(`@${file}`), [
      { name: "eu", url: "postgres://u:p@h/db", region: "eu-west-2" },
    ]);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("databaseName() is pgsw_<cluster>_<node>, safe and at most 63 bytes", () => {
  assert.equal(databaseName("horizontal-scaling", "eu_db_1"), "pgsw_horizontal_scaling_eu_db_1");
  const long = databaseName("a".repeat(80), "eu_db_1");
  assert.equal(long.length, 63);
  assert.notEqual(long, databaseName("a".repeat(81), "eu_db_1"));
});

Deno.test("externalProvider() makes each node a database on the server of its region and drops it at stop", async () => {
  await withServers("t-ext-servers", async (servers, backing) => {
    await withLatencyScale(1, async () => {
      await backing.node("eu").exec("CREATE TABLE IF NOT EXISTS untouched (x int)");
      const provider = await externalProvider({ clusterName: "t-ext", servers });
      const cluster = await startCluster({
        name: "t-ext",
        provider,
        nodes: [
          { name: "eu_db_1", region: "eu-west-2" },
          { name: "eu_db_2", region: "eu-west-2" },
          { name: "us_db_1", region: "us-east-1" },
        ],
      });
      try {
        assert.equal(cluster.provider.kind, "external");
        assert.deepEqual(
          (provider as ExternalProvider).placements.map((p) => [p.node, p.server]).sort(),
          [["eu_db_1", "eu"], ["eu_db_2", "eu"], ["us_db_1", "us"]],
        );
        assert.deepEqual(await databases(backing, "eu"), [
          "pgsw_t_ext_eu_db_1",
          "pgsw_t_ext_eu_db_2",
        ]);
        assert.deepEqual(await databases(backing, "us"), ["pgsw_t_ext_us_db_1"]);
        const [eu1, eu2, us1] = cluster.nodes;
        assert.equal(eu1.database, "pgsw_t_ext_eu_db_1");
        assert.equal(eu1.port, backing.node("eu").port);
        assert.equal(eu1.password, backing.password, "the URL's password, not the cluster's");
        const [{ db }] = await eu1.sql`SELECT current_database() AS db`;
        assert.equal(db, "pgsw_t_ext_eu_db_1");

        // postgres_fdw between two databases of one server, and across servers.
        await eu2.exec("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 7)");
        await us1.exec("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 3)");
        const near = await linkNodes(eu1, eu2);
        const far = await linkNodes(eu1, us1);
        // No simulated latency: even across regions the link goes straight to the server.
        assert.deepEqual([far.host, far.port], [us1.host, us1.port]);
        assert.deepEqual([near.host, near.port], [eu2.host, eu2.port]);
        await eu1.exec(`
          CREATE FOREIGN TABLE t_eu2 (x int) SERVER eu_db_2 OPTIONS (table_name 't');
          CREATE FOREIGN TABLE t_us1 (x int) SERVER us_db_1 OPTIONS (table_name 't');`);
        const [r] = await eu1
          .sql`SELECT (SELECT count(*) FROM t_eu2) AS eu2, (SELECT count(*) FROM t_us1) AS us1`;
        assert.deepEqual({ ...r }, { eu2: 7, us1: 3 });
        const client = await us1.client({ from: "eu-west-2" });
        assert.equal((await client`SELECT count(*) AS n FROM t`)[0].n, 3);

        // stop() closes the database to connections; restart() opens it again.
        await us1.stop();
        const probe = postgres(us1.connectionString(), { max: 1, onnotice: () => {} });
        await assert.rejects(() => probe`SELECT 1`, /not currently accepting connections|terminat/);
        await probe.end();
        await us1.restart();
        assert.equal((await us1.sql`SELECT count(*) AS n FROM t`)[0].n, 3);

        await cluster.removeNode("eu_db_2");
        assert.deepEqual(await databases(backing, "eu"), ["pgsw_t_ext_eu_db_1"]);
      } finally {
        await cluster.stop();
      }
      assert.deepEqual(await databases(backing, "eu"), []);
      assert.deepEqual(await databases(backing, "us"), []);
      const [{ n }] = await backing.node("eu")
        .sql`SELECT count(*) AS n FROM pg_class WHERE relname = 'untouched'`;
      assert.equal(n, 1, "the server's own objects are left alone");
    });
  });
});

Deno.test("externalProvider() places a node on the server with its name, else round-robin", async () => {
  await withServers("t-ext-servers-2", async (servers) => {
    const provider = await externalProvider({ clusterName: "t-ext-2", servers });
    await using _cluster = await startCluster({
      name: "t-ext-2",
      provider,
      nodes: [
        { name: "a", region: "ap-northeast-1" }, // no server in Tokyo: the least used one
        { name: "b", region: "ap-northeast-1" },
        { name: "us", region: "eu-west-2" }, // named like a server: goes there, whatever its region
        { name: "c", region: "us-east-1" }, // the server in its region
      ],
    });
    const placed = Object.fromEntries(provider.placements.map((p) => [p.node, p.server]));
    assert.deepEqual([placed.a, placed.b].sort(), ["eu", "us"]);
    assert.equal(placed.us, "us");
    assert.equal(placed.c, "us");
  });
});

Deno.test("externalProvider() drops databases that dead runs of this machine left, and only those", async () => {
  await withServers("t-ext-servers-3", async (servers, backing) => {
    const eu = backing.node("eu");
    for (
      const statement of [
        "CREATE DATABASE pgsw_stale_eu_db_1",
        `COMMENT ON DATABASE pgsw_stale_eu_db_1 IS 'pgsw run ${Deno.hostname()} /nonexistent/run-dead'`,
        "CREATE DATABASE pgsw_other_machine",
        "COMMENT ON DATABASE pgsw_other_machine IS 'pgsw run another-host /nonexistent/run-x'",
        "CREATE DATABASE pgsw_not_ours",
      ]
    ) await eu.exec(statement);
    const provider = await externalProvider({ clusterName: "t-ext-3", servers });
    await provider.dispose();
    assert.deepEqual(await databases(backing, "eu"), ["pgsw_not_ours", "pgsw_other_machine"]);
  });
});

Deno.test("externalProvider() says which server it cannot reach", async () => {
  await assert.rejects(
    () =>
      externalProvider({
        servers: [{
          name: "gone",
          url: "postgres://postgres:pw@127.0.0.1:1/postgres",
          region: "eu-west-2",
        }],
      }),
    (e) =>
      isWorkshopError(e, "NODE_START_FAILED") && /"gone"/.test(e.message) &&
      !e.message.includes(":pw@"),
  );
});

Deno.test({
  name:
    "deno task report runs notebook 01 against servers given by URL (WORKSHOP_PROVIDER=external)",
  sanitizeResources: false,
  fn: async () => {
    await withServers("t-ext-report", async (servers, backing) => {
      const out = await Deno.makeTempDir({ prefix: "pgsw-external-report-" });
      const notebooks = await portableNotebookCopy("01");
      try {
        const nodes = servers.map((s) => `${s.name}=${s.url}#${s.region}`).join(",");
        const result = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "tools/report.ts", "--notebooks-dir", notebooks, "--out", out, "01"],
          cwd: new URL("..", import.meta.url).pathname,
          env: {
            WORKSHOP_PROVIDER: "external",
            WORKSHOP_EXTERNAL_NODES: nodes,
            LATENCY_SCALE: "0.1",
            NO_COLOR: "1",
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(result.stdout) +
          new TextDecoder().decode(result.stderr);
        const summary = JSON.parse(
          await Deno.readTextFile(`${out}/summary.json`).catch(() => {
            throw new Error(`The report did not run:\n${text}`);
          }),
        );
        assert.equal(summary.notebooks[0].status, "ok", text);
        assert.ok(result.success, text);
        assert.match(
          await Deno.readTextFile(`${out}/${summary.notebooks[0].notebook}.html`),
          /external provider/,
        );
        // The notebook's databases are gone; the servers are as before.
        assert.deepEqual(await databases(backing, "eu"), []);
        assert.deepEqual(await databases(backing, "us"), []);
      } finally {
        await Deno.remove(out, { recursive: true });
        await Deno.remove(notebooks, { recursive: true });
      }
    });
  },
});

Deno.test("externalProvider() applies session settings per database and refuses missing server settings", async () => {
  await withServers("t-ext-servers-4", async (servers, backing) => {
    const provider = await externalProvider({ clusterName: "t-ext-4", servers });
    await using cluster = await startCluster({ name: "t-ext-4", provider });
    const node = await cluster.addNode({
      name: "eu_db_1",
      settings: { statement_timeout: "5s", work_mem: "8MB" },
    });
    const [s] = await node.sql`SELECT current_setting('statement_timeout') AS st,
      current_setting('work_mem') AS wm`;
    assert.deepEqual({ ...s }, { st: "5s", wm: "8MB" });
    await assert.rejects(
      () => cluster.addNode({ name: "eu_db_2", settings: { wal_level: "logical" } }),
      (e) =>
        isWorkshopError(e, "INVALID_SETTING") &&
        /wal_level = logical \(server has replica\)/.test(e.message) && /ALTER SYSTEM/.test(e.fix),
    );
    assert.deepEqual(await databases(backing, "eu"), ["pgsw_t_ext_4_eu_db_1"]);
  });
});
