/**
 * Declarative partitioning across nodes: hash, list, and list-then-hash,
 * with leaf partitions local to the coordinator or foreign tables on other
 * nodes (postgres_fdw). Each helper is idempotent and verifies the result
 * against `pg_partition_tree` and `pg_foreign_table`.
 *
 * These helpers build what the notebooks build by hand with the source's SQL;
 * tests, resets and exercises use them.
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";
import { ident, linkNodes, literal } from "./fdw.ts";
import type { Node } from "./node.ts";

/** Column definitions, e.g. `{ id: "UUID NOT NULL DEFAULT gen_random_uuid()", email: "TEXT NOT NULL" }`. */
export type Columns = Record<string, string>;

/** Options shared by every layout. */
export interface LayoutOptions {
  /** Column definitions of the table. */
  columns: Columns;
  /**
   * Primary key columns. Applied on every leaf table (local or remote), not on
   * the partitioned parent: a unique index on the parent would forbid foreign
   * partitions, so nothing enforces uniqueness across nodes.
   * @default []
   */
  primaryKey?: string[];
  /** Name of the table on the remote nodes. @default the leaf partition's name */
  remoteTable?: (leaf: string) => string;
}

/** One leaf of a layout: where a slice of the table lives. */
export interface LeafSpec {
  /** Partition name on the coordinator. */
  name: string;
  /** Partition bound, e.g. `FOR VALUES WITH (MODULUS 2, REMAINDER 0)` or `DEFAULT`. */
  bound: string;
  /** Node holding the rows (the coordinator itself means a local partition). */
  node: Node;
}

/** A partition that is itself partitioned. */
export interface BranchSpec {
  name: string;
  bound: string;
  /** Partitioning of this branch, e.g. `HASH (id)`. */
  by: string;
  children: (LeafSpec | BranchSpec)[];
}

/** What a layout helper created. */
export interface Layout {
  table: string;
  coordinator: Node;
  /** Every leaf: name, bound, node. */
  leaves: LeafSpec[];
}

/**
 * Hash-partitions `table` on `coordinator` across `shards` (MODULUS = number
 * of shards; remainder i lives on shards[i]).
 *
 * @example
 * ```ts
 * await hashPartition(eu1, "customer", {
 *   column: "id", shards: [eu1, eu2],
 *   columns: { id: "UUID NOT NULL DEFAULT gen_random_uuid()", email: "TEXT NOT NULL" },
 *   primaryKey: ["id"],
 * });
 * ```
 */
export function hashPartition(
  coordinator: Node,
  table: string,
  options: LayoutOptions & {
    column: string;
    shards: Node[];
    partitionName?: (i: number) => string;
  },
): Promise<Layout> {
  const name = options.partitionName ?? ((i: number) => `${table}_${i}`);
  const n = options.shards.length;
  return createLayout(
    coordinator,
    table,
    options,
    `HASH (${ident(options.column)})`,
    options.shards.map((node, i) => ({
      name: name(i),
      bound: `FOR VALUES WITH (MODULUS ${n}, REMAINDER ${i})`,
      node,
    })),
  );
}

/** One list partition for {@link listPartition}. */
export interface ListPartition {
  /** Partition name. */
  name: string;
  /** Values routed here, or "default" for everything else. */
  values: string[] | "default";
  /** Node holding the rows. */
  node: Node;
}

/**
 * List-partitions `table` on `coordinator` by `column`.
 *
 * @example
 * ```ts
 * await listPartition(host, "tweets", {
 *   column: "location", columns,
 *   partitions: [{ name: "europe_tweets", values: ["europe"], node: europe },
 *                { name: "tweets_default", values: "default", node: host }],
 * });
 * ```
 */
export function listPartition(
  coordinator: Node,
  table: string,
  options: LayoutOptions & { column: string; partitions: ListPartition[] },
): Promise<Layout> {
  return createLayout(
    coordinator,
    table,
    options,
    `LIST (${ident(options.column)})`,
    options.partitions.map((p) => ({ name: p.name, bound: listBound(p.values), node: p.node })),
  );
}

/** One list branch for {@link listHashPartition}. */
export interface ListHashGroup {
  /** Name of the list partition (e.g. "customer_uk"). */
  name: string;
  /** Values routed to this group. */
  values: string[];
  /** Nodes the group's rows are hashed across, in remainder order. */
  nodes: Node[];
}

/**
 * Two levels: LIST by `listColumn`, each list partition HASH-partitioned by
 * `hashColumn` across its own nodes (the source's year-5 multi-region layout).
 * Leaves are named `<group>_partitioned_<i>`.
 *
 * @example
 * ```ts
 * await listHashPartition(eu1, "customer", {
 *   listColumn: "region", hashColumn: "id", columns,
 *   groups: [{ name: "customer_uk", values: ["uk"], nodes: [eu1, eu2, eu3] },
 *            { name: "customer_us", values: ["us"], nodes: [us1, us2, us3] }],
 * });
 * ```
 */
