/**
 * Notebook 03, data residency with postgres_fdw: the model (lib/residency.ts)
 * and the lesson (lib/lessons/03_data_residency.ts), on real PostgreSQL 16
 * nodes.
 */

import assert from "node:assert/strict";
import {
  type Cluster,
  exercise,
  isWorkshopError,
  lesson03,
  residency,
  startCluster,
} from "../lib/mod.ts";

const { DAVE, QUEEN } = residency;

/** A cluster of the three home nodes at the start of `section`. */
async function at(name: string, section: lesson03.Section): Promise<Cluster> {
  const cluster = await startCluster({ name: `t-res-${name}`, nodes: residency.residencyNodes() });
  try {
    await lesson03.reset(cluster, section);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

function upserts(row: Record<string, unknown>): residency.UpsertResult[] {
  return ["dave", "queen", "rando"].map((k) => residency.parseUpsert(row[k] as string));
}

Deno.test("shared.upsert_identity() returns created/owner flags, updates on a re-run and duplicates the random person", async () => {
  await using cluster = await at("upsert", "people");
  const { usa, gbr } = residency.homeNodes(cluster);
  const [first] = await usa.exec(residency.SOURCE_UPSERTS);
  const one = upserts(first.rows[0]);
  assert.deepEqual(one.map((r) => [r.created, r.owner]), [[true, true], [true, false], [
    true,
    false,
  ]]);
  assert.deepEqual(one.slice(0, 2).map((r) => r.uuid), [DAVE, QUEEN]);
  await residency.awaitMirror(cluster);

  const [second] = await usa.exec(residency.SOURCE_UPSERTS);
  const two = upserts(second.rows[0]);
  assert.deepEqual(two.map((r) => [r.created, r.owner]), [[false, true], [false, false], [
    true,
    false,
  ]]);
  assert.notEqual(two[2].uuid, one[2].uuid, "the random person is created again under a new uuid");
  await residency.awaitMirror(cluster);

  const placed = await residency.placements(cluster);
  assert.equal(placed.length, 4);
  assert.deepEqual(
    placed.map((p) => [p.name, p.storedOn.join()]).sort(),
    [["Da Queen", "gbr"], ["David Welch", "usa"], ["Someone Random", "aus"], [
      "Someone Random",
      "aus",
    ]],
  );
  const [queenRow] = await gbr
    .sql`SELECT notes FROM gbr.identity_details WHERE uuid = ${QUEEN}::uuid`;
  assert.match(queenRow.notes as string, /powerhouse/);

  const [fromGbr] = await gbr.exec(
    `SELECT (shared.upsert_identity('${QUEEN}', 'Da Queen', 'gbr', 'updated on gbr')).*`,
  );
  assert.deepEqual(
    fromGbr.rows[0],
    { uuid: QUEEN, created: false, owner: true },
    "gbr owns Da Queen",
  );
  await residency.awaitMirror(cluster);
  const [updated] = await usa
    .sql`SELECT notes FROM gbr.identity_details WHERE uuid = ${QUEEN}::uuid`;
  assert.equal(updated.notes, "updated on gbr");
});

Deno.test("shared.upsert_identity() refuses an unknown region and a region change, naming the fix", async () => {
  await using cluster = await at("upsert-bad", "routing");
  const usa = cluster.node("usa");
  await assert.rejects(
    () => usa.exec(`SELECT shared.upsert_identity(gen_random_uuid(), 'X', 'fra', null)`),
    (e: Error & { hint?: string }) =>
      /Unknown region "fra"/.test(e.message) && /usa, gbr, aus/.test(e.hint ?? ""),
  );
  await assert.rejects(
    () => usa.exec(`SELECT shared.upsert_identity('${DAVE}', 'David Welch', 'gbr', null)`),
    (e: Error & { hint?: string }) =>
      /lives in region usa, not gbr/.test(e.message) && /delete/.test(e.hint ?? ""),
  );
  const [dave] = await residency.placements(cluster, [DAVE]);
  assert.deepEqual(dave.storedOn, ["usa"], "nothing moved");
});

Deno.test("INSERT into shared.identity_details on any node routes each row to its home node", async () => {
  await using cluster = await at("routing", "routing");
  const uuids: string[] = [];
  for (const node of cluster.nodes) {
    const rows = residency.HOMES.map((region) => ({ uuid: crypto.randomUUID(), region }));
    uuids.push(...rows.map((r) => r.uuid));
    await node.exec(
      `INSERT INTO shared.identity_details (uuid, region, name) VALUES ${
        rows.map((r) => `('${r.uuid}', '${r.region}', 'routed from ${node.name}')`).join(", ")
      }`,
    );
  }
  const placed = await residency.placements(cluster, uuids);
  assert.equal(placed.length, 9);
  for (const p of placed) assert.deepEqual(p.storedOn, [p.region], `${p.name} (${p.region})`);
});

Deno.test("The operations partitioning cannot do over foreign partitions fail with PostgreSQL's own errors", async () => {
  await using cluster = await at("fails", "routing");
  const usa = cluster.node("usa");
  const cases: [string, string, RegExp][] = [
    [
      `ALTER TABLE shared.identity_details ADD PRIMARY KEY (uuid, region)`,
      "42809",
      /contains partitions that are foreign tables/,
    ],
    [
      `INSERT INTO shared.identity_details VALUES ('${QUEEN}', 'gbr', 'Q', 'n') ON CONFLICT (uuid) DO UPDATE SET notes = 'x'`,
      "42P10",
      /no unique or exclusion constraint matching the ON CONFLICT/,
    ],
    [
      `MERGE INTO shared.identity_details d USING (VALUES ('${QUEEN}'::uuid)) v (u) ON d.uuid = v.u WHEN MATCHED THEN UPDATE SET notes = 'x'`,
      "0A000",
      /not supported for foreign tables/,
    ],
    [
      `UPDATE shared.identity_details SET region = 'aus' WHERE uuid = '${QUEEN}'`,
      "23514",
      /violates partition constraint/,
    ],
    [
      `UPDATE shared.identity_details SET region = 'gbr' WHERE uuid = '${DAVE}'`,
      "0A000",
      /cannot route tuples into foreign table to be updated/,
    ],
    [
      `CREATE TABLE shared.note (uuid uuid REFERENCES shared.identity_details (uuid))`,
      "42830",
      /no unique constraint matching given keys/,
    ],
    [
      `INSERT INTO usa.identity_details VALUES (gen_random_uuid(), 'gbr', 'wrong', null)`,
      "23514",
      /violates partition constraint/,
    ],
  ];
  for (const [statement, sqlstate, message] of cases) {
    const result = await residency.attempt(usa, statement);
    assert.equal(result.ok, false, statement);
    assert.equal(result.sqlstate, sqlstate, `${statement}: ${result.error}`);
    assert.match(result.error!, message);
  }
  const moveOutOfGbr = await residency.attempt(usa, cases[3][0]);
  assert.match(moveOutOfGbr.where ?? "", /remote SQL command: UPDATE gbr\.identity_details/);

  const skip = await residency.attempt(
    usa,
    `INSERT INTO shared.identity_details VALUES ('${QUEEN}', 'gbr', 'Q', 'n') ON CONFLICT DO NOTHING`,
  );
  assert.deepEqual(
    [skip.ok, skip.command, skip.rows],
    [true, "INSERT", 0],
    "gbr's primary key decides",
  );
  const placed = await residency.placements(cluster);
  assert.equal(placed.length, 4, "no failed statement changed anything");
  assert.ok(placed.every((p) => p.storedOn.join() === p.region));
});

Deno.test("util.generate_identities() splits people by the region weights, stores each on its home node and mirrors every identity", async () => {
  await using cluster = await at("generate", "bulk");
  const usa = cluster.node("usa");
  const [result] = await usa.exec(`select * from util.generate_identities(1, 10000, false)`);
  const counts = Object.fromEntries(result.rows.map((r) => [r.region, r.generated as number]));
  assert.equal(counts.usa + counts.gbr + counts.aus, 10000);
  for (const home of residency.HOMES) {
    const share = counts[home] / 10000;
    assert.ok(
      Math.abs(share - residency.REGION_WEIGHTS[home]) < 0.025,
      `${home}: ${share} vs weight ${residency.REGION_WEIGHTS[home]}`,
    );
  }
  const [slow] = await usa.exec(`select * from util.generate_identities(1, 30, true)`);
  assert.equal(slow.rows.reduce((s, r) => s + (r.generated as number), 0), 30);
  await residency.awaitMirror(cluster);
  const perNode = await residency.piiPerNode(cluster);
  const [identities] = await usa.sql`
    SELECT count(*) FILTER (WHERE region = 'usa') AS usa, count(*) FILTER (WHERE region = 'gbr') AS gbr,
           count(*) FILTER (WHERE region = 'aus') AS aus FROM shared.identity`;
  for (const n of perNode) {
    assert.equal(n.rows, n.homeRows, `${n.node} stores only its own region`);
    assert.equal(n.rows, identities[n.node], `${n.node} stores every person of its region`);
  }
  await assert.rejects(
    () => usa.exec(`select * from util.generate_identities(10, 1, false)`),
    /Invalid range 10 \.\. 1/,
  );
});

Deno.test("util.create_manager_tree(15) builds 15 levels, 15 people per level below the root, mirrored to every node", async () => {
  await using cluster = await at("tree", "hierarchy");
  const usa = cluster.node("usa");
  const [tree] = await usa.exec(lesson03.MANAGER_TREE_SQL);
  const root = tree.rows[0].create_manager_tree as string;
  await residency.awaitMirror(cluster);
  assert.equal(await lesson03.managerTreeRoot(cluster), root);
  for (const node of cluster.nodes) {
    const levels = await node.sql`
      SELECT depth, count(*) AS people FROM shared.hierarchy WHERE path[1] = ${root}::uuid
      GROUP BY depth ORDER BY depth`;
    assert.deepEqual(
      levels.map((l) => [l.depth, l.people]),
      Array.from({ length: 15 }, (_, i) => [i + 1, i === 0 ? 1 : 15]),
      `tree on ${node.name}`,
    );
  }
  const managers = await usa.sql`
    SELECT depth, count(DISTINCT manager_uuid) AS managers FROM shared.hierarchy
    WHERE path[1] = ${root}::uuid AND depth > 1 GROUP BY depth`;
  assert.ok(managers.every((m) => m.managers === 1), "each level reports to one person");
  await assert.rejects(() => usa.exec(`select util.create_manager_tree(0)`), /Invalid depth 0/);
  await assert.rejects(() => usa.exec(`select util.create_manager_tree(200)`), /free identities/);
});

Deno.test("The hierarchy query gives the same people with and without the cross-region path; filtering the PII read skips aus", async () => {
  await using cluster = await at("query", "audit");
  const usa = cluster.node("usa");
  const root = (await lesson03.managerTreeRoot(cluster))!;
  const all = await usa.sql.unsafe(residency.hierarchyQuery(root));
  const late = await usa.sql.unsafe(residency.hierarchyQuery(root, { regions: ["usa", "gbr"] }));
  const early = await usa.sql.unsafe(
    residency.hierarchyQuery(root, { regions: ["usa", "gbr"], filter: "pii" }),
  );
  assert.equal(all.length, 211);

  // Without the cross-region path: every name read on its home node directly.
  const direct = await residency.placements(cluster, all.map((r) => r.uuid as string));
  const directName = new Map(direct.map((p) => [p.uuid, p.name]));
  const region = new Map(direct.map((p) => [p.uuid, p.region]));
  assert.equal(direct.length, 211);
  for (const r of all) {
    assert.equal(r.name, directName.get(r.uuid as string));
    assert.equal(r.region, region.get(r.uuid as string));
    if (r.manager_uuid) assert.equal(r.manager, directName.get(r.manager_uuid as string));
  }

  const expected = all.filter((r) => r.region !== "aus");
  const row = (r: Record<string, unknown>, manager: unknown, upline: unknown) =>
    JSON.stringify([
      r.uuid,
      r.name,
      r.depth,
      r.region,
      manager,
      r.manager_uuid,
      r.manager_region,
      upline,
    ]);
  assert.deepEqual(
    late.map((r) => row(r, r.manager, r.upline)).sort(),
    expected.map((r) => row(r, r.manager, r.upline)).sort(),
    "the source's late filter only drops rows",
  );
  const nameRegion = new Map(all.map((r) => [r.name as string, r.region as string]));
  const withoutAus = (r: Record<string, unknown>) => {
    const names = (r.upline as string[] | null)?.filter((n) => nameRegion.get(n) !== "aus");
    return names?.length ? names : null;
  };
  assert.deepEqual(
    early.map((r) => row(r, r.manager, r.upline)).sort(),
    expected.map((r) => row(r, r.manager_region === "aus" ? null : r.manager, withoutAus(r)))
      .sort(),
    "the PII-filtered query returns the same people, with names from usa and gbr only",
  );

  const read = async (query: string) =>
    (await residency.partitionScans(usa, query)).scans.filter((s) => s.loops > 0).map((s) => s.node)
      .sort();
  assert.deepEqual(await read(residency.hierarchyQuery(root)), ["aus", "gbr", "usa"]);
  assert.deepEqual(
    await read(residency.hierarchyQuery(root, { regions: ["usa", "gbr"] })),
    ["aus", "gbr", "usa"],
  );
  assert.deepEqual(
    await read(residency.hierarchyQuery(root, { regions: ["usa", "gbr"], filter: "pii" })),
    ["gbr", "usa"],
  );
  const { scans } = await residency.partitionScans(
    usa,
    residency.hierarchyQuery(root, { regions: ["gbr"], filter: "pii" }),
  );
  assert.deepEqual(scans.map((s) => s.node), ["gbr"], "gbr only: the other partitions are pruned");
  assert.match(scans[0].remoteSql ?? "", /uuid = ANY/);
  assert.throws(() => residency.hierarchyQuery("not-a-uuid"), /Not a uuid/);
});

Deno.test("measureQuery() lists the foreign servers each hierarchy query contacted", async () => {
  await using cluster = await at("measure", "audit");
  const usa = cluster.node("usa");
  const root = (await lesson03.managerTreeRoot(cluster))!;
  const all = await residency.measureQuery(usa, residency.hierarchyQuery(root), { repeat: 1 });
  const pii = await residency.measureQuery(
    usa,
    residency.hierarchyQuery(root, { regions: ["usa", "gbr"], filter: "pii" }),
    { repeat: 1 },
  );
  assert.deepEqual(all.servers, ["aus", "gbr"]);
  assert.deepEqual(pii.servers, ["gbr"]);
  assert.equal(all.rows, 211);
  assert.equal(all.samples.length, 1);
});

Deno.test("residencyAudit() passes on clean data and catches PII copied outside its home region", async () => {
  await using cluster = await at("audit", "audit");
  const { usa, aus } = residency.homeNodes(cluster);
  const clean = await residency.residencyAudit(cluster);
  assert.equal(clean.ok, true);
  assert.deepEqual(clean.rows.map((r) => `${r.node}:${r.relation}`).sort(), [
    "aus:aus.identity_details",
    "gbr:gbr.identity_details",
    "usa:usa.identity_details",
  ]);

  await usa.exec(
    `CREATE MATERIALIZED VIEW usa.name_cache AS SELECT uuid, region, name FROM shared.identity_details`,
  );
  await aus.exec(
    `CREATE TABLE util.export AS SELECT name FROM aus.identity_details LIMIT 5`,
  );
  const caught = await residency.residencyAudit(cluster);
  assert.equal(caught.ok, false);
  const [others] = await usa.sql`SELECT count(*) AS n FROM shared.identity WHERE region <> 'usa'`;
  const byRelation = Object.fromEntries(
    caught.violations.map((v) => [`${v.node}:${v.relation}`, v]),
  );
  assert.deepEqual(Object.keys(byRelation).sort(), ["aus:util.export", "usa:usa.name_cache"]);
  assert.equal(byRelation["usa:usa.name_cache"].rows_outside_home, others.n);
  assert.match(byRelation["usa:usa.name_cache"].verdict, /other regions/);
  assert.equal(byRelation["aus:util.export"].rows_outside_home, 5);
  assert.match(byRelation["aus:util.export"].verdict, /without a region column/);

  await usa.exec(`DROP MATERIALIZED VIEW usa.name_cache`);
  await aus.exec(`DROP TABLE util.export`);
  assert.equal((await residency.residencyAudit(cluster)).ok, true);
});

Deno.test("awaitMirror() names a disabled subscription instead of waiting forever", async () => {
  await using cluster = await at("mirror", "people");
  const { usa, gbr } = residency.homeNodes(cluster);
  await usa.exec(`ALTER SUBSCRIPTION identity_gbr_to_usa DISABLE`);
  await gbr.exec(`INSERT INTO shared.identity (uuid, region) VALUES (gen_random_uuid(), 'gbr')`);
  await assert.rejects(
    () => residency.awaitMirror(cluster, { timeoutMs: 10_000 }),
    (e: unknown) =>
      isWorkshopError(e, "REPLICA_FAILED") &&
      /identity_gbr_to_usa on "usa" is disabled/.test(e.message),
  );
});

Deno.test("reset() rebuilds the model from a broken cluster; unknown sections are refused", async () => {
  await using cluster = await at("reset", "people");
  const { usa, gbr } = residency.homeNodes(cluster);
  await usa.exec(`DROP FOREIGN TABLE aus.identity_details`);
  await gbr.exec(`DROP SUBSCRIPTION identity_usa_to_gbr`);
  await cluster.removeNode("aus");
  await lesson03.reset(cluster, "bulk");
  assert.deepEqual(cluster.nodes.map((n) => n.name), ["usa", "gbr", "aus"]);
  const state = await residency.mirrorState(cluster);
  assert.ok(state.every((s) => s.streaming), JSON.stringify(state));
  const placed = await residency.placements(cluster);
  assert.equal(placed.length, 7, "4 people from the source's calls, 3 routed");
  assert.ok(placed.every((p) => p.storedOn.join() === p.region));
  const slots = await usa.sql`SELECT count(*) AS n FROM pg_replication_slots`;
  assert.equal(slots[0].n, 2, "one slot per subscriber, none left over");
  await assert.rejects(
    () => lesson03.reset(cluster, "nope" as lesson03.Section),
    (e: unknown) =>
      isWorkshopError(e, "INVALID_SETTING") && /Unknown section "nope"/.test(e.message),
  );
});

for (const id of ["03.gbr_only", "03.move_person"]) {
  Deno.test(`exercise ${id}: not attempted, then wrong, then correct with the solution`, async () => {
    const definition = (await import("../lib/mod.ts")).allExercises().find((e) => e.id === id)!;
    {
      await using cluster = await startCluster({ name: `t-res-ex-${id}` });
      await definition.setup(cluster);
      const ex = exercise(id, cluster);
      assert.equal((await ex.check()).status, "not-attempted");
      await definition.attemptWrong(cluster);
      const wrong = await ex.check();
      assert.equal(wrong.status, "wrong", wrong.message);
    }
    {
      await using cluster = await startCluster({ name: `t-res-ex-${id}` });
      await definition.setup(cluster);
      await definition.solve(cluster);
      const solved = await exercise(id, cluster).check();
      assert.equal(solved.status, "correct", solved.message);
      const audit = await residency.residencyAudit(cluster);
      assert.ok(audit.ok, "the check leaves no PII behind");
    }
  });
}
