/**
 * Data residency with postgres_fdw: people's PII stays on the node of their
 * home region, everything else is shared.
 *
 * The model, rebuilt on PostgreSQL 16 from the description of a Postgres 10
 * proof of concept (its Flyway migrations are not available):
 *
 * - three nodes, `usa` (us-east-1), `gbr` (eu-west-2) and `aus`
 *   (ap-southeast-2), each the home of one region code;
 * - `shared.identity` (non-PII: uuid, region, manager) on every node, mirrored
 *   by logical replication between all three (`origin = none`, PostgreSQL 16);
 * - `shared.identity_details` (PII: name, notes) partitioned by region: the
 *   home region's partition is a local table (`usa.identity_details` on usa),
 *   the others are foreign tables leading to their home nodes;
 * - `shared.hierarchy`, a view giving each identity its depth and path in
 *   the manager tree;
 * - functions: `shared.upsert_identity`, `util.generate_identities`,
 *   `util.create_manager_tree`, `util.residency_audit`.
 *
 * Every SQL text is built here once; notebooks show it, tests run it.
 *
 * @module
 */

import type { Cluster, NodeOptions } from "./cluster.ts";
import { type Displayable, markdown } from "./display.ts";
import { WorkshopError } from "./errors.ts";
import { ident, linkNodes, literal } from "./fdw.ts";
import type { Node, Sql } from "./node.ts";
import type { RegionId } from "./regions.ts";

/** The region codes people belong to, each with the node (same name) that is its home. */
export const HOMES = ["usa", "gbr", "aus"] as const;

/** A region code: "usa", "gbr" or "aus". */
export type Home = typeof HOMES[number];

/** The cloud region each home node is placed in. */
export const HOME_REGIONS: Record<Home, RegionId> = {
  usa: "us-east-1",
  gbr: "eu-west-2",
  aus: "ap-southeast-2",
};

/**
 * Share of generated identities per region (the source does not state its
 * split; this is ours): half American, 30% British, 20% Australian.
 */
export const REGION_WEIGHTS: Record<Home, number> = { usa: 0.5, gbr: 0.3, aus: 0.2 };

/** postgres_fdw options every link gets: one round trip per 10 000 rows read, per 1 000 rows written. */
export const FDW_OPTIONS = { fetchSize: 10_000, batchSize: 1_000 } as const;

/** Columns whose values are PII wherever they are stored (what the audit looks for). */
export const PII_COLUMNS = ["name", "notes"] as const;

/**
 * Node options for the three home nodes (`wal_level = logical` for the
 * identity mirror).
 *
 * @example
 * ```ts
 * const cluster = await startCluster({ name: "data-residency", nodes: residencyNodes() });
 * ```
 */
export function residencyNodes(): NodeOptions[] {
  return HOMES.map((home) => ({
    name: home,
    region: HOME_REGIONS[home],
    role: `home of ${home}`,
    settings: { wal_level: "logical" },
  }));
}

/**
 * The three home nodes of a cluster, by region code.
 *
 * @throws {WorkshopError} `UNKNOWN_NODE` when one is missing.
 * @example
 * ```ts
 * const { usa, gbr, aus } = homeNodes(cluster);
 * ```
 */
export function homeNodes(cluster: Cluster): Record<Home, Node> {
  return Object.fromEntries(HOMES.map((h) => [h, cluster.node(h)])) as Record<Home, Node>;
}

/**
 * Checks a region code.
 *
 * @returns The code, typed.
 * @throws {WorkshopError} `INVALID_SETTING` naming the known codes.
 * @example
 * ```ts
 * assertHome("gbr"); // "gbr"
 * ```
 */
export function assertHome(value: string): Home {
  if (!(HOMES as readonly string[]).includes(value)) {
    throw new WorkshopError("INVALID_SETTING", `Unknown region code "${value}"`, {
      fix: `Use one of: ${HOMES.join(", ")}`,
    });
  }
  return value as Home;
}

/**
 * Tables, partition and view of one node: schemas, `shared.identity`,
 * `shared.identity_details` with the node's own partition, the hierarchy
 * view and the publication of `shared.identity`. Idempotent.
 *
 * @param home The node's region code.
 * @example
 * ```ts
 * await usa.exec(tablesSql("usa"));
 * ```
 */
export function tablesSql(home: Home): string {
  const h = assertHome(home);
  return `
-- Which region this node is the home of.
CREATE SCHEMA IF NOT EXISTS shared;
CREATE SCHEMA IF NOT EXISTS util;
CREATE SCHEMA IF NOT EXISTS usa;
CREATE SCHEMA IF NOT EXISTS gbr;
CREATE SCHEMA IF NOT EXISTS aus;
CREATE OR REPLACE FUNCTION util.home_region() RETURNS text
  LANGUAGE sql IMMUTABLE AS $$ SELECT '${h}'::text $$;

-- The source calls uuid_generate_v4() (uuid-ossp); PostgreSQL 13+ also has gen_random_uuid() built in.
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

-- Non-PII: on every node, mirrored by logical replication.
CREATE TABLE IF NOT EXISTS shared.identity (
  uuid         uuid PRIMARY KEY,
  region       text NOT NULL CHECK (region IN ('usa', 'gbr', 'aus')),
  manager_uuid uuid REFERENCES shared.identity (uuid),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS identity_manager_uuid ON shared.identity (manager_uuid);

-- PII: partitioned by region; only the home partition is stored here.
CREATE TABLE IF NOT EXISTS shared.identity_details (
  uuid   uuid NOT NULL,
  region text NOT NULL,
  name   text NOT NULL,
  notes  text
) PARTITION BY LIST (region);

CREATE TABLE IF NOT EXISTS ${h}.identity_details
  PARTITION OF shared.identity_details (PRIMARY KEY (uuid))
  FOR VALUES IN ('${h}');

-- Each identity with its depth and path (root first) in the manager tree.
CREATE OR REPLACE VIEW shared.hierarchy AS
  WITH RECURSIVE tree AS (
    SELECT i.uuid, i.region, i.manager_uuid, 1 AS depth, ARRAY[i.uuid] AS path
    FROM shared.identity i
    WHERE i.manager_uuid IS NULL
    UNION ALL
    SELECT i.uuid, i.region, i.manager_uuid, t.depth + 1, t.path || i.uuid
    FROM shared.identity i
      JOIN tree t ON i.manager_uuid = t.uuid
  )
  SELECT uuid, region, manager_uuid, depth, path FROM tree;

DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'identity_mirror') THEN
    CREATE PUBLICATION identity_mirror FOR TABLE shared.identity;
  END IF;
END $$;
`.trim();
}

