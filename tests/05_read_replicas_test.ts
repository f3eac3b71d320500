import assert from "node:assert/strict";
import {
  createRouter,
  currentLsn,
  isWorkshopError,
  lesson05,
  lsnCache,
  lsnToBigInt,
  mimeBundle,
  setApplyDelay,
  startCluster,
} from "../lib/mod.ts";

Deno.test("lesson05.readYourWritesTrial(): no user ever reads older data than they wrote through the LSN-aware router, with the replica 1 s behind", async () => {
  await using cluster = await startCluster({ name: "t-05-guarantee" });
  const { db, replica, redis } = await lesson05.reset(cluster, "staleness");
  const cache = await lsnCache(redis!, { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica!], cache });
  let reads = 0;
  let writes = 0;
  let onReplica = 0;
  for (const seed of [1, 2, 3]) {
    const trial = await lesson05.readYourWritesTrial(router, {
      seed,
      writeShare: 0.1,
      durationMs: 1200,
    });
    const summary = lesson05.summarizeTrial(trial);
    assert.equal(
      summary.stale_reads,
      0,
      JSON.stringify(trial.reads.filter((r) => r.stale).slice(0, 3)),
    );
    assert.equal(summary.errors, 0, trial.errors.join("; "));
    reads += summary.reads;
    writes += summary.writes;
    onReplica += summary.replica_reads;
  }
  assert.ok(writes >= 50, `enough write-then-read trials: ${writes}`);
  assert.ok(reads >= 500, `reads: ${reads}`);
  assert.ok(onReplica > 0 && onReplica < reads, `the replica served ${onReplica} of ${reads}`);
});

Deno.test("lesson05.readYourWritesTrial(): the naive router does serve stale reads in the same setup", async () => {
  await using cluster = await startCluster({ name: "t-05-naive" });
  const { db, replica } = await lesson05.reset(cluster, "staleness");
  await using router = createRouter({ primary: db, replicas: [replica!], mode: "naive" });
  const trial = await lesson05.readYourWritesTrial(router, {
    seed: 1,
    writeShare: 0.1,
    durationMs: 1200,
  });
  const summary = lesson05.summarizeTrial(trial);
  assert.ok(summary.stale_reads > 0, `stale reads: ${summary.stale_reads} of ${summary.reads}`);
  assert.equal(
    summary.replica_reads,
    summary.reads,
    "the naive router sends every read to the replica",
  );
  const stale = trial.reads.find((r) => r.stale)!;
  assert.ok(stale.got < stale.expected);
  const chart = await lesson05.staleReadsPlot([trial]);
  assert.match(chart.html, /replica, STALE/);
});

Deno.test("lesson05.approachLengthBoundary(): comparing LSN text serves a real stale read across 0/FFFFFF -> 0/1000000; pg_lsn does not", async () => {
  await using cluster = await startCluster({ name: "t-05-strings" });
  const { db, replica, redis } = await lesson05.reset(cluster, "bugs");
  const cache = await lsnCache(redis!, { ttlSeconds: 30 });
  const approach = await lesson05.approachLengthBoundary(db, replica!);
  assert.equal(approach.boundary, "0/1000000");
  assert.ok(
    lsnToBigInt(approach.to) >= 0xF00000n && lsnToBigInt(approach.to) < 0x1000000n,
    approach.to,
  );
  await using strings = createRouter({
    primary: db,
    replicas: [replica!],
    cache,
    freshness: lesson05.LSN_COMPARISONS["as strings"],
  });
  await using right = createRouter({ primary: db, replicas: [replica!], cache });
  const write = () =>
    strings.request(
      { user: "carol" },
      async (q) =>
        (await q
          .write`UPDATE profile SET version = version + 1 WHERE user_id = 'carol' RETURNING version`)[
            0
          ]
          .version as number,
    );
  await write();
  await db.exec(`SELECT pg_switch_wal();`);
  const wrote = await write();
  assert.ok(
    lsnToBigInt((await cache.get("carol"))!) >= 0x1000000n,
    "the write is past the boundary",
  );
  const readVia = (router: typeof right) =>
    router.request(
      { user: "carol" },
      async (q) =>
        (await q.read`SELECT version FROM profile WHERE user_id = 'carol'`)[0].version as number,
    );
  const viaStrings = await readVia(strings);
  assert.equal(strings.log.at(-1)!.node, "replica");
  assert.ok(viaStrings < wrote, `stale: read ${viaStrings}, wrote ${wrote}`);
  assert.equal(await readVia(right), wrote);
  assert.equal(right.log.at(-1)!.node, "db");
});

Deno.test("lesson05.compareLsnTable(): marks each wrong comparison against PostgreSQL's pg_lsn", async () => {
  await using cluster = await startCluster({ name: "t-05-compare", nodes: [{ name: "db" }] });
  const rows = await lesson05.compareLsnTable(cluster.node("db"));
  const row = (a: string, b: string) =>
    rows.find((r) => r["replica LSN"] === a && r["user's last write"] === b)!;
  assert.equal(row("0/FFFFFF", "0/1000000")["pg_lsn >= (truth)"], "false");
  assert.equal(row("0/FFFFFF", "0/1000000")["as strings"], "true ✘ stale read");
  assert.equal(row("0/9A000000", "0/10000000")["halves via parseInt(x)"], "false ✘");
  assert.equal(row("0/9A000000", "0/10000000")["(hi << 32) | lo"], "false ✘");
  assert.equal(row("0/19FFF00", "0/1A00010")["halves via parseInt(x)"], "true ✘ stale read");
  assert.equal(row("9/0", "10/0")["as strings"], "true ✘ stale read");
  assert.ok(rows.every((r) => !r["BigInt (right)"].includes("✘")), "BigInt is right on every pair");
});

