import assert from "node:assert/strict";
import {
  addReplica,
  type Cluster,
  createRouter,
  currentLsn,
  isWorkshopError,
  lsnCache,
  lsnToBigInt,
  type Node,
  setApplyDelay,
  startCluster,
  startRedis,
  waitForReplay,
} from "../lib/mod.ts";

interface Pair {
  cluster: Cluster;
  db: Node;
  replica: Node;
}

/** A primary with a `thing` table and a streaming replica that has replayed it. */
async function pair(name: string): Promise<Pair> {
  const cluster = await startCluster({ name, nodes: [{ name: "db", role: "primary" }] });
  const db = cluster.node("db");
  const replica = await addReplica(cluster, { name: "replica", primary: db });
  await db.exec(`
    CREATE TABLE thing (id int PRIMARY KEY, color text NOT NULL);
    INSERT INTO thing VALUES (1, 'orange');`);
  await waitForReplay(replica, await currentLsn(db));
  return { cluster, db, replica };
}

Deno.test("Router (naive) serves three reads from the replica, then the write and the next read from the primary", async () => {
  const { cluster, db, replica } = await pair("t-router-naive");
  await using _ = cluster;
  await using router = createRouter({ primary: db, replicas: [replica], mode: "naive" });
  const color = await router.request({ label: "POST /things/1" }, async () => {
    await router.read`SELECT color FROM thing WHERE id = 1`;
    await router.read`SELECT color FROM thing WHERE id = 1`;
    await router.read`SELECT color FROM thing WHERE id = 1`;
    await router.write`UPDATE thing SET color = 'blue' WHERE id = 1`;
    return (await router.read`SELECT color FROM thing WHERE id = 1`)[0].color;
  });
  assert.equal(color, "blue", "the read after the write sees it (primary)");
  assert.deepEqual(
    router.log.map((d) => [d.kind, d.node]),
    [["read", "replica"], ["read", "replica"], ["read", "replica"], ["write", "db"], [
      "read",
      "db",
    ]],
  );
  assert.deepEqual(router.log.map((d) => d.seq), [1, 2, 3, 4, 5]);
  assert.equal(router.log[0].statement, "SELECT color FROM thing WHERE id = 1");
  // The next request starts over on the replica: the naive router forgets the write.
  await router.request({}, (q) => q.read`SELECT 1`);
  assert.equal(router.log.at(-1)!.node, "replica");
});

Deno.test("Router keeps routing state per request: concurrent read-only requests stay on the replica", async () => {
  const { cluster, db, replica } = await pair("t-router-concurrent");
  await using _ = cluster;
  await using router = createRouter({ primary: db, replicas: [replica], mode: "naive" });
  let release!: () => void;
  const wrote = new Promise<void>((resolve) => release = resolve);
  const writer = router.request({ label: "writer" }, async () => {
    await router.write`UPDATE thing SET color = 'green' WHERE id = 1`;
    release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await router.read`SELECT color FROM thing WHERE id = 1`;
  });
  await wrote;
  await Promise.all(
    [1, 2, 3].map((i) =>
      router.request(
        { label: `reader ${i}` },
        () => router.read`SELECT color FROM thing WHERE id = 1`,
      )
    ),
  );
  await writer;
  const readers = router.log.filter((d) => d.label.startsWith("reader"));
  assert.equal(readers.length, 3);
  assert.ok(readers.every((d) => d.node === "replica"), JSON.stringify(readers));
  assert.deepEqual(
    router.log.filter((d) => d.label === "writer").map((d) => d.node),
    ["db", "db"],
  );
});

