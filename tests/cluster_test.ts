import assert from "node:assert/strict";
import postgres from "postgres";
import {
  isWorkshopError,
  mimeBundle,
  reclaimStaleRuns,
  settings,
  startCluster,
} from "../lib/mod.ts";
import {
  pathExists,
  postmasterPid,
  processExists,
  processUser,
  readLineUntil,
  runDirectories,
  spawnDeno,
  waitFor,
} from "./_helpers.ts";

Deno.test("startCluster() starts named nodes with region, role and a working client", async () => {
  await using cluster = await startCluster({
    name: "t-start",
    nodes: [
      { name: "eu_db_1", region: "eu-west-2", role: "coordinator" },
      { name: "us_db_1", region: "us-east-1", role: "shard" },
    ],
  });
  assert.deepEqual(cluster.nodes.map((n) => [n.name, n.region, n.role]), [
    ["eu_db_1", "eu-west-2", "coordinator"],
    ["us_db_1", "us-east-1", "shard"],
  ]);
  const [row] = await cluster.node("us_db_1")
    .sql`SELECT current_setting('server_version_num')::int AS v`;
  assert.ok(
    (row.v as number) >= 160000 && (row.v as number) < 170000,
    `PostgreSQL 16 expected, got ${row.v}`,
  );
});

Deno.test("startCluster() nodes listen on 127.0.0.1 only, with scram-sha-256 and no unix socket", async () => {
  await using cluster = await startCluster({ name: "t-security", nodes: [{ name: "eu_db_1" }] });
  const node = cluster.node("eu_db_1");
  const [s] = await node.sql`
    SELECT current_setting('listen_addresses') AS listen, current_setting('unix_socket_directories') AS sockets,
           (SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres') AS scram,
           (SELECT array_agg(DISTINCT auth_method) FROM pg_hba_file_rules) AS methods`;
  assert.equal(s.listen, "127.0.0.1");
  assert.equal(s.sockets, "");
  assert.equal(s.scram, true);
  assert.deepEqual(s.methods, ["scram-sha-256"]);
  const wrong = postgres({
    host: node.host,
    port: node.port,
    user: "postgres",
    password: "password",
    max: 1,
  });
  await assert.rejects(() => wrong`SELECT 1`, /password authentication failed/);
  await wrong.end();
});

Deno.test("startCluster() gives each cluster its own random password and masks it in URLs", async () => {
  await using a = await startCluster({ name: "t-pw-a", nodes: [{ name: "eu_db_1" }] });
  await using b = await startCluster({ name: "t-pw-b", nodes: [{ name: "eu_db_1" }] });
  assert.notEqual(a.password, b.password);
  assert.ok(a.password.length >= 20);
  const node = a.node("eu_db_1");
  assert.ok(!node.url.includes(a.password));
  assert.match(node.url, /^postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1:\d+\/postgres$/);
  assert.ok(!String(node).includes(a.password));
  const shown = JSON.stringify(mimeBundle(node)) + JSON.stringify(mimeBundle(a));
  assert.ok(!shown.includes(a.password), "display output must not contain the password");
  assert.ok(node.connectionString().includes(encodeURIComponent(a.password)));
});

Deno.test("Cluster.addNode() and removeNode() grow and shrink a running cluster", async () => {
  await using cluster = await startCluster({ name: "t-grow", nodes: [{ name: "eu_db_1" }] });
  const eu2 = await cluster.addNode({ name: "eu_db_2", region: "eu-west-2" });
  await eu2.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db_1", "eu_db_2"]);
  const pid = await postmasterPid(eu2.dataDir!);
  assert.ok(pid && processExists(pid));
  await cluster.removeNode("eu_db_2");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db_1"]);
  assert.ok(!processExists(pid!), "the removed node's postmaster must be gone");
  assert.equal(await pathExists(eu2.dataDir!), false, "the removed node's data must be gone");
  await assert.rejects(() => eu2.exec("SELECT 1"), (e) => isWorkshopError(e, "CLUSTER_STOPPED"));
});

Deno.test("Cluster.addNode() is idempotent for the same name and region, and rejects a conflicting one", async () => {
  await using cluster = await startCluster({ name: "t-idem", nodes: [{ name: "eu_db_1" }] });
  const again = await cluster.addNode({ name: "eu_db_1", region: "eu-west-2" });
  assert.equal(again, cluster.node("eu_db_1"));
  await assert.rejects(
    () => cluster.addNode({ name: "eu_db_1", region: "us-east-1" }),
    (e) => isWorkshopError(e, "DUPLICATE_NODE") && /exists in eu-west-2/.test(e.message),
  );
});

Deno.test("Cluster.node() names the nodes that exist when the name is unknown", async () => {
  await using cluster = await startCluster({ name: "t-unknown", nodes: [{ name: "eu_db_1" }] });
  assert.throws(
    () => cluster.node("eu_db_9"),
    (e) => isWorkshopError(e, "UNKNOWN_NODE") && /eu_db_9/.test(e.message) && /eu_db_1/.test(e.fix),
  );
});