export function listHashPartition(
  coordinator: Node,
  table: string,
  options: LayoutOptions & { listColumn: string; hashColumn: string; groups: ListHashGroup[] },
): Promise<Layout> {
  const children = options.groups.map((g): BranchSpec => ({
    name: g.name,
    bound: listBound(g.values),
    by: `HASH (${ident(options.hashColumn)})`,
    children: g.nodes.map((node, i) => ({
      name: `${g.name}_partitioned_${i}`,
      bound: `FOR VALUES WITH (MODULUS ${g.nodes.length}, REMAINDER ${i})`,
      node,
    })),
  }));
  return createLayout(coordinator, table, options, `LIST (${ident(options.listColumn)})`, children);
}

/**
 * Creates any partition tree: the parent, branches, local leaves, remote
 * tables on other nodes and foreign-table leaves. Idempotent; verified.
 */
export async function createLayout(
  coordinator: Node,
  table: string,
  options: LayoutOptions,
  by: string,
  children: (LeafSpec | BranchSpec)[],
): Promise<Layout> {
  const columnDdl = Object.entries(options.columns).map(([c, t]) => `${ident(c)} ${t}`).join(", ");
  const pk = options.primaryKey?.length
    ? `, PRIMARY KEY (${options.primaryKey.map(ident).join(", ")})`
    : "";
  const remoteName = options.remoteTable ?? ((leaf: string) => leaf);
  const leaves: LeafSpec[] = [];
  const statements = [
    `CREATE TABLE IF NOT EXISTS ${ident(table)} (${columnDdl}) PARTITION BY ${by};`,
  ];

  const visit = async (parent: string, child: LeafSpec | BranchSpec) => {
    if ("children" in child) {
      statements.push(
        `CREATE TABLE IF NOT EXISTS ${ident(child.name)} PARTITION OF ${
          ident(parent)
        } ${child.bound} PARTITION BY ${child.by};`,
      );
      for (const c of child.children) await visit(child.name, c);
      return;
    }
    leaves.push(child);
    if (child.node === coordinator) {
      statements.push(
        `CREATE TABLE IF NOT EXISTS ${ident(child.name)} PARTITION OF ${
          ident(parent)
        } ${child.bound};`,
      );
      if (pk) statements.push(addPrimaryKeyIfMissing(child.name, options.primaryKey!));
      return;
    }
    const link = await linkNodes(coordinator, child.node);
    const remote = remoteName(child.name);
    await child.node.exec(`CREATE TABLE IF NOT EXISTS ${ident(remote)} (${columnDdl}${pk});`);
    statements.push(
      `CREATE FOREIGN TABLE IF NOT EXISTS ${ident(child.name)} PARTITION OF ${
        ident(parent)
      } ${child.bound} ` +
        `SERVER ${ident(link.server)} OPTIONS (table_name ${literal(remote)});`,
    );
  };
  for (const child of children) await visit(table, child);
  await coordinator.exec(statements.join("\n"));
  await verifyLayout(coordinator, table, leaves);
  return { table, coordinator, leaves };
}

function listBound(values: string[] | "default"): string {
  return values === "default" ? "DEFAULT" : `FOR VALUES IN (${values.map(literal).join(", ")})`;
}

function addPrimaryKeyIfMissing(table: string, columns: string[]): string {
  return `DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = ${
    literal(table)
  }::regclass AND contype = 'p') THEN
      ALTER TABLE ${ident(table)} ADD PRIMARY KEY (${columns.map(ident).join(", ")});
    END IF; END $$;`;
}

async function verifyLayout(coordinator: Node, table: string, leaves: LeafSpec[]): Promise<void> {
  const rows = await coordinator.sql`
    SELECT c.relname AS name, c.relkind AS kind, s.srvname AS server
    FROM pg_partition_tree(${table}::regclass) t
    JOIN pg_class c ON c.oid = t.relid
    LEFT JOIN pg_foreign_table f ON f.ftrelid = t.relid
    LEFT JOIN pg_foreign_server s ON s.oid = f.ftserver
    WHERE t.isleaf`;
  const seen = new Map(rows.map((r) => [r.name as string, r]));
  const problems = leaves.flatMap((leaf) => {
    const row = seen.get(leaf.name);
    if (!row) return [`partition ${leaf.name} is missing`];
    const local = leaf.node === coordinator;
    if (local && row.kind !== "r") return [`${leaf.name} should be a local table`];
    if (!local && (row.kind !== "f" || row.server !== leaf.node.name)) {
      return [
        `${leaf.name} should be a foreign table on server ${leaf.node.name} (is ${row.kind} on ${row.server})`,
      ];
    }
    return [];
  });
  if (problems.length) {
    throw new WorkshopError(
      "FDW_LINK_FAILED",
      `Partition layout of "${table}" does not match: ${problems.join("; ")}`,
      {
        fix:
          `An older "${table}" with another layout exists on ${coordinator.name}; drop it and run again`,
      },
    );
  }
}
