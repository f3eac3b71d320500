import assert from "node:assert/strict";
import {
  addReplica,
  currentLsn,
  isWorkshopError,
  lagPlot,
  lsnToBigInt,
  type NodeProvider,
  removeReplica,
  replicaLsns,
  setApplyDelay,
  startCluster,
  startLagMonitor,
  waitForReplay,
} from "../lib/mod.ts";
import { embeddedProvider } from "../lib/providers/embedded.ts";
import { withLatencyScale } from "./_helpers.ts";

Deno.test("addReplica() makes a streaming hot standby through its own slot that refuses writes", async () => {
  await using cluster = await startCluster({
    name: "t-repl-basic",
    nodes: [{ name: "db", role: "primary" }],
  });
  const db = cluster.node("db");
  const replica = await addReplica(cluster, { name: "replica", primary: db });
  assert.equal(replica.role, "replica");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["db", "replica"]);

  const [slot] = await db.sql`
    SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = 'replica'`;
  assert.deepEqual({ ...slot }, { slot_type: "physical", active: true });
  const [stat] = await db.sql`SELECT application_name, state FROM pg_stat_replication`;
  assert.deepEqual({ ...stat }, { application_name: "replica", state: "streaming" });
  const [standby] = await replica.sql`
    SELECT pg_is_in_recovery() AS recovering, current_setting('primary_slot_name') AS slot,
           current_setting('hot_standby') AS hot`;
  assert.deepEqual({ ...standby }, { recovering: true, slot: "replica", hot: "on" });
  assert.match(await replica.logTail(40), /started streaming WAL from primary/);

  await assert.rejects(
    () => replica.exec(`CREATE TABLE nope (id int)`),
    (error: { code?: string }) => error.code === "25006",
  );
  await db.exec(`CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);`);
  await waitForReplay(replica, await currentLsn(db));
  const [{ n }] = await replica.sql`SELECT count(*) AS n FROM t`;
  assert.equal(n, 100);
});

Deno.test("addReplica() returns the running replica when called again and refuses a non-replica name", async () => {
  await using cluster = await startCluster({
    name: "t-repl-again",
    nodes: [{ name: "db", role: "primary" }, { name: "other" }],
  });
  const first = await addReplica(cluster, { name: "replica", primary: "db" });
  const second = await addReplica(cluster, { name: "replica", primary: "db" });
  assert.equal(second, first);
  await assert.rejects(
    () => addReplica(cluster, { name: "other", primary: "db" }),
    (error) =>
      isWorkshopError(error, "DUPLICATE_NODE") && /a node node has that name/.test(error.message),
  );
});

