/**
 * Re-partitioning a live table: copy its rows into a new layout and swap the
 * new table in under the old name, while clients keep using it.
 *
 * Two procedures:
 *
 * | procedure  | what runs                                                        | writes during the move          |
 * |------------|------------------------------------------------------------------|---------------------------------|
 * | `"source"` | `INSERT ... SELECT` (copy), then `BEGIN; DROP; RENAME; COMMIT`    | land in the old table and are LOST |
 * | `"locked"` | one transaction: `LOCK TABLE ... IN EXCLUSIVE MODE`, copy, drop, rename | wait for the lock, then land in the new table |
 *
 * `"source"` is what the workshop source does; `"locked"` is the fix. Its
 * cost is the pause: writes wait for as long as the copy takes (reads go on
 * until the swap itself).
 *
 * A remote rename (the source's "rename customer_new to customer on
 * eu_db_2, then point the foreign table back") cannot share a transaction
 * with the coordinator. Done as the source does it, queries fail in between;
 * `"locked"` fences it behind an `ACCESS EXCLUSIVE` lock on the coordinator's
 * table, so queries routed through the coordinator wait instead.
 *
 * {@link loadReport} says what a workload saw meanwhile: writes acknowledged,
 * failed, blocked, the longest time without a successful write, and the
 * acknowledged writes missing afterwards.
 *
 * @module
 */

import { ident } from "./fdw.ts";
import type { Node } from "./node.ts";
import { percentile, type Workload } from "./workload.ts";

/** How a table is moved into its new layout: see the module table. */
export type SwapProcedure = "source" | "locked";

/** Options for {@link swapTables}. */
export interface SwapOptions {
  /** The live table, e.g. "customer". */
  table: string;
  /** The new table that replaces it, e.g. "customer_partitioned". */
  replacement: string;
  /** How to move: see the module table. */
  procedure: SwapProcedure;
  /**
   * More renames done in the swap transaction after `replacement` took the
   * table's name, e.g. `[["customer_0_new", "customer_0"]]`. @default []
   */
  renames?: [from: string, to: string][];
  /**
   * Awaited between the copy and the swap with the `"source"` procedure: the
   * time a person takes to type the next command. @default nothing
   */
  between?: () => Promise<void>;
}

/** What {@link swapTables} did. */
export interface SwapResult {
  procedure: SwapProcedure;
  /** Rows the copy inserted. */
  copied: number;
  /** ms from the start of the copy to the end of the swap. */
  totalMs: number;
  /** ms in which writes to the table had to wait: the locked transaction, or the swap alone. */
  lockedMs: number;
  /** The SQL text sent, one entry per round of statements. */
  sql: string[];
}

/**
 * Copies `table` into `replacement` and swaps `replacement` in under the
 * table's name.
 *
 * @param coordinator The node that holds both tables.
 * @returns What ran and how long it took.
 * @example
 * ```ts
 * await swapTables(eu1, { table: "customer", replacement: "customer_partitioned", procedure: "locked" });
 * ```
 */
export async function swapTables(coordinator: Node, options: SwapOptions): Promise<SwapResult> {
  const table = ident(options.table);
  const copy = `INSERT INTO ${ident(options.replacement)}\n  SELECT * FROM ${table};`;
  const swap = [
    `DROP TABLE ${table};`,
    `ALTER TABLE ${ident(options.replacement)} RENAME TO ${table};`,
    ...(options.renames ?? []).map(([from, to]) =>
      `ALTER TABLE ${ident(from)} RENAME TO ${ident(to)};`
    ),
  ].join("\n");
  const started = performance.now();
  if (options.procedure === "locked") {
    const sql = `BEGIN;\nLOCK TABLE ${table} IN EXCLUSIVE MODE;\n${copy}\n${swap}\nCOMMIT;`;
    const results = await coordinator.exec(sql);
    const ms = performance.now() - started;
    return {
      procedure: "locked",
      copied: results.find((r) => r.command === "INSERT")?.count ?? 0,
      totalMs: ms,
      lockedMs: ms,
      sql: [sql],
    };
  }
  const [copied] = await coordinator.exec(copy);
  await options.between?.();
  const sql = `BEGIN;\n${swap}\nCOMMIT;`;
  const swapStarted = performance.now();
  await coordinator.exec(sql);
  const end = performance.now();
  return {
    procedure: "source",
    copied: copied.count,
    totalMs: end - started,
    lockedMs: end - swapStarted,
    sql: [copy, sql],
  };
}

/** Options for {@link renameRemote}. */
export interface RemoteRenameOptions {
  /** Node holding the remote table, e.g. eu_db_2. */
  remote: Node;
  /** SQL run on the remote node, e.g. `BEGIN; DROP TABLE customer; ALTER TABLE customer_new RENAME TO customer; COMMIT;`. */
  remoteSql: string;
  /** SQL run on the coordinator next, e.g. `ALTER FOREIGN TABLE customer_1 OPTIONS (SET table_name 'customer');`. */
  coordinatorSql: string;
  /** The coordinator's table whose queries the `"locked"` procedure fences. */
  table: string;
  /** How to run it: the source's two separate commands, or fenced by a lock. */
  procedure: SwapProcedure;
  /** Awaited between the two commands with the `"source"` procedure. @default nothing */
  between?: () => Promise<void>;
}