/**
 * The foreign partition on `home`'s node for `peer`'s PII: a foreign table
 * `<peer>.identity_details` leading to the table of that name on the peer
 * node (foreign server named after the peer). Idempotent.
 *
 * @example
 * ```ts
 * await usa.exec(foreignPartitionSql("gbr")); // on usa: gbr.identity_details -> gbr node
 * ```
 */
export function foreignPartitionSql(peer: Home): string {
  const p = assertHome(peer);
  return `
CREATE FOREIGN TABLE IF NOT EXISTS ${p}.identity_details
  PARTITION OF shared.identity_details
  FOR VALUES IN ('${p}')
  SERVER ${p}
  OPTIONS (schema_name '${p}', table_name 'identity_details');
`.trim();
}

/**
 * `shared.upsert_identity(uuid, name, region, notes)` and its result type.
 * Idempotent.
 *
 * @example
 * ```ts
 * await usa.exec(upsertSql());
 * ```
 */
export function upsertSql(): string {
  return `
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = 'shared' AND t.typname = 'upsert_result') THEN
    CREATE TYPE shared.upsert_result AS (uuid uuid, created boolean, owner boolean);
  END IF;
END $$;

-- Creates or updates a person: identity here (mirrored everywhere), details
-- routed by PostgreSQL to the partition of their region (PostgreSQL 11+).
-- Returns the uuid, whether it was created, and whether this node owns the person.
CREATE OR REPLACE FUNCTION shared.upsert_identity(
  p_uuid uuid, p_name text, p_region text, p_notes text
) RETURNS shared.upsert_result
LANGUAGE plpgsql AS $$
DECLARE
  existing text;
  was_created boolean;
BEGIN
  IF p_region IS NULL OR p_region NOT IN ('usa', 'gbr', 'aus') THEN
    RAISE EXCEPTION 'Unknown region "%" for identity %', p_region, p_uuid
      USING HINT = 'Use one of: usa, gbr, aus', ERRCODE = 'check_violation';
  END IF;
  SELECT i.region INTO existing FROM shared.identity i WHERE i.uuid = p_uuid FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO shared.identity (uuid, region) VALUES (p_uuid, p_region);
    INSERT INTO shared.identity_details (uuid, region, name, notes)
      VALUES (p_uuid, p_region, p_name, p_notes);
    was_created := true;
  ELSIF existing <> p_region THEN
    RAISE EXCEPTION 'Identity % lives in region %, not %', p_uuid, existing, p_region
      USING HINT = 'Moving a person between regions is not an upsert: delete the details at home, insert them in the new region, then update shared.identity';
  ELSE
    UPDATE shared.identity SET updated_at = now() WHERE uuid = p_uuid;
    UPDATE shared.identity_details SET name = p_name, notes = p_notes
      WHERE uuid = p_uuid AND region = p_region;
    IF NOT FOUND THEN
      INSERT INTO shared.identity_details (uuid, region, name, notes)
        VALUES (p_uuid, p_region, p_name, p_notes);
    END IF;
    was_created := false;
  END IF;
  RETURN ROW(p_uuid, was_created, p_region = util.home_region())::shared.upsert_result;
END $$;
`.trim();
}

/**
 * `util.generate_identities(first_n, last_n, row_by_row)` and the region
 * weights it draws from ({@link REGION_WEIGHTS}). Idempotent.
 */