Deno.test("Cluster.addNode() rejects an unknown region with the list of regions", async () => {
  await using cluster = await startCluster({ name: "t-region" });
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => cluster.addNode({ name: "mars_db_1", region: "mars-north-1" as any }),
    (e) =>
      isWorkshopError(e, "UNKNOWN_REGION") && /mars-north-1/.test(e.message) &&
      /eu-west-2/.test(e.fix),
  );
});

Deno.test("Cluster.addNode() reports PORT_IN_USE for a taken port and loses nothing", async () => {
  await using cluster = await startCluster({ name: "t-port", nodes: [{ name: "eu_db_1" }] });
  await cluster.node("eu_db_1").exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)");
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (blocker.addr as Deno.NetAddr).port;
  try {
    await assert.rejects(
      () => cluster.addNode({ name: "eu_db_2", port }),
      (e) =>
        isWorkshopError(e, "PORT_IN_USE") && e.message.includes(String(port)) &&
        /eu_db_2/.test(e.message),
    );
  } finally {
    blocker.close();
  }
  assert.equal(cluster.has("eu_db_2"), false);
  const [{ x }] = await cluster.node("eu_db_1").sql`SELECT x FROM kept`;
  assert.equal(x, 42);
});

Deno.test("Cluster.addNode() reports NODE_START_FAILED with the server log's last lines", async () => {
  await using cluster = await startCluster({ name: "t-fail" });
  await assert.rejects(
    () => cluster.addNode({ name: "eu_db_1", settings: { shared_buffers: "lots" } }),
    (e) =>
      isWorkshopError(e, "NODE_START_FAILED") && /eu_db_1/.test(e.message) &&
      /invalid value for parameter "shared_buffers"/.test(e.details ?? ""),
  );
  assert.equal(cluster.nodes.length, 0);
});

