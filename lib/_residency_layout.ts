/**
 * Where the residency model lives: the three home nodes and their regions,
 * the tables and partitions of each node, and the foreign servers that
 * link every node to the two others. Part of the residency module (see
 * residency.ts, which re-exports the public names).
 *
 * @module
 */

import type { Cluster, NodeOptions } from "./cluster.ts";
import { WorkshopError } from "./errors.ts";
import { linkNodes } from "./fdw.ts";
import type { Node } from "./node.ts";
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

/** postgres_fdw options every link gets: one round trip per 10 000 rows read, per 1 000 rows written. */
export const FDW_OPTIONS = { fetchSize: 10_000, batchSize: 1_000 } as const;

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

/** The home nodes the cluster has (any of usa, gbr, aus; none missing is required). */
export function presentHomeNodes(cluster: Cluster): Node[] {
  return cluster.nodes.filter((n) => (HOMES as readonly string[]).includes(n.name));
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