export function generateSql(): string {
  const weights = Object.entries(REGION_WEIGHTS).map(([r, w]) => `(${literal(r)}, ${w})`).join(
    ", ",
  );
  return `
-- The region split of generated people (ours: the source does not state one).
CREATE TABLE IF NOT EXISTS util.region_weight (
  region text PRIMARY KEY CHECK (region IN ('usa', 'gbr', 'aus')),
  weight numeric NOT NULL CHECK (weight >= 0)
);
INSERT INTO util.region_weight VALUES ${weights} ON CONFLICT (region) DO NOTHING;

-- Generates people numbered first_n..last_n, each in a random region drawn
-- with util.region_weight. Set-based by default: one INSERT for the identities
-- and one for the details, which PostgreSQL routes to the home nodes in
-- batches (postgres_fdw batch_size). row_by_row = true calls
-- shared.upsert_identity once per person instead (slow across regions).
CREATE OR REPLACE FUNCTION util.generate_identities(
  first_n integer, last_n integer, row_by_row boolean DEFAULT false
) RETURNS TABLE (region text, generated bigint)
LANGUAGE plpgsql AS $$
DECLARE
  person record;
BEGIN
  IF first_n IS NULL OR last_n IS NULL OR last_n < first_n THEN
    RAISE EXCEPTION 'Invalid range % .. % for util.generate_identities', first_n, last_n
      USING HINT = 'Pass first_n <= last_n, e.g. util.generate_identities(1, 10000, false)';
  END IF;
  CREATE TEMP TABLE IF NOT EXISTS pg_temp.generated_identity
    (uuid uuid, region text, n integer) ON COMMIT DELETE ROWS;
  TRUNCATE pg_temp.generated_identity;
  INSERT INTO pg_temp.generated_identity (uuid, region, n)
    SELECT uuid_generate_v4(), pick.region, g.n
    FROM (SELECT n, random() AS r FROM generate_series(first_n, last_n) AS g (n)) g
      CROSS JOIN LATERAL (
        SELECT w.region
        FROM (SELECT rw.region,
                     sum(rw.weight) OVER (ORDER BY rw.region) / sum(rw.weight) OVER () AS upto
              FROM util.region_weight rw) w
        WHERE g.r < w.upto
        ORDER BY w.upto
        LIMIT 1
      ) pick;
  IF row_by_row THEN
    FOR person IN SELECT * FROM pg_temp.generated_identity ORDER BY n LOOP
      PERFORM shared.upsert_identity(person.uuid, format('%s person %s', upper(person.region), person.n),
                                     person.region, 'generated one by one');
    END LOOP;
  ELSE
    INSERT INTO shared.identity (uuid, region)
      SELECT gi.uuid, gi.region FROM pg_temp.generated_identity gi;
    INSERT INTO shared.identity_details (uuid, region, name, notes)
      SELECT gi.uuid, gi.region, format('%s person %s', upper(gi.region), gi.n), 'generated'
      FROM pg_temp.generated_identity gi;
  END IF;
  RETURN QUERY
    SELECT gi.region, count(*) FROM pg_temp.generated_identity gi
    GROUP BY gi.region ORDER BY gi.region;
END $$;
`.trim();
}

/**
 * `util.create_manager_tree(levels)`. Idempotent.
 */
export function managerTreeSql(): string {
  return `
-- Picks a random identity that has no manager and manages nobody, and builds
-- a tree under it, levels deep (the root is level 1). Each level below the
-- root gets "levels" employees, all reporting to one randomly selected
-- person of the level above. Returns the root's uuid.
CREATE OR REPLACE FUNCTION util.create_manager_tree(levels integer)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
  root uuid;
  boss uuid;
  placed integer;
BEGIN
  IF levels IS NULL OR levels < 1 THEN
    RAISE EXCEPTION 'Invalid depth % for util.create_manager_tree', levels
      USING HINT = 'Pass a depth of 1 or more, e.g. util.create_manager_tree(15)';
  END IF;
  SELECT i.uuid INTO root FROM shared.identity i
  WHERE i.manager_uuid IS NULL
    AND NOT EXISTS (SELECT 1 FROM shared.identity r WHERE r.manager_uuid = i.uuid)
  ORDER BY random() LIMIT 1;
  IF root IS NULL THEN
    RAISE EXCEPTION 'No identity without a manager and without reports is left'
      USING HINT = 'Generate more with util.generate_identities()';
  END IF;
  boss := root;
  FOR level IN 2..levels LOOP
    UPDATE shared.identity i SET manager_uuid = boss, updated_at = now()
    WHERE i.uuid IN (
      SELECT c.uuid FROM shared.identity c
      WHERE c.manager_uuid IS NULL AND c.uuid <> root
        AND NOT EXISTS (SELECT 1 FROM shared.identity r WHERE r.manager_uuid = c.uuid)
      ORDER BY random() LIMIT levels
    );
    GET DIAGNOSTICS placed = ROW_COUNT;
    IF placed < levels THEN
      RAISE EXCEPTION 'Only % free identities for level % of the manager tree (need %)', placed, level, levels
        USING HINT = 'Generate more with util.generate_identities()';
    END IF;
    SELECT i.uuid INTO boss FROM shared.identity i WHERE i.manager_uuid = boss ORDER BY random() LIMIT 1;
  END LOOP;
  RETURN root;
END $$;
`.trim();
}

/**
 * `util.residency_audit()` and the PII column names it looks for
 * ({@link PII_COLUMNS}). Idempotent.
 */
export function auditSql(): string {
  const pii = PII_COLUMNS.map(literal).map((c) => `(${c})`).join(", ");
  return `
-- Column names that hold PII wherever they appear (the audit looks for them).
CREATE TABLE IF NOT EXISTS util.pii_column (column_name text PRIMARY KEY);
INSERT INTO util.pii_column VALUES ${pii} ON CONFLICT DO NOTHING;

-- Residency audit of THIS node: every relation stored here (tables and
-- materialized views, not foreign tables or views) with a PII column.
-- Rows whose region is not this node's home, or rows of a relation that has
-- no region column (their home cannot be proven), are violations.
CREATE OR REPLACE FUNCTION util.residency_audit()
RETURNS TABLE (relation text, kind text, pii_columns text[], rows_stored bigint,
               rows_outside_home bigint, verdict text)
LANGUAGE plpgsql AS $$
DECLARE
  rel record;
  has_region boolean;
BEGIN
  FOR rel IN
    SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'm' THEN 'materialized view' END AS kind,
           array_agg(a.attname::text ORDER BY a.attnum) AS pii
    FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN util.pii_column p ON p.column_name = a.attname
    WHERE c.relkind IN ('r', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'
      AND c.relpersistence <> 't'
    GROUP BY c.oid, n.nspname, c.relname, c.relkind
    ORDER BY 2
  LOOP
    relation := rel.name;
    kind := rel.kind;
    pii_columns := rel.pii;
    has_region := EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = rel.oid AND a.attname = 'region' AND NOT a.attisdropped);
    IF has_region THEN
      EXECUTE format('SELECT count(*), count(*) FILTER (WHERE region IS DISTINCT FROM %L) FROM %s',
                     util.home_region(), rel.name)
        INTO rows_stored, rows_outside_home;
    ELSE
      EXECUTE format('SELECT count(*), count(*) FROM %s', rel.name) INTO rows_stored, rows_outside_home;
    END IF;
    verdict := CASE
      WHEN rows_outside_home = 0 THEN 'ok'
      WHEN has_region THEN 'VIOLATION: PII of other regions stored in ' || util.home_region()
      ELSE 'VIOLATION: PII without a region column (home unknown)'
    END;
    RETURN NEXT;
  END LOOP;
END $$;
`.trim();
}