Deno.test("Router (lsn) sends a user who just wrote to the primary while the replica lags, others to the replica", async () => {
  const { cluster, db, replica } = await pair("t-router-lsn");
  await using _ = cluster;
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica], cache });
  assert.equal(router.mode, "lsn");
  await setApplyDelay(replica, 2000);
  const before = lsnToBigInt(await currentLsn(db));
  await router.request(
    { user: "alice" },
    () => router.write`UPDATE thing SET color = 'purple' WHERE id = 1`,
  );
  const stored = await cache.get("alice");
  const position = lsnToBigInt(stored!);
  assert.ok(
    position > before && position <= lsnToBigInt(await currentLsn(db)),
    "the primary's WAL position after alice's write",
  );
  const read = (user: string) =>
    router.request({ user }, async (q) => ({
      color: (await q.read`SELECT color FROM thing WHERE id = 1`)[0].color,
      node: q.decisions.find((d) => d.kind === "read")!.node,
      reason: q.decisions.find((d) => d.kind === "read")!.reason,
    }));
  const alice = await read("alice");
  assert.deepEqual([alice.node, alice.color], ["db", "purple"]);
  assert.match(alice.reason, /replica behind: replay .* < last write/);
  const bob = await read("bob");
  assert.deepEqual(
    [bob.node, bob.color],
    ["replica", "orange"],
    "bob reads the replica (and its old data)",
  );
  assert.match(bob.reason, /no recent write by bob/);
  await setApplyDelay(replica, 0);
  await waitForReplay(replica, stored!);
  const later = await read("alice");
  assert.deepEqual(
    [later.node, later.color],
    ["replica", "purple"],
    "once replayed, alice reads the replica",
  );
});

Deno.test("Router (lsn) with waitMs waits for the replica instead of reading from the primary", async () => {
  const { cluster, db, replica } = await pair("t-router-wait");
  await using _ = cluster;
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica], cache, waitMs: 10_000 });
  await setApplyDelay(replica, 300);
  await router.request(
    { user: "alice" },
    () => router.write`UPDATE thing SET color = 'red' WHERE id = 1`,
  );
  const color = await router.request(
    { user: "alice" },
    async () => (await router.read`SELECT color FROM thing WHERE id = 1`)[0].color,
  );
  assert.equal(color, "red");
  const read = router.log.find((d) => d.kind === "read")!;
  assert.equal(read.node, "replica");
  assert.match(read.reason, /waited \d+ ms/);
  assert.ok(router.log.filter((d) => d.kind === "check").length > 1, "it polled the replica");
});

Deno.test("Router (lsn) comparing the receive LSN reads stale data: WAL received is not yet visible", async () => {
  const { cluster, db, replica } = await pair("t-router-receive");
  await using _ = cluster;
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  await using buggy = createRouter({
    primary: db,
    replicas: [replica],
    cache,
    freshness: "receive",
  });
  await using right = createRouter({ primary: db, replicas: [replica], cache });
  await setApplyDelay(replica, 5000);
  await buggy.request(
    { user: "alice" },
    () => buggy.write`UPDATE thing SET color = 'pink' WHERE id = 1`,
  );
  const stored = (await cache.get("alice"))!;
  await waitFor(async () => {
    const [{ ok }] = await replica.sql`SELECT pg_last_wal_receive_lsn() >= ${stored}::pg_lsn AS ok`;
    return ok === true;
  });
  const viaReceive = await buggy.request(
    { user: "alice" },
    async () => (await buggy.read`SELECT color FROM thing WHERE id = 1`)[0].color,
  );
  assert.equal(
    viaReceive,
    "orange",
    "stale: the replica received the write but has not replayed it",
  );
  assert.match(buggy.log.at(-1)!.reason, /^receive /);
  const viaReplay = await right.request(
    { user: "alice" },
    async () => (await right.read`SELECT color FROM thing WHERE id = 1`)[0].color,
  );
  assert.equal(viaReplay, "pink");
});

Deno.test("Router falls back to the primary when the replica stops, with no error, and uses it again when it is back", async () => {
  const { cluster, db, replica } = await pair("t-router-down");
  await using _ = cluster;
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica], cache, retryAfterMs: 200 });
  const read = () =>
    router.request({ user: "bob" }, async (q) => {
      const [row] = await q.read`SELECT color FROM thing WHERE id = 1`;
      return {
        color: row.color,
        node: q.decisions.at(-1)!.node,
        reason: q.decisions.at(-1)!.reason,
      };
    });
  assert.equal((await read()).node, "replica");
  await replica.stop();
  const first = await read();
  assert.deepEqual([first.node, first.color], ["db", "orange"]);
  assert.match(first.reason, /replica failed \((ECONNREFUSED|CONNECTION_\w+|57P0\d)\)/);
  const second = await read();
  assert.deepEqual([second.node, second.reason], ["db", "no replica available (recently failed)"]);
  assert.equal(router.isDown(replica), true);
  await replica.restart();
  assert.ok(
    await waitFor(async () => (await read()).node === "replica", 10_000),
    "the replica serves again",
  );
  assert.equal(router.isDown(replica), false);
});