Deno.test("lesson05.reset() reaches every section's starting state, also from a later one", async () => {
  await using cluster = await startCluster({ name: "t-05-reset" });
  let state = await lesson05.reset(cluster, "exercises");
  assert.deepEqual(cluster.nodes.map((n) => `${n.name}:${n.role}`), [
    "db:primary",
    "replica:replica",
  ]);
  assert.equal(cluster.services.map((s) => s.name).join(), "redis");
  const [{ fn }] = await state.db
    .sql`SELECT to_regprocedure('lsn_at_least(text, text)') IS NOT NULL AS fn`;
  assert.equal(fn, true);

  state = await lesson05.reset(cluster, "replica");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["db"]);
  assert.deepEqual(cluster.services, []);
  const [{ slots, tables }] = await state.db.sql`
    SELECT (SELECT count(*) FROM pg_replication_slots) AS slots,
           (SELECT count(*) FROM pg_tables WHERE tablename IN ('app_thing', 'profile')) AS tables`;
  assert.deepEqual([slots, tables], [0, 0]);

  state = await lesson05.reset(cluster, "staleness");
  const [{ color }] = await state.replica!.sql`SELECT color FROM app_thing WHERE id = ${state.pk!}`;
  assert.equal(color, "blue", "a thing for section 4 on, visible on the replica");
  const [{ delay }] = await state.replica!
    .sql`SELECT current_setting('recovery_min_apply_delay') AS delay`;
  assert.equal(delay, "1s");
  const [{ users }] = await state.db.sql`SELECT count(*) AS users FROM profile`;
  assert.equal(users, lesson05.USERS.length + 3);

  // A learner stopped the replica and dropped a table: reset repairs both.
  await state.replica!.stop();
  await state.db.exec(`DROP TABLE app_thing;`);
  state = await lesson05.reset(cluster, "one-request");
  const [{ streaming }] = await state.db.sql`
    SELECT count(*) AS streaming FROM pg_stat_replication WHERE state = 'streaming'`;
  assert.equal(streaming, 1);
  const [{ present }] = await state.replica!
    .sql`SELECT to_regclass('app_thing') IS NOT NULL AS present`;
  assert.equal(present, true);
  const [{ delay: none }] = await state.replica!
    .sql`SELECT current_setting('recovery_min_apply_delay') AS delay`;
  assert.equal(none, "0");

  await assert.rejects(
    () => lesson05.reset(cluster, "nope" as lesson05.Section),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /replica, wal/.test(e.fix),
  );
});

Deno.test("lesson05.servedByTimeline() and compactLog() render a trial with an outage", async () => {
  await using cluster = await startCluster({ name: "t-05-outage" });
  const { db, replica, redis } = await lesson05.reset(cluster, "replica-down");
  const cache = await lsnCache(redis!, { ttlSeconds: 30 });
  await using router = createRouter({ primary: db, replicas: [replica!], cache });
  const trial = await lesson05.readYourWritesTrial(router, {
    durationMs: 1500,
    users: 5,
    schedule: [
      { atMs: 300, label: "replica stopped", action: () => replica!.stop() },
      { atMs: 900, label: "replica started", action: () => replica!.restart() },
    ],
  });
  assert.equal(trial.errors.length, 0, trial.errors.join("; "));
  assert.deepEqual(trial.marks.map((m) => m.label), ["replica stopped", "replica started"]);
  const [stopped, started] = [trial.marks[0].done!, trial.marks[1].t];
  const down = trial.reads.filter((r) => r.t > stopped && r.t < started);
  assert.ok(down.length > 0 && down.every((r) => r.target === "primary"), "reads fell back");
  assert.ok(trial.reads.some((r) => r.t > started && r.target === "replica"), "and came back");
  const html = mimeBundle(await lesson05.servedByTimeline(trial))["text/html"];
  assert.match(html, /replica stopped/);
  await setApplyDelay(replica!, 300);
  await using waiting = createRouter({ primary: db, replicas: [replica!], cache, waitMs: 5000 });
  await waiting.request(
    { user: "alice" },
    (q) => q.write`UPDATE profile SET version = version + 1 WHERE user_id = 'alice'`,
  );
  await waiting.request(
    { user: "alice" },
    (q) => q.read`SELECT version FROM profile WHERE user_id = 'alice'`,
  );
  const rows = lesson05.compactLog(waiting.log);
  const checks = rows.find((r) => String(r.kind).startsWith("check"))!;
  assert.match(String(checks.kind), /^check ×\d+$/, "the polls collapse into one row");
  assert.ok(rows.length <= 5, JSON.stringify(rows));
  assert.ok(lsnToBigInt(await currentLsn(db)) > 0n);
});