/**
 * Every function of the model: {@link upsertSql}, {@link generateSql},
 * {@link managerTreeSql} and {@link auditSql}, in that order.
 *
 * @example
 * ```ts
 * for (const node of cluster.nodes) await node.exec(functionsSql());
 * ```
 */
export function functionsSql(): string {
  return [upsertSql(), generateSql(), managerTreeSql(), auditSql()].join("\n\n");
}

/** Options for {@link installModel}. */
export interface InstallOptions {
  /** postgres_fdw `fetch_size` on every foreign server. @default 10000 */
  fetchSize?: number;
  /** postgres_fdw `batch_size` on every foreign server. @default 1000 */
  batchSize?: number;
}

/**
 * Links every home node to the two others (foreign servers named after the
 * peers, through the simulated latency) and creates the foreign partitions.
 * Idempotent.
 *
 * @param options postgres_fdw `fetch_size` and `batch_size` of every server.
 * @example
 * ```ts
 * await linkHomes(cluster);
 * ```
 */
export async function linkHomes(cluster: Cluster, options: InstallOptions = {}): Promise<void> {
  const nodes = homeNodes(cluster);
  for (const home of HOMES) {
    for (const peer of HOMES) {
      if (peer === home) continue;
      await linkNodes(nodes[home], nodes[peer], {
        fetchSize: options.fetchSize ?? FDW_OPTIONS.fetchSize,
        batchSize: options.batchSize ?? FDW_OPTIONS.batchSize,
      });
      await nodes[home].exec(foreignPartitionSql(peer));
    }
  }
}

/**
 * Name of the subscription on `subscriber` that pulls `publisher`'s identity
 * changes (also the name of its replication slot on `publisher`).
 *
 * @example
 * ```ts
 * mirrorSubscription("gbr", "usa"); // "identity_gbr_to_usa"
 * ```
 */
export function mirrorSubscription(publisher: Home, subscriber: Home): string {
  return `identity_${publisher}_to_${subscriber}`;
}

/**
 * The SQL that makes `subscriber` receive the identity changes made on
 * `publisher`: a subscription with `origin = none` (PostgreSQL 16), so that
 * changes a node received from a peer are not sent on again, which is what
 * lets three nodes replicate to each other without loops. The slot is made
 * beforehand (see {@link mirrorIdentity}).
 *
 * @param pair Which node publishes and which subscribes.
 * @param conninfo How the subscriber reaches the publisher (with password).
 * @example
 * ```ts
 * await usa.exec(mirrorSubscriptionSql({ publisher: "gbr", subscriber: "usa" }, "host=… password=…"));
 * ```
 */
export function mirrorSubscriptionSql(
  pair: { publisher: Home; subscriber: Home },
  conninfo: string,
): string {
  const { publisher, subscriber } = pair;
  const name = mirrorSubscription(publisher, subscriber);
  return `CREATE SUBSCRIPTION ${name}
  CONNECTION ${literal(conninfo)}
  PUBLICATION identity_mirror
  WITH (origin = none, copy_data = false, disable_on_error = true,
        create_slot = false, slot_name = '${name}');`;
}

/**
 * Mirrors `shared.identity` between the three nodes: six subscriptions (each
 * node subscribes to the two others), then waits until every publisher
 * streams to both peers. Skips subscriptions that exist.
 *
 * The replication slots are created first, on each publisher, with
 * `pg_create_logical_replication_slot()`: creating a logical slot waits for
 * every transaction running on the publisher to end, so two nodes each
 * running CREATE SUBSCRIPTION (which creates the slot on the other) at the
 * same time would wait for each other forever.
 *
 * @returns One row per subscription: subscriber, publisher, name, state.
 * @throws {WorkshopError} `REPLICA_FAILED` when a subscription does not start streaming within 30 s.
 */
export async function mirrorIdentity(
  cluster: Cluster,
  options: { timeoutMs?: number } = {},
): Promise<{ subscription: string; subscriber: Home; publisher: Home; streaming: boolean }[]> {
  const nodes = homeNodes(cluster);
  const pairs = HOMES.flatMap((subscriber) =>
    HOMES.filter((p) => p !== subscriber).map((publisher) => ({ publisher, subscriber }))
  );
  const missing: typeof pairs = [];
  for (const pair of pairs) {
    const name = mirrorSubscription(pair.publisher, pair.subscriber);
    const [exists] = await nodes[pair.subscriber].sql`
      SELECT 1 FROM pg_subscription WHERE subname = ${name}`;
    if (exists) continue;
    missing.push(pair);
    await nodes[pair.publisher].sql`
      SELECT pg_create_logical_replication_slot(${name}, 'pgoutput')
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ${name})`;
  }
  await Promise.all(missing.map(async ({ publisher, subscriber }) => {
    const name = mirrorSubscription(publisher, subscriber);
    const route = await cluster.peerRoute(nodes[subscriber], nodes[publisher]);
    const to = nodes[publisher];
    const conninfo = `host=${route.host} port=${route.port} dbname=${to.database} ` +
      `user=${to.user} password=${to.password} application_name=${name}`;
    await nodes[subscriber].exec(mirrorSubscriptionSql({ publisher, subscriber }, conninfo));
  }));
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await mirrorState(cluster);
    if (states.every((s) => s.streaming)) return states;
    if (Date.now() > deadline) {
      const missing = states.filter((s) => !s.streaming).map((s) => s.subscription);
      throw new WorkshopError(
        "REPLICA_FAILED",
        `Identity mirror not streaming after ${timeoutMs} ms: ${missing.join(", ")}`,
        { fix: 'Check the node logs (node.logTail()); or start over with reset(cluster, "model")' },
      );
    }
    await sleep(50);
  }
}