Deno.test("startCluster() reuses the initdb template instead of running initdb per node", async () => {
  await using first = await startCluster({ name: "t-template", nodes: [{ name: "eu_db_1" }] });
  const manifests = [...Deno.readDirSync(settings().cacheDir)].filter((e) =>
    e.name.endsWith(".json")
  );
  assert.equal(manifests.length, 1, "one template manifest in the cache");
  const manifestPath = `${settings().cacheDir}/${manifests[0].name}`;
  const before = Deno.statSync(manifestPath).mtime?.getTime();
  const [sysid1] = await first.node("eu_db_1")
    .sql`SELECT system_identifier AS id FROM pg_control_system()`;
  await using second = await startCluster({
    name: "t-template-2",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const ids = await Promise.all(
    second.nodes.map(async (n) =>
      (await n.sql`SELECT system_identifier AS id FROM pg_control_system()`)[0].id
    ),
  );
  assert.equal(
    Deno.statSync(manifestPath).mtime?.getTime(),
    before,
    "the template was not rebuilt",
  );
  // Copies of one template share the system identifier that initdb chose.
  assert.deepEqual(ids, [sysid1.id, sysid1.id]);
});

Deno.test("startCluster() runs PostgreSQL as an unprivileged OS user when the kit runs as root", async () => {
  await using cluster = await startCluster({ name: "t-root", nodes: [{ name: "eu_db_1" }] });
  const pid = await postmasterPid(cluster.node("eu_db_1").dataDir!);
  const user = await processUser(pid!);
  if (Deno.uid() === 0) {
    assert.equal(user, settings().osUser);
  } else {
    assert.equal(user, Deno.env.get("USER") ?? user);
  }
  assert.notEqual(user, "root");
});

Deno.test("Cluster.stop() leaves no process, data directory or run directory behind", async () => {
  const cluster = await startCluster({
    name: "t-clean",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const dirs = cluster.nodes.map((n) => n.dataDir!);
  const pids = await Promise.all(dirs.map(postmasterPid));
  const runDir = dirs[0].split("/nodes/")[0];
  await cluster.stop();
  await cluster.stop(); // idempotent
  for (const pid of pids) assert.ok(!processExists(pid!), `postmaster ${pid} still running`);
  for (const dir of dirs) assert.equal(await pathExists(dir), false);
  const left = await Array.fromAsync(Deno.readDir(`${runDir}/nodes`)).catch(() => []);
  assert.equal(
    await pathExists(runDir),
    false,
    `the run directory is removed with the last cluster (left: ${left.map((e) => e.name)})`,
  );
});

Deno.test("startCluster() with the name of a running cluster replaces it (re-running a setup cell)", async () => {
  const first = await startCluster({ name: "t-replace", nodes: [{ name: "eu_db_1" }] });
  const pid = await postmasterPid(first.node("eu_db_1").dataDir!);
  await using second = await startCluster({ name: "t-replace", nodes: [{ name: "eu_db_1" }] });
  assert.equal(first.stopped, true);
  assert.ok(!processExists(pid!));
  assert.equal(second.nodes.length, 1);
});

const CHILD_STARTS_NODE = `
  import { startCluster } from "./lib/mod.ts";
  const cluster = await startCluster({ name: "child", nodes: [{ name: "eu_db_1" }] });
  console.log("DATADIR " + cluster.node("eu_db_1").dataDir);
  await new Promise(() => {}); // wait to be killed
`;

/** PostgreSQL's dynamic shared memory segments in /dev/shm (none should belong to the kit's nodes). */
function sharedMemorySegments(): Set<string> {
  try {
    return new Set(
      [...Deno.readDirSync("/dev/shm")].map((e) => e.name).filter((n) =>
        n.startsWith("PostgreSQL.")
      ),
    );
  } catch {
    return new Set();
  }
}

Deno.test("the reaper stops nodes of a process killed with SIGKILL", async () => {
  const segmentsBefore = sharedMemorySegments();
  const child = spawnDeno(CHILD_STARTS_NODE);
  const line = await readLineUntil(child, (l) => l.startsWith("DATADIR "));
  const dataDir = line.slice("DATADIR ".length).trim();
  const pid = await postmasterPid(dataDir);
  assert.ok(pid && processExists(pid));
  child.kill("SIGKILL");
  await child.status;
  await child.stderr.cancel();
  assert.ok(await waitFor(() => !processExists(pid!)), "the orphaned postmaster was stopped");
  assert.ok(
    await waitFor(async () => !await pathExists(dataDir)),
    "the orphaned data directory was removed",
  );
  const leftSegments = [...sharedMemorySegments()].filter((n) => !segmentsBefore.has(n));
  assert.deepEqual(leftSegments, [], "no shared memory segment left in /dev/shm");
});

Deno.test("reclaimStaleRuns() reclaims nodes when both the owner and its reaper were killed", async () => {
  const child = spawnDeno(CHILD_STARTS_NODE);
  const line = await readLineUntil(child, (l) => l.startsWith("DATADIR "));
  const dataDir = line.slice("DATADIR ".length).trim();
  const runDir = dataDir.split("/nodes/")[0];
  const reaperPid = Number((await Deno.readTextFile(`${runDir}/reaper`)).trim());
  Deno.kill(reaperPid, "SIGKILL");
  child.kill("SIGKILL");
  await child.status;
  await child.stderr.cancel();
  const pid = await postmasterPid(dataDir);
  assert.ok(pid && processExists(pid), "the orphan is still running before the reclaim");
  const reclaimed = await reclaimStaleRuns();
  assert.ok(reclaimed.some((r) => r.path === runDir), `reclaimed ${JSON.stringify(reclaimed)}`);
  assert.ok(!processExists(pid!));
  assert.equal(await pathExists(runDir), false);
  assert.ok(!(await runDirectories()).includes(runDir));
});

Deno.test("Node.exec() runs several statements and leaves no aborted transaction behind after an error", async () => {
  await using cluster = await startCluster({ name: "t-exec", nodes: [{ name: "eu_db_1" }] });
  const node = cluster.node("eu_db_1");
  const results = await node.exec(
    "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT x FROM t ORDER BY x",
  );
  assert.deepEqual(results.at(-1)?.rows, [{ x: 1 }, { x: 2 }]);
  await assert.rejects(
    () => node.exec("BEGIN; INSERT INTO t VALUES (3); SELECT 1/0; COMMIT;"),
    /division by zero/,
  );
  // Every pooled connection must still work (none stuck in the failed transaction).
  for (let i = 0; i < 8; i++) await node.exec("SELECT 1");
  const [{ n }] = await node.sql`SELECT count(*) AS n FROM t`;
  assert.equal(n, 2, "the failed transaction's insert was rolled back");
});

Deno.test("Node.exec() returns one result per statement with its command tag, and names a failing statement", async () => {
  await using cluster = await startCluster({
    name: "t-exec-results",
    nodes: [{ name: "eu_db_1" }],
  });
  const node = cluster.node("eu_db_1");
  const results = await node.exec(
    "BEGIN; CREATE TABLE r (x int); SELECT 1 AS a; SELECT 2 AS b; ROLLBACK;",
  );
  assert.deepEqual(results.map((r) => r.command), [
    "BEGIN",
    "CREATE TABLE",
    "SELECT",
    "SELECT",
    "ROLLBACK",
  ]);
  assert.deepEqual(results[3].rows, [{ b: 2 }]);
  await assert.rejects(
    () => node.exec("SELECT 1; SELECT * FROM missing_table; SELECT 3"),
    (e) => {
      const error = e as Error & { statement?: string; statementIndex?: number };
      return /relation "missing_table" does not exist$/.test(error.message) &&
        error.statement === "SELECT * FROM missing_table" && error.statementIndex === 1;
    },
  );
});
