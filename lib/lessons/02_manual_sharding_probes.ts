/**
 * Probes notebook 02 uses to show what the sharded cluster does: run SQL
 * that may fail and report what PostgreSQL said, list partitions with
 * qualified names, count rows on each node, find customers stored on the
 * wrong node, and start a second postmaster on a running node's data.
 * Re-exported by the lesson module (`lesson02`).
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { WorkshopError } from "../errors.ts";
import { type PartitionRow, partitionTree } from "../inspect.ts";
import type { Node } from "../node.ts";
import { freePort } from "../ports.ts";
import { asUser, pgBinaries, pgRunAs } from "../providers/_pg_binaries.ts";
import { currentRun } from "../_runs.ts";
import { SHARDS } from "./02_manual_sharding.ts";

/** What {@link attempt} saw. */
export interface Attempt {
  /** Node the statement ran on. */
  node: string;
  /** The statement, whitespace condensed. */
  statement: string;
  /** "ok" or "ERROR". */
  outcome: "ok" | "ERROR";
  /** The error (with detail) or the notices the server sent. */
  says: string;
}

/**
 * Runs SQL that may fail on purpose and reports what PostgreSQL said, so a
 * notebook can show refusals as data (and verify them) instead of crashing.
 *
 * @example
 * ```ts
 * const a = await attempt(eu, `ALTER TABLE global.customer ADD PRIMARY KEY (id)`);
 * a.outcome; // "ERROR"
 * ```
 */
export async function attempt(node: Node, sql: string): Promise<Attempt> {
  const statement = sql.replace(/--[^\n]*/g, "").replace(/\s+/g, " ").trim();
  if (node.notices.length > 80) node.notices.splice(0, node.notices.length - 20); // room to see new ones
  const before = node.notices.length;
  try {
    await node.exec(sql);
    const notices = node.notices.slice(before).join("; ");
    return { node: node.name, statement, outcome: "ok", says: notices || "(nothing)" };
  } catch (error) {
    const e = error as { message: string; detail?: string };
    return {
      node: node.name,
      statement,
      outcome: "ERROR",
      says: e.detail ? `${e.message}. ${e.detail}` : e.message,
    };
  }
}

/**
 * Partition rows with schema-qualified names (the lesson's partitions are all called "customer"),
 * root first, then by name.
 *
 * @example
 * ```ts
 * sharedTargets(qualified(await partitionTree(eu, "global.customer")));
 * ```
 */
export function qualified<T extends PartitionRow>(rows: readonly T[]): T[] {
  return rows.map((r) => ({ ...r, partition: `${r.schema}.${r.partition}` }))
    .sort((a, b) => a.level - b.level || a.partition.localeCompare(b.partition));
}

/**
 * Rows of one lesson table stored on each node, counted on the node itself (not through the FDW).
 *
 * @example
 * ```ts
 * await show(table(await storedRows(cluster))); // eu_db: 0, eu_db_2: 12, ...
 * ```
 */
export async function storedRows(
  cluster: Cluster,
  table: "customer" | "purchase" = "customer",
): Promise<{ node: string; region: string; table: string; rows: number }[]> {
  const places = [
    { node: "eu_db", table: `global.${table}_default` },
    ...SHARDS.map((s) => ({ node: s.node, table: `${s.schema}.${table}` })),
  ];
  return await Promise.all(places.map(async (p) => {
    const node = cluster.node(p.node);
    const [schema, name] = p.table.split(".");
    const [{ n }] = await node.sql`SELECT count(*) AS n FROM ${node.sql(schema)}.${node.sql(name)}`;
    return { node: p.node, region: node.region, table: p.table, rows: n as number };
  }));
}

/** A customer stored on a node its country does not belong to. */
export interface MisplacedRow {
  node: string;
  table: string;
  id: string;
  country: string;
  email: string;
  /** Countries the partition in front of this table accepts. */
  accepts: string;
}

/**
 * Customers whose country does not match the partition bound of the foreign
 * partition that leads to their table: rows written around the router.
 * Read on each shard's node directly.
 *
 * @example
 * ```ts
 * (await misplacedCustomers(cluster)).map((m) => m.email); // ["us_in_eu@gmail.com", ...]
 * ```
 */
export async function misplacedCustomers(cluster: Cluster): Promise<MisplacedRow[]> {
  const tree = await partitionTree(cluster.node("eu_db"), "global.customer");
  const result: MisplacedRow[] = [];
  for (const leaf of tree.filter((p) => p.kind === "foreign" && p.node)) {
    const values = [...(leaf.bound ?? "").matchAll(/'([^']*)'/g)].map((m) => m[1]);
    const node = cluster.node(leaf.node!);
    const [schema, name] = leaf.remoteTable!.split(".");
    const rows = await node.sql`
      SELECT id::text, country, email FROM ${node.sql(schema)}.${node.sql(name)}
      WHERE country <> ALL(${values}::text[]) ORDER BY email`;
    for (const r of rows) {
      result.push({
        node: node.name,
        table: leaf.remoteTable!,
        id: r.id as string,
        country: r.country as string,
        email: r.email as string,
        accepts: values.join(", "),
      });
    }
  }
  return result;
}

/** What happened when a second postmaster was started on a running node's data directory. */
export interface SecondPostmaster {
  /** Exit code of the second `postgres` process. */
  exitCode: number;
  /** Whether PostgreSQL refused because of the lock file. */
  refused: boolean;
  /** Its log lines. */
  log: string;
  /** How long it ran, in ms. */
  ms: number;
}

/**
 * Starts a second `postgres` on the data directory of a running node, as the
 * source's copy-pasted `-v eu_db:/var/lib/postgresql/data` would, and
 * returns what PostgreSQL said. It reads `postmaster.pid`, finds the live
 * postmaster and exits before it touches anything; it listens on no address,
 * and if it were still running after 10 s it would be stopped at once.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when the node's data directory is not on this machine.
 * @example
 * ```ts
 * const second = await startSecondPostmaster(eu); // second.refused === true
 * ```
 */
export async function startSecondPostmaster(node: Node): Promise<SecondPostmaster> {
  if (!node.dataDir) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot reach the data directory of "${node.name}" from this machine`,
      { fix: "Run this demonstration with the embedded provider (WORKSHOP_PROVIDER=embedded)" },
    );
  }
  const [bins, user, run] = await Promise.all([pgBinaries(), pgRunAs(), currentRun()]);
  const started = performance.now();
  const child = new Deno.Command(bins.postgres, {
    args: ["-D", node.dataDir, "-c", `port=${await freePort()}`, "-c", "listen_addresses="],
    ...asUser(user),
    env: { LC_ALL: "C" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pidFile = `${run.pidsDir}/second-postmaster-${child.pid}.pid`;
  await Deno.writeTextFile(pidFile, `${child.pid} postgres\n`);
  const timer = setTimeout(() => {
    try {
      child.kill("SIGQUIT");
    } catch { /* already gone */ }
  }, 10_000);
  try {
    const out = await child.output();
    const log = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    return {
      exitCode: out.code,
      refused: !out.success && /lock file "postmaster\.pid" already exists/.test(log),
      log: log.trim().replace(/^\S+ \S+ UTC \[\d+\] /gm, ""),
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
    await Deno.remove(pidFile).catch(() => {});
  }
}