/**
 * Whether each mirror subscription streams, seen from its publisher's
 * `pg_stat_replication`.
 *
 * @example
 * ```ts
 * (await mirrorState(cluster)).every((s) => s.streaming);
 * ```
 */
export async function mirrorState(
  cluster: Cluster,
): Promise<{ subscription: string; subscriber: Home; publisher: Home; streaming: boolean }[]> {
  const nodes = homeNodes(cluster);
  const rows = await Promise.all(HOMES.map(async (publisher) => {
    const streaming = new Set(
      (await nodes[publisher].sql`
        SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'`)
        .map((r) => r.application_name as string),
    );
    return HOMES.filter((s) => s !== publisher).map((subscriber) => {
      const subscription = mirrorSubscription(publisher, subscriber);
      return { subscription, subscriber, publisher, streaming: streaming.has(subscription) };
    });
  }));
  return rows.flat();
}

/**
 * Waits until `shared.identity` is the same on every node (same digest of
 * every row), i.e. logical replication has delivered every change.
 *
 * @returns The row count and digest every node agrees on.
 * @throws {WorkshopError} `REPLICA_FAILED` naming a disabled subscription
 *   (an apply error, such as the same uuid created on two nodes), or when
 *   the nodes still differ after the timeout.
 * @example
 * ```ts
 * await usa.exec(`SELECT util.create_manager_tree(15)`);
 * await awaitMirror(cluster);
 * ```
 */
export async function awaitMirror(
  cluster: Cluster,
  options: { timeoutMs?: number } = {},
): Promise<{ rows: number; digest: string; waitedMs: number }> {
  const nodes = cluster.nodes.filter((n) => (HOMES as readonly string[]).includes(n.name));
  const timeoutMs = options.timeoutMs ?? 30_000;
  const started = performance.now();
  for (let round = 0;; round++) {
    const seen = await Promise.all(nodes.map(async (n) => {
      const [row] = await n.sql`
        SELECT count(*) AS rows,
               coalesce(md5(string_agg(uuid::text || region || coalesce(manager_uuid::text, '-'),
                                       ',' ORDER BY uuid)), '') AS digest
        FROM shared.identity`;
      return { node: n.name, rows: row.rows as number, digest: row.digest as string };
    }));
    if (seen.every((s) => s.digest === seen[0].digest)) {
      return { rows: seen[0].rows, digest: seen[0].digest, waitedMs: performance.now() - started };
    }
    if (round % 10 === 9) await assertMirrorEnabled(nodes);
    if (performance.now() - started > timeoutMs) {
      throw new WorkshopError(
        "REPLICA_FAILED",
        `shared.identity differs between nodes after ${timeoutMs} ms: ${
          seen.map((s) => `${s.node} ${s.rows} rows`).join(", ")
        }`,
        { fix: 'Check the node logs (node.logTail()); or start over with reset(cluster, "model")' },
      );
    }
    await sleep(20);
  }
}

async function assertMirrorEnabled(nodes: Node[]): Promise<void> {
  for (const node of nodes) {
    const disabled = await node.sql`
      SELECT s.subname, coalesce(t.apply_error_count, 0) AS errors
      FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats t ON t.subid = s.oid
      WHERE NOT s.subenabled AND s.subname LIKE 'identity\\_%'`;
    if (disabled.length) {
      throw new WorkshopError(
        "REPLICA_FAILED",
        `Identity mirror subscription ${disabled[0].subname} on "${node.name}" is disabled (${
          disabled[0].errors
        } apply errors)`,
        {
          fix:
            `A change could not be applied (the same uuid created on two nodes?); see node.logTail(), ` +
            `or start over with reset(cluster, "model")`,
          details: await node.logTail(8),
        },
      );
    }
  }
}

/**
 * Installs the whole model on the three home nodes: tables, foreign
 * partitions, functions and the identity mirror. Idempotent.
 *
 * @example
 * ```ts
 * const cluster = await startCluster({ name: "t", nodes: residencyNodes() });
 * await installModel(cluster);
 * ```
 */
export async function installModel(cluster: Cluster, options: InstallOptions = {}): Promise<void> {
  const nodes = homeNodes(cluster);
  for (const home of HOMES) await nodes[home].exec(tablesSql(home));
  await linkHomes(cluster, options);
  for (const home of HOMES) await nodes[home].exec(functionsSql());
  await mirrorIdentity(cluster);
}

/**
 * Removes the model from every home node: subscriptions (and their slots),
 * publication, schemas, foreign servers. Leaves the nodes running. Works on
 * a half-built or broken model (used by the lesson's reset).
 *
 * @example
 * ```ts
 * await dropModel(cluster);
 * ```
 */