/**
 * Renames a table on a remote node and points the coordinator's foreign
 * table at the new name. With `"source"` the two run as separate commands
 * (queries fail in between); with `"locked"` the coordinator holds an
 * `ACCESS EXCLUSIVE` lock on `table` throughout, so its queries wait instead.
 *
 * @returns ms from the first command to the last.
 * @example
 * ```ts
 * await renameRemote(eu1, {
 *   remote: eu2, table: "customer", procedure: "locked",
 *   remoteSql: "BEGIN; DROP TABLE customer; ALTER TABLE customer_new RENAME TO customer; COMMIT;",
 *   coordinatorSql: "ALTER FOREIGN TABLE customer_1 OPTIONS (SET table_name 'customer');",
 * });
 * ```
 */
export async function renameRemote(
  coordinator: Node,
  options: RemoteRenameOptions,
): Promise<number> {
  const started = performance.now();
  if (options.procedure === "locked") {
    await coordinator.sql.begin(async (tx) => {
      await tx.unsafe(`LOCK TABLE ${ident(options.table)} IN ACCESS EXCLUSIVE MODE`);
      await options.remote.exec(options.remoteSql);
      await tx.unsafe(options.coordinatorSql);
    });
  } else {
    await options.remote.exec(options.remoteSql);
    await options.between?.();
    await coordinator.exec(options.coordinatorSql);
  }
  return performance.now() - started;
}

/** Options for {@link holdWindow}. */
export interface HoldOptions {
  /** Wait at least this long, in ms. @default 500 */
  minMs?: number;
  /** Then also wait until this holds (checked every 10 ms). @default nothing */
  until?: () => boolean;
  /** Stop waiting after this long in any case, in ms. @default 5000 */
  maxMs?: number;
}

/**
 * Waits like a person typing the next command: at least `minMs`, and until
 * `until()` holds (bounded by `maxMs`). Returns how long it waited, in ms.
 *
 * @example
 * ```ts
 * const before = load.samples.length;
 * await holdWindow({ minMs: 500, until: () => load.samples.slice(before).some((s) => !s.ok) });
 * ```
 */
export async function holdWindow(options: HoldOptions = {}): Promise<number> {
  const started = performance.now();
  const minMs = options.minMs ?? 500;
  const maxMs = Math.max(minMs, options.maxMs ?? 5000);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(minMs);
  while (options.until && !options.until() && performance.now() - started < maxMs) await sleep(10);
  return performance.now() - started;
}

/** Options for {@link loadReport}. */
export interface LoadReportOptions {
  /** Name of the workload's write operation. @default "insert" */
  writeOp?: string;
  /** Table the acknowledged writes must be in afterwards. @default "customer" */
  table?: string;
  /**
   * A write counts as blocked when it took longer than this, in ms.
   * @default 10 × the median write, at least 20 ms
   */
  blockedMs?: number;
  /** Node to look for the acknowledged writes on. @default the workload's node */
  reader?: Node;
}

/** What a workload saw while a table was moved (see {@link loadReport}). */
export interface LoadReport {
  /** Writes attempted. */
  writes: number;
  /** Writes the server acknowledged. */
  acknowledged: number;
  /** Writes that failed with an error. */
  failedWrites: number;
  /** Reads (every other operation) that failed with an error. */
  failedReads: number;
  /** Writes slower than the blocked threshold. */
  blockedWrites: number;
  /** The threshold used, in ms. */
  blockedThresholdMs: number;
  /** The slowest successful write, in ms: how long a write had to wait. */
  slowestWriteMs: number;
  /** The longest time in which no write succeeded, in ms. */
  longestGapMs: number;
  /** Acknowledged writes missing from the table now. */
  lost: string[];
  /** Error messages with how often each occurred. */
  errors: { error: string; count: number }[];
}

/**
 * Summarises what a (stopped) workload saw: writes acknowledged, failed and
 * blocked, the longest window without a successful write, and which
 * acknowledged writes are missing from the table now.
 *
 * @example
 * ```ts
 * await load.stop();
 * const report = await loadReport(load);
 * await show(verify("acknowledged writes lost", report.lost.length, 0));
 * ```
 */
export async function loadReport(
  load: Workload,
  options: LoadReportOptions = {},
): Promise<LoadReport> {
  const writeOp = options.writeOp ?? "insert";
  const writes = load.samples.filter((s) => s.op === writeOp);
  const reads = load.samples.filter((s) => s.op !== writeOp);
  const okMs = writes.filter((s) => s.ok).map((s) => s.ms).sort((a, b) => a - b);
  const threshold = options.blockedMs ?? Math.max(20, 10 * (percentile(okMs, 50) || 0));
  const errors = new Map<string, number>();
  for (const s of load.samples) {
    if (!s.ok) errors.set(s.error ?? "error", (errors.get(s.error ?? "error") ?? 0) + 1);
  }
  return {
    writes: writes.length,
    acknowledged: load.acknowledged.length,
    failedWrites: writes.filter((s) => !s.ok).length,
    failedReads: reads.filter((s) => !s.ok).length,
    blockedWrites: writes.filter((s) => s.ok && s.ms > threshold).length,
    blockedThresholdMs: threshold,
    slowestWriteMs: okMs.at(-1) ?? 0,
    longestGapMs: load.longestGap(writeOp),
    lost: await load.lostWrites(options.table ?? "customer", options.reader ?? load.node),
    errors: [...errors].map(([error, count]) => ({ error, count })).sort((a, b) =>
      b.count - a.count
    ),
  };
}
