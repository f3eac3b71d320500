/**
 * Inspection: where the rows of a partitioned table live. Rows and bytes of
 * each leaf partition are counted on the node that holds them (directly,
 * not through postgres_fdw), so the numbers are what each node stores.
 *
 * @module
 */

import { optionMap } from "./fdw.ts";
import { connect, type Node } from "./node.ts";

/** One partition of a partitioned table. */
export interface PartitionRow {
  /** Partition name on the coordinator. */
  partition: string;
  /** Schema of the partition on the coordinator. */
  schema: string;
  /** Parent partition (null for the root). */
  parent: string | null;
  /** Depth: 0 for the root. */
  level: number;
  /** "partitioned", "local" or "foreign". */
  kind: "partitioned" | "local" | "foreign";
  /** Partition bound as PostgreSQL prints it. */
  bound: string | null;
  /** Foreign server (foreign leaves). */
  server: string | null;
  /** Table on the remote node (foreign leaves). */
  remoteTable: string | null;
  /** Node holding the rows (the coordinator for local leaves). */
  node: string | null;
}

/** One leaf partition with its rows and bytes, counted where it lives. */
export interface ShardRow extends PartitionRow {
  /** Region of the node holding the rows. */
  region: string | null;
  /** Rows stored in the table behind this partition. */
  rows: number;
  /** Bytes on disk of the table behind this partition, with indexes (null if unknown). */
  bytes: number | null;
}

/**
 * The partition tree of `table` on `coordinator`, root first, with the node
 * behind every foreign partition.
 *
 * @example
 * ```ts
 * await show(table(await partitionTree(eu1, "customer")));
 * ```
 */
export async function partitionTree(coordinator: Node, table: string): Promise<PartitionRow[]> {
  const rows = await coordinator.sql`
    SELECT c.relname AS partition, p.relname AS parent, t.level, t.isleaf, c.relkind,
           pg_get_expr(c.relpartbound, c.oid) AS bound, n.nspname AS schema,
           s.srvname AS server, s.srvoptions, f.ftoptions
    FROM pg_partition_tree(${table}::regclass) t
    JOIN pg_class c ON c.oid = t.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class p ON p.oid = t.parentrelid
    LEFT JOIN pg_foreign_table f ON f.ftrelid = t.relid
    LEFT JOIN pg_foreign_server s ON s.oid = f.ftserver
    ORDER BY t.level, c.relname`;
  return await Promise.all(rows.map(async (r): Promise<PartitionRow> => {
    const kind = r.relkind === "f" ? "foreign" : r.relkind === "p" ? "partitioned" : "local";
    let node: string | null = kind === "partitioned" ? null : coordinator.name;
    let remoteTable: string | null = null;
    if (kind === "foreign") {
      const server = optionMap(r.srvoptions as string[]);
      const ft = optionMap(r.ftoptions as string[]);
      remoteTable = `${ft.schema_name ?? r.schema}.${ft.table_name ?? r.partition}`;
      node =
        (await coordinator.cluster.nodeAt(server.host ?? "", Number(server.port), server.dbname))
          ?.name ??
          null;
    }
    return {
      partition: r.partition as string,
      schema: r.schema as string,
      parent: (r.parent as string | null) ?? null,
      level: r.level as number,
      kind,
      bound: (r.bound as string | null) ?? null,
      server: (r.server as string | null) ?? null,
      remoteTable,
      node,
    };
  }));
}

/**
 * Rows and bytes of every leaf partition of `table`, counted on the node
 * that holds each one, in the database the foreign server names (`dbname`).
 * A foreign partition whose server leads outside the cluster is counted
 * through postgres_fdw and has `bytes: null`.
 *
 * @example
 * ```ts
 * const shards = await distribution(eu1, "customer");
 * await show(distributionPlot(shards, { title: "customer after year 1" }));
 * ```
 */
export async function distribution(coordinator: Node, table: string): Promise<ShardRow[]> {
  const tree = await partitionTree(coordinator, table);
  const leaves = tree.filter((p) => p.kind !== "partitioned");
  return await Promise.all(leaves.map(async (leaf): Promise<ShardRow> => {
    const holder = leaf.node ? coordinator.cluster.node(leaf.node) : undefined;
    const target = leaf.kind === "foreign" ? leaf.remoteTable! : `${leaf.schema}.${leaf.partition}`;
    if (!holder) {
      const [{ n }] = await coordinator.sql`SELECT count(*) AS n FROM ${
        coordinator.sql(leaf.schema)
      }.${coordinator.sql(leaf.partition)}`;
      return { ...leaf, region: null, rows: n as number, bytes: null };
    }
    const [schema, name] = splitQualified(target);
    // A foreign server may name another database on the node than the one its client uses.
    const database = leaf.kind === "foreign"
      ? await serverDatabase(coordinator, leaf.server)
      : null;
    const sql = database && database !== holder.database
      ? connect({ host: holder.host, port: holder.port }, holder.user, holder.password, {
        database,
      })
      : holder.sql;
    let stats;
    try {
      [stats] = await sql`
        SELECT (SELECT count(*) FROM ${sql(schema)}.${sql(name)}) AS rows,
               pg_total_relation_size(format('%I.%I', ${schema}::text, ${name}::text)::regclass) AS bytes`;
    } finally {
      if (sql !== holder.sql) await sql.end({ timeout: 1 });
    }
    return {
      ...leaf,
      region: holder.region,
      rows: stats.rows as number,
      bytes: stats.bytes as number,
    };
  }));
}

/** Total rows across the shards of a {@link distribution}. */
export function totalRows(shards: readonly ShardRow[]): number {
  return shards.reduce((sum, s) => sum + s.rows, 0);
}

/** Rows per node across the shards of a {@link distribution}. */
export function rowsPerNode(shards: readonly ShardRow[]): Record<string, number> {
  const result: Record<string, number> = {};
  for (const s of shards) result[s.node ?? "?"] = (result[s.node ?? "?"] ?? 0) + s.rows;
  return result;
}

/**
 * Foreign partitions that lead to the same table on the same node: the
 * "all data is on all nodes" mistake, where every partition points at one server.
 *
 * @returns One entry per shared target, listing the partitions that share it.
 */
export function sharedTargets(
  tree: readonly PartitionRow[],
): { target: string; partitions: string[] }[] {
  const byTarget = new Map<string, string[]>();
  for (const p of tree) {
    if (p.kind === "partitioned") continue;
    const target = `${p.node ?? p.server}:${p.remoteTable ?? p.partition}`;
    byTarget.set(target, [...(byTarget.get(target) ?? []), p.partition]);
  }
  return [...byTarget].filter(([, parts]) => parts.length > 1).map(([target, partitions]) => ({
    target,
    partitions,
  }));
}

async function serverDatabase(coordinator: Node, server: string | null): Promise<string | null> {
  if (!server) return null;
  const [row] = await coordinator
    .sql`SELECT srvoptions FROM pg_foreign_server WHERE srvname = ${server}`;
  return optionMap(row?.srvoptions as string[] | null).dbname ?? null;
}

function splitQualified(name: string): [string, string] {
  const i = name.indexOf(".");
  return i < 0 ? ["public", name] : [name.slice(0, i), name.slice(i + 1)];
}