export async function dropModel(cluster: Cluster): Promise<void> {
  const nodes = cluster.nodes.filter((n) => (HOMES as readonly string[]).includes(n.name));
  for (const node of nodes) {
    const subs = await node.sql`SELECT subname FROM pg_subscription`;
    for (const { subname } of subs) {
      const name = ident(subname as string);
      await node.exec(`ALTER SUBSCRIPTION ${name} DISABLE`);
      await node.exec(`ALTER SUBSCRIPTION ${name} SET (slot_name = NONE)`);
      await node.exec(`DROP SUBSCRIPTION ${name}`);
    }
  }
  for (const node of nodes) {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const slots = await node.sql`
        SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'logical'`;
      for (const s of slots.filter((s) => !s.active)) {
        await node.sql`SELECT pg_drop_replication_slot(${s.slot_name as string})`.catch(() => {});
      }
      if (slots.every((s) => !s.active) || Date.now() > deadline) break;
      await sleep(50);
    }
    await node.exec(`
      DROP PUBLICATION IF EXISTS identity_mirror;
      DROP SCHEMA IF EXISTS shared, util, usa, gbr, aus CASCADE;
    `);
    const servers = await node.sql`
      SELECT srvname FROM pg_foreign_server WHERE srvname IN ('usa', 'gbr', 'aus')`;
    for (const { srvname } of servers) {
      await node.exec(`DROP SERVER IF EXISTS ${ident(srvname as string)} CASCADE`);
    }
  }
}

/** The source's three calls (the usa person, the gbr person, a random aus person). */
export const SOURCE_UPSERTS = `select
  shared.upsert_identity(
      '7139f8aa-7f93-4657-83ad-b7d74a22159f',
      'David Welch',
      'usa',
      'Dave is really nice'
  ) as dave,
  shared.upsert_identity(
      'd0c4d726-225c-426d-80d2-7406eb1c9739',
      'Da Queen',
      'gbr',
      'Da queen is a powerhouse, but sort of an acquired taste'
  ) as queen,
  shared.upsert_identity(
      uuid_generate_v4(),
      'Someone Random',
      'aus',
      'This will always make someone new'
  ) as rando,

  true as dummy
;`;

/** The fixed uuids of the source's first two people. */
export const DAVE = "7139f8aa-7f93-4657-83ad-b7d74a22159f";
export const QUEEN = "d0c4d726-225c-426d-80d2-7406eb1c9739";

/** One upsert outcome, parsed from the composite `(uuid,created,owner)`. */
export interface UpsertResult {
  uuid: string;
  created: boolean;
  owner: boolean;
}

/**
 * Parses a `shared.upsert_result` as PostgreSQL prints it: `(uuid,t,f)`.
 *
 * @example
 * ```ts
 * parseUpsert("(7139f8aa-7f93-4657-83ad-b7d74a22159f,t,t)"); // { uuid: "7139…", created: true, owner: true }
 * ```
 */
export function parseUpsert(text: string): UpsertResult {
  const m = /^\(([0-9a-f-]{36}),([tf]),([tf])\)$/.exec(String(text));
  if (!m) {
    throw new WorkshopError("INVALID_SETTING", `Not an upsert result: "${text}"`, {
      fix: "Pass the text of a shared.upsert_result, e.g. (7139f8aa-…,t,t)",
    });
  }
  return { uuid: m[1], created: m[2] === "t", owner: m[3] === "t" };
}

/** Where one person's PII is stored, read on every node directly (no FDW). */
export interface Placement {
  uuid: string;
  name: string;
  region: string;
  /** Nodes whose own partition holds the row. */
  storedOn: string[];
}

/**
 * Where the PII of the given people (or of everyone) is stored: each node's
 * own partition `<home>.identity_details` read on that node directly.
 *
 * @example
 * ```ts
 * await show(table(await placements(cluster, [DAVE, QUEEN])));
 * ```
 */
export async function placements(cluster: Cluster, uuids?: string[]): Promise<Placement[]> {
  const nodes = homeNodes(cluster);
  const byUuid = new Map<string, Placement>();
  for (const home of HOMES) {
    const sql = nodes[home].sql;
    const rows = uuids
      ? await sql`SELECT uuid::text, name, region FROM ${sql(home)}.identity_details
                  WHERE uuid = ANY(${uuids}::uuid[])`
      : await sql`SELECT uuid::text, name, region FROM ${sql(home)}.identity_details`;
    for (const r of rows) {
      const p = byUuid.get(r.uuid as string) ??
        {
          uuid: r.uuid as string,
          name: r.name as string,
          region: r.region as string,
          storedOn: [],
        };
      p.storedOn.push(home);
      byUuid.set(p.uuid, p);
    }
  }
  const order = uuids ?? [...byUuid.keys()];
  return order.flatMap((u) => byUuid.get(u) ?? []);
}

/**
 * Rows of PII each node stores in its own partition, and how many of them
 * belong to its region, counted on each node directly.
 *
 * @example
 * ```ts
 * await show(table(await piiPerNode(cluster)));
 * ```
 */
export async function piiPerNode(
  cluster: Cluster,
): Promise<{ node: Home; region: RegionId; rows: number; homeRows: number }[]> {
  const nodes = homeNodes(cluster);
  return await Promise.all(HOMES.map(async (home) => {
    const sql = nodes[home].sql;
    const [r] = await sql`
      SELECT count(*) AS rows, count(*) FILTER (WHERE region = ${home}) AS home_rows
      FROM ${sql(home)}.identity_details`;
    return {
      node: home,
      region: HOME_REGIONS[home],
      rows: r.rows as number,
      homeRows: r.home_rows as number,
    };
  }));
}

/** One row of the residency audit. */
export interface AuditRow {
  node: Home;
  relation: string;
  kind: string;
  pii_columns: string[];
  rows_stored: number;
  rows_outside_home: number;
  verdict: string;
}

/**
 * Runs `util.residency_audit()` on every node, connected to each node
 * directly (the audit looks at what each node stores, not through the FDW).
 *
 * @returns Every relation with PII on every node, and whether all are clean.
 * @example
 * ```ts
 * const audit = await residencyAudit(cluster);
 * await show(verifyThat("no PII outside its home region", audit.ok, `${audit.rows.length} relations`));
 * ```
 */