Deno.test("addReplica() says which provider cannot make standbys", async () => {
  const embedded = embeddedProvider();
  const provider: NodeProvider = { ...embedded, kind: "external" };
  await using cluster = await startCluster({
    name: "t-repl-provider",
    provider,
    nodes: [{ name: "db", role: "primary" }],
  });
  await assert.rejects(
    () => addReplica(cluster, { name: "replica", primary: "db" }),
    (error) =>
      isWorkshopError(error, "UNKNOWN_PROVIDER") &&
      /external provider cannot make standbys/.test(error.message) &&
      /registerStandbyStarter\("external"/.test(error.fix),
  );
  const [{ n }] = await cluster.node("db").sql`SELECT count(*) AS n FROM pg_replication_slots`;
  assert.equal(n, 0, "no slot left behind");
});

Deno.test("addReplica() in another region streams through the cluster's delay proxy", async () => {
  await withLatencyScale(0.05, async () => {
    await using cluster = await startCluster({
      name: "t-repl-region",
      nodes: [{ name: "db", role: "primary" }],
    });
    const db = cluster.node("db");
    const replica = await addReplica(cluster, {
      name: "us_replica",
      primary: db,
      region: "us-east-1",
    });
    const [{ conninfo }] = await replica
      .sql`SELECT current_setting('primary_conninfo') AS conninfo`;
    const port = Number(/port=(\d+)/.exec(conninfo as string)?.[1]);
    assert.notEqual(
      port,
      db.port,
      "the walreceiver connects to a proxy, not to the primary directly",
    );
    assert.equal((await cluster.nodeAt("127.0.0.1", port))?.name, "db");
    await db.exec(`CREATE TABLE t (id int); INSERT INTO t VALUES (1);`);
    await waitForReplay(replica, await currentLsn(db));
    const [{ n }] = await replica.sql`SELECT count(*) AS n FROM t`;
    assert.equal(n, 1);
  });
});

Deno.test("setApplyDelay() holds replay back while WAL is still received", async () => {
  await using cluster = await startCluster({
    name: "t-repl-delay",
    nodes: [{ name: "db", role: "primary" }],
  });
  const db = cluster.node("db");
  const replica = await addReplica(cluster, { name: "replica", primary: db });
  await db.exec(`CREATE TABLE t (id int);`);
  await waitForReplay(replica, await currentLsn(db));
  await setApplyDelay(replica, 5000);
  await db.exec(`INSERT INTO t VALUES (1);`);
  const lsn = await currentLsn(db);
  let lsns = await replicaLsns(replica);
  for (let i = 0; i < 300 && lsnToBigInt(lsns.receive!) < lsnToBigInt(lsn); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    lsns = await replicaLsns(replica);
  }
  assert.ok(lsnToBigInt(lsns.receive!) >= lsnToBigInt(lsn), "the WAL arrived");
  assert.ok(lsnToBigInt(lsns.replay!) < lsnToBigInt(lsn), "but is not replayed");
  const [{ n }] = await replica.sql`SELECT count(*) AS n FROM t`;
  assert.equal(n, 0, "so the row is not visible");
  await setApplyDelay(replica, 0);
  await waitForReplay(replica, lsn);
  const [{ n: after }] = await replica.sql`SELECT count(*) AS n FROM t`;
  assert.equal(after, 1);
  await assert.rejects(
    () => setApplyDelay(replica, -1),
    (e) => isWorkshopError(e, "INVALID_SETTING"),
  );
});

Deno.test("startLagMonitor() measures replay lag in bytes and ms, and it returns to 0 after the writes", async () => {
  await using cluster = await startCluster({
    name: "t-repl-lag",
    nodes: [{ name: "db", role: "primary" }],
  });
  const db = cluster.node("db");
  const replica = await addReplica(cluster, { name: "replica", primary: db });
  await db.exec(`CREATE TABLE burst (payload text);`);
  await waitForReplay(replica, await currentLsn(db));
  // Replay waits 300 ms behind each commit, so lag is there for the monitor to see, for sure.
  await setApplyDelay(replica, 300);
  await using monitor = startLagMonitor(db, replica, { intervalMs: 5 });
  for (let i = 0; i < 5; i++) {
    await db.exec(`INSERT INTO burst SELECT md5(g::text) FROM generate_series(1, 2000) g;`);
  }
  const end = await currentLsn(db);
  await waitForReplay(replica, end, { timeoutMs: 15_000 });
  await setApplyDelay(replica, 0);
  await waitForReplay(replica, await currentLsn(db), { timeoutMs: 15_000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const samples = await monitor.stop();
  assert.ok(samples.length > 5, `samples taken: ${samples.length}`);
  const maxBytes = Math.max(...samples.map((s) => s.replayLagBytes));
  const maxMs = Math.max(...samples.map((s) => s.replayLagMs));
  assert.ok(maxBytes > 100_000, `replay lag in bytes seen: ${maxBytes}`);
  assert.ok(maxMs > 0, `replay lag in ms seen: ${maxMs}`);
  assert.ok(
    samples.every((s) => s.receiveLagBytes <= s.replayLagBytes),
    "received is never behind replayed",
  );
  const after = samples.filter((s) => s.replayLsn && lsnToBigInt(s.replayLsn) >= lsnToBigInt(end));
  assert.ok(
    after.some((s) => s.replayLagBytes === 0 && s.replayLagMs === 0),
    "caught up after the writes",
  );
  const figure = await lagPlot(samples, { title: "lag" });
  assert.match(figure.html, /WAL behind \(KiB\)/);
  assert.match(figure.html, /replay lag \(ms\)/);
});

Deno.test("removeReplica() removes the node and drops its slot on the primary", async () => {
  await using cluster = await startCluster({
    name: "t-repl-remove",
    nodes: [{ name: "db", role: "primary" }],
  });
  const db = cluster.node("db");
  await addReplica(cluster, { name: "replica", primary: db, slot: "my_slot" });
  await removeReplica(cluster, "replica");
  assert.equal(cluster.has("replica"), false);
  const slots = await db.sql`SELECT slot_name FROM pg_replication_slots`;
  assert.deepEqual(slots.map((s) => s.slot_name), []);
});

Deno.test("lsnToBigInt() orders LSNs as pg_lsn does and rejects text that is not an LSN", async () => {
  await using cluster = await startCluster({ name: "t-repl-lsn", nodes: [{ name: "db" }] });
  const pairs = [
    ["0/9A000000", "0/10000000"],
    ["0/FFFFFF", "0/1000000"],
    ["9/0", "10/0"],
    ["1/0", "0/FFFFFFFF"],
    ["0/16B3748", "0/16B3748"],
    ["FFFFFFFF/FFFFFFFF", "0/0"],
  ];
  for (const [a, b] of pairs) {
    const [{ ge }] = await cluster.node("db").sql`SELECT ${a}::pg_lsn >= ${b}::pg_lsn AS ge`;
    assert.equal(lsnToBigInt(a) >= lsnToBigInt(b), ge, `${a} >= ${b}`);
  }
  assert.equal(lsnToBigInt("1/0"), 2n ** 32n);
  for (const bad of ["", "0/", "12345", "0/123456789", "g/0"]) {
    assert.throws(() => lsnToBigInt(bad), (e) => isWorkshopError(e, "INVALID_SETTING"), bad);
  }
});
