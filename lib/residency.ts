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
 * Every SQL text is built once, in these modules; notebooks show it, tests
 * run it.
 *
 * This module is the public face (`residency` in mod.ts): it installs and
 * drops the whole model, and re-exports the public names of its parts:
 *
 * | part                       | holds                                                      |
 * |----------------------------|------------------------------------------------------------|
 * | `_residency_layout.ts`     | home nodes and regions, tables, foreign partitions, links  |
 * | `_residency_functions.ts`  | the model's SQL functions, the source's upserts            |
 * | `_residency_mirror.ts`     | the logical-replication mirror of `shared.identity`        |
 * | `_residency_audit.ts`      | where PII is stored: per person, per node, the audit       |
 * | `_residency_queries.ts`    | the hierarchy query, plan scans, timings, failing statements |
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import { ident } from "./fdw.ts";
import { functionsSql } from "./_residency_functions.ts";
import {
  homeNodes,
  HOMES,
  type InstallOptions,
  linkHomes,
  presentHomeNodes,
  tablesSql,
} from "./_residency_layout.ts";
import { dropMirror, mirrorIdentity } from "./_residency_mirror.ts";

export {
  assertHome,
  FDW_OPTIONS,
  foreignPartitionSql,
  type Home,
  HOME_REGIONS,
  homeNodes,
  HOMES,
  type InstallOptions,
  linkHomes,
  residencyNodes,
  tablesSql,
} from "./_residency_layout.ts";
export {
  auditSql,
  DAVE,
  functionsSql,
  generateSql,
  managerTreeSql,
  parseUpsert,
  PII_COLUMNS,
  QUEEN,
  REGION_WEIGHTS,
  SOURCE_UPSERTS,
  type UpsertResult,
  upsertSql,
} from "./_residency_functions.ts";
export {
  awaitMirror,
  mirrorIdentity,
  mirrorState,
  mirrorSubscription,
  mirrorSubscriptionSql,
} from "./_residency_mirror.ts";
export {
  type AuditRow,
  piiPerNode,
  type Placement,
  placementRows,
  placements,
  residencyAudit,
} from "./_residency_audit.ts";
export {
  type Attempt,
  attempt,
  hierarchyQuery,
  type HierarchyQueryOptions,
  measureQuery,
  type PartitionScan,
  partitionScans,
  type QueryMeasurement,
  sqlListing,
} from "./_residency_queries.ts";

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
  const nodes = presentHomeNodes(cluster);
  await dropMirror(nodes);
  for (const node of nodes) {
    await node.exec(`DROP SCHEMA IF EXISTS shared, util, usa, gbr, aus CASCADE;`);
    const servers = await node.sql`
      SELECT srvname FROM pg_foreign_server WHERE srvname IN ('usa', 'gbr', 'aus')`;
    for (const { srvname } of servers) {
      await node.exec(`DROP SERVER IF EXISTS ${ident(srvname as string)} CASCADE`);
    }
  }
}