export async function residencyAudit(
  cluster: Cluster,
): Promise<{ ok: boolean; rows: AuditRow[]; violations: AuditRow[] }> {
  const nodes = homeNodes(cluster);
  const rows = (await Promise.all(
    HOMES.map(async (home) =>
      (await nodes[home].sql`SELECT * FROM util.residency_audit()`).map((r) => ({
        node: home,
        relation: r.relation as string,
        kind: r.kind as string,
        pii_columns: r.pii_columns as string[],
        rows_stored: r.rows_stored as number,
        rows_outside_home: r.rows_outside_home as number,
        verdict: r.verdict as string,
      }))
    ),
  )).flat();
  const violations = rows.filter((r) => r.rows_outside_home > 0);
  return { ok: violations.length === 0, rows, violations };
}

/** Options for {@link hierarchyQuery}. */
export interface HierarchyQueryOptions {
  /**
   * Regions whose people to return. Unset: everyone (the source's query).
   * @default undefined
   */
  regions?: Home[];
  /**
   * Where the region filter goes. "end": the source's final
   * `WHERE q.region in (...)`, applied after every name was fetched.
   * "pii": the names are fetched only for targets of those regions, so the
   * other regions' nodes are never contacted. @default "end"
   */
  filter?: "end" | "pii";
}

/**
 * The source's hierarchy query for the people under `root`, or a variant
 * that filters regions (see {@link HierarchyQueryOptions}).
 *
 * @example
 * ```ts
 * const rows = await usa.sql.unsafe(hierarchyQuery(root, { regions: ["usa", "gbr"], filter: "pii" }));
 * ```
 */
export function hierarchyQuery(root: string, options: HierarchyQueryOptions = {}): string {
  if (!/^[0-9a-f-]{36}$/i.test(root)) {
    throw new WorkshopError("INVALID_SETTING", `Not a uuid: "${root}"`, {
      fix: "Pass the uuid util.create_manager_tree() returned",
    });
  }
  const regions = options.regions?.map(assertHome);
  const list = regions?.map(literal).join(", ");
  const targets = `WITH targets AS (
    SELECT
      i.*
    FROM shared.hierarchy t
      INNER JOIN shared.hierarchy i ON i.path[t.depth] = t.uuid
    WHERE t.uuid = '${root}' :: UUID
)`;
  const upline = `upline AS (
  select
    c.uuid,
    array_agg(q.name ORDER BY q.depth) as upline
  from qualified c
    LEFT JOIN qualified q ON c.path @> array[q.uuid]
  WHERE c.manager_uuid IS NOT NULL
  GROUP BY c.uuid
)`;
  if (regions && options.filter === "pii") {
    return `${targets}, qualified AS (
    -- PII only for the targets in ${list}: partition pruning skips the other nodes
    SELECT
      d.name,
      t.*
    FROM shared.identity_details d
      INNER JOIN targets t on t.uuid = d.uuid
    WHERE d.region in (${list})
      AND d.uuid = ANY (ARRAY(SELECT t2.uuid FROM targets t2 WHERE t2.region in (${list})))
), ${upline}
select q.name, q.uuid, q.depth, q.region,
  m.name as manager, q.manager_uuid, mt.region as manager_region,
  u.upline
from qualified q
  LEFT JOIN qualified m on m.uuid = q.manager_uuid
  LEFT JOIN targets mt on mt.uuid = q.manager_uuid
  LEFT JOIN upline u on u.uuid = q.uuid
ORDER BY q.depth;`;
  }
  return `${targets}, qualified AS (
    SELECT
      d.name,
      t.*
    FROM shared.identity_details d
      LEFT JOIN targets t on t.uuid = d.uuid
    WHERE d.uuid in ((
      SELECT t2.uuid FROM targets t2
    ))
), ${upline}
select q.name, q.uuid, q.depth, q.region,
  m.name as manager, m.uuid as manager_uuid, m.region as manager_region,
  u.upline
from qualified q
  LEFT JOIN qualified m on m.uuid = q.manager_uuid
  LEFT JOIN upline u on u.uuid = q.uuid
${regions ? "" : "-- "}WHERE q.region in (${list ?? "'usa', 'gbr'"})
ORDER BY q.depth;`;
}

/** A scan of one partition of `shared.identity_details` in an executed plan. */
export interface PartitionScan {
  /** Partition, e.g. "gbr.identity_details". */
  partition: string;
  /** Node that stores it. */
  node: string;
  /** "local" (a scan on this node) or "foreign" (a query sent to another node). */
  kind: "local" | "foreign";
  /** Times the scan ran (0: in the plan but never executed). */
  loops: number;
  /** Rows it returned, over all loops. */
  rows: number;
  /** SQL sent to the remote node (foreign scans). */
  remoteSql: string | null;
}

/**
 * Runs `EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON)` on `node` and lists the
 * scans of `shared.identity_details` partitions: which nodes the query
 * read PII from, how many rows, and the SQL each foreign scan sent.
 * Partitions pruned at plan time do not appear; pruned at run time, they
 * appear with `loops: 0`.
 *
 * @example
 * ```ts
 * const scans = await partitionScans(usa, hierarchyQuery(root));
 * ```
 */