Deno.test("Router (lsn) reads from the primary when the LSN cache cannot be reached", async () => {
  const { cluster, db, replica } = await pair("t-router-nocache");
  await using _ = cluster;
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica], cache });
  await cluster.removeService("redis");
  const color = await router.request(
    { user: "alice" },
    async () => (await router.read`SELECT color FROM thing WHERE id = 1`)[0].color,
  );
  assert.equal(color, "orange");
  assert.equal(router.log.at(-1)!.node, "db");
  assert.match(router.log.at(-1)!.reason, /^LSN cache unavailable/);
});

Deno.test("Router refuses statements outside a request, and mode lsn without a cache", async () => {
  const { cluster, db, replica } = await pair("t-router-misuse");
  await using _ = cluster;
  await using router = createRouter({ primary: db, replicas: [replica] });
  assert.equal(router.mode, "naive", "no cache: the source's router");
  assert.throws(
    () => router.read`SELECT 1`,
    (e) => isWorkshopError(e, "INVALID_SETTING") && /router\.request/.test(e.fix),
  );
  assert.throws(
    () => createRouter({ primary: db, replicas: [replica], mode: "lsn" }),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /lsnCache/.test(e.fix),
  );
  await router.close();
  await assert.rejects(
    () => router.request({}, (q) => q.read`SELECT 1`),
    (e) => isWorkshopError(e, "CLUSTER_STOPPED"),
  );
});

Deno.test("LsnCache keys expire after their TTL, so the cache holds only recent writers", async () => {
  await using cluster = await startCluster({ name: "t-router-ttl" });
  const redis = await startRedis(cluster);
  const cache = await lsnCache(redis, { ttlSeconds: 1 });
  for (let i = 0; i < 50; i++) {
    await cache.remember(`user_${i}`, `0/${(0x1000000 + i).toString(16)}`);
  }
  assert.equal(await cache.size(), 50);
  const ttl = await cache.ttl("user_0");
  assert.ok(ttl === 1 || ttl === 0, `TTL ${ttl}`);
  assert.ok(await waitFor(async () => await cache.size() === 0, 10_000), "every key expired");
  assert.equal(await cache.get("user_0"), null);
  await assert.rejects(
    () => lsnCache(redis, { ttlSeconds: 0 }),
    (e) => isWorkshopError(e, "INVALID_SETTING"),
  );
  await assert.rejects(
    () => lsnCache(redis, { ttlSeconds: 1.5 }),
    (e) => isWorkshopError(e, "INVALID_SETTING"),
  );
});

Deno.test("LsnCache.remember() keeps the larger LSN when requests race, compared as numbers", async () => {
  await using cluster = await startCluster({ name: "t-router-max" });
  const cache = await lsnCache(await startRedis(cluster), { ttlSeconds: 30 });
  assert.equal(await cache.remember("alice", "0/1000000"), "0/1000000");
  assert.equal(
    await cache.remember("alice", "0/FFFFFF"),
    "0/1000000",
    "as text 0/FFFFFF would win",
  );
  assert.equal(await cache.remember("alice", "0/9A000000"), "0/9A000000");
  assert.equal(await cache.remember("alice", "10/0"), "10/0");
  assert.equal(await cache.remember("alice", "9/FFFFFFFF"), "10/0");
  assert.equal(await cache.get("alice"), "10/0");
  assert.ok((await cache.ttl("alice")) > 25, "the TTL is renewed even when the LSN is kept");
  await cache.clear();
  assert.equal(await cache.size(), 0);
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return await check();
}
