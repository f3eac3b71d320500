/**
 * Queries over the residency model and what they cost: the source's
 * hierarchy query and its region-filtered variants, the partitions an
 * executed plan read, timed runs with the foreign servers they contacted,
 * statements that may fail, and SQL listings for notebooks. Part of the
 * residency module (see residency.ts, which re-exports the public names).
 *
 * @module
 */

import { type Displayable, markdown } from "./display.ts";
import { WorkshopError } from "./errors.ts";
import { literal } from "./fdw.ts";
import type { Node, Sql } from "./node.ts";
import { percentile } from "./workload.ts";
import { assertHome, type Home } from "./_residency_layout.ts";

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
      ms: percentile(sorted, 50),
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