export async function partitionScans(
  node: Node | Sql,
  query: string,
): Promise<{ scans: PartitionScan[]; subplansRemoved: number; ms: number }> {
  const sql = "sql" in node ? node.sql : node;
  const [row] = await sql.unsafe(`EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) ${query}`);
  const explained = row["QUERY PLAN"] as unknown;
  const plan = (typeof explained === "string" ? JSON.parse(explained) : explained) as {
    Plan: PlanNode;
    "Execution Time": number;
  }[];
  const scans: PartitionScan[] = [];
  let subplansRemoved = 0;
  const walk = (p: PlanNode) => {
    subplansRemoved += p["Subplans Removed"] ?? 0;
    if (p["Relation Name"] === "identity_details" && p.Schema) {
      const home = p.Schema;
      const foreign = p["Node Type"] === "Foreign Scan";
      const loops = p["Actual Loops"] ?? 0;
      scans.push({
        partition: `${home}.identity_details`,
        node: home,
        kind: foreign ? "foreign" : "local",
        loops,
        rows: (p["Actual Rows"] ?? 0) * loops,
        remoteSql: foreign ? p["Remote SQL"] ?? null : null,
      });
    }
    for (const child of p.Plans ?? []) walk(child);
  };
  walk(plan[0].Plan);
  return { scans, subplansRemoved, ms: plan[0]["Execution Time"] };
}

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  Schema?: string;
  "Actual Loops"?: number;
  "Actual Rows"?: number;
  "Remote SQL"?: string;
  "Subplans Removed"?: number;
  Plans?: PlanNode[];
}

/** What {@link measureQuery} measured. */
export interface QueryMeasurement {
  /** Label of the query. */
  label: string;
  /** Median latency in ms (warm FDW connections). */
  ms: number;
  /** Every timed run in ms. */
  samples: number[];
  /** Rows the query returned. */
  rows: number;
  /** Foreign servers the session connected to (`postgres_fdw_get_connections()`). */
  servers: string[];
}

/**
 * Times `query` on `node` in a fresh session: one warm-up run (which opens
 * the FDW connections it needs), then `repeat` timed runs; then asks
 * `postgres_fdw_get_connections()` which foreign servers that session
 * contacted.
 *
 * @example
 * ```ts
 * const m = await measureQuery(usa, hierarchyQuery(root), { label: "no filter" });
 * m.servers; // ["aus", "gbr"]
 * ```
 */
export async function measureQuery(
  node: Node,
  query: string,
  options: { label?: string; repeat?: number } = {},
): Promise<QueryMeasurement> {
  const sql = await node.client({ applicationName: "pgsw-residency-bench" });
  try {
    const first = await sql.unsafe(query);
    const samples: number[] = [];
    for (let i = 0; i < (options.repeat ?? 3); i++) {
      const started = performance.now();
      await sql.unsafe(query);
      samples.push(performance.now() - started);
    }
    const servers = (await sql`
      SELECT server_name FROM postgres_fdw_get_connections() ORDER BY 1`)
      .map((r) => r.server_name as string);
    const sorted = [...samples].sort((a, b) => a - b);
    return {
      label: options.label ?? "query",
      ms: sorted[Math.floor((sorted.length - 1) / 2)],
      samples,
      rows: first.length,
      servers,
    };
  } finally {
    await node.closeClient(sql);
  }
}

/** Outcome of one statement run by {@link attempt}. */
export interface Attempt {
  /** The statement. */
  statement: string;
  /** Whether it ran without error. */
  ok: boolean;
  /** Command tag of the last statement (when ok), e.g. "INSERT". */
  command: string | null;
  /** Rows affected or returned by the last statement (when ok). */
  rows: number | null;
  /** SQLSTATE of the error, e.g. "0A000". */
  sqlstate: string | null;
  /** The error message, with its detail when there is one. */
  error: string | null;
  /** Where the error arose (e.g. "remote SQL command: ..."), when the server says. */
  where: string | null;
}

/**
 * Runs `statement` on `node` and reports what happened instead of throwing:
 * for showing the real error of an operation PostgreSQL does not support.
 * A failed statement changes nothing (it runs in its own transaction).
 *
 * @example
 * ```ts
 * const a = await attempt(usa, `ALTER TABLE shared.identity_details ADD PRIMARY KEY (uuid, region)`);
 * a.sqlstate; // "42809"
 * ```
 */
export async function attempt(node: Node, statement: string): Promise<Attempt> {
  try {
    const results = await node.exec(statement);
    const last = results[results.length - 1];
    return {
      statement,
      ok: true,
      command: last?.command ?? null,
      rows: last?.count ?? null,
      sqlstate: null,
      error: null,
      where: null,
    };
  } catch (error) {
    const e = error as { message?: string; code?: string; detail?: string; where?: string };
    if (typeof e.code !== "string" || !/^[0-9A-Z]{5}$/.test(e.code)) throw error;
    return {
      statement,
      ok: false,
      command: null,
      rows: null,
      sqlstate: e.code,
      error: e.detail ? `${e.message} (${e.detail})` : e.message ?? String(error),
      where: e.where ?? null,
    };
  }
}

/**
 * SQL text as a displayable listing (a fenced sql block, with an optional caption).
 *
 * @example
 * ```ts
 * await show(sqlListing(tablesSql("usa"), "run on usa"));
 * ```
 */
export function sqlListing(sql: string, caption?: string): Displayable {
  return markdown(`${caption ? `*${caption}*\n\n` : ""}\`\`\`sql\n${sql.trim()}\n\`\`\``);
}

/**
 * Placements as table rows: one row per person, a column per node with a
 * mark where that node stores the person's PII.
 *
 * @example
 * ```ts
 * await show(table(placementRows(await placements(cluster))));
 * ```
 */
export function placementRows(list: readonly Placement[]): Record<string, string>[] {
  return list.map((p) => ({
    name: p.name,
    uuid: p.uuid,
    region: p.region,
    ...Object.fromEntries(
      HOMES.map((h) => [`stored on ${h}`, p.storedOn.includes(h) ? "✔" : "·"]),
    ),
  }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
