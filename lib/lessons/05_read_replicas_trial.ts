/**
 * The read-your-writes workload of notebook 05: many users reading their
 * profile and now and then writing it and reading it right back, through a
 * router; each read checked against the user's last write. Also its table
 * row and charts. Re-exported by the lesson module (`lesson05`).
 *
 * @module
 */

import { WorkshopError } from "../errors.ts";
import { type Figure, renderPlot, timeMarks } from "../plot.ts";
import { seededRandom } from "../random.ts";
import { currentLsn, waitForReplay } from "../replication.ts";
import type { Router } from "../router.ts";
import { USERS } from "./05_read_replicas.ts";

/** Options for {@link readYourWritesTrial}. */
export interface TrialOptions {
  /** Name shown in tables and charts. @default the router's mode */
  label?: string;
  /** Concurrent users (from {@link USERS}). @default 20 */
  users?: number;
  /** How long the users keep sending requests, in ms. @default 1500 */
  durationMs?: number;
  /** Share of iterations that write (then read right away, as after a form post). @default 0.04 */
  writeShare?: number;
  /** Mean pause between two requests of one user, in ms. @default 40 */
  thinkMs?: number;
  /** Seed of the users' random choices. @default 5 */
  seed?: number;
  /** Actions run at given times during the trial (stop the replica, ...). @default [] */
  schedule?: { atMs: number; label: string; action: () => Promise<void> }[];
}

/** One read of the trial. */
export interface TrialRead {
  /** ms since the trial started. */
  t: number;
  user: string;
  /** The node that served it, or "error". */
  node: string;
  target: "primary" | "replica" | "error";
  /** Version the user last wrote (and was acknowledged) before this read. */
  expected: number;
  /** Version the read returned. */
  got: number;
  /** The read returned older data than the user had written. */
  stale: boolean;
  /** Why the router sent it there. */
  reason: string;
  /** How long the request took, in ms. */
  ms: number;
}

/** What a trial measured. */
export interface TrialResult {
  label: string;
  reads: TrialRead[];
  writes: number;
  /** Errors that reached the "user" (should be none). */
  errors: string[];
  /** When the scheduled actions started (`t`) and finished (`done`), ms since the start. */
  marks: { t: number; done?: number; label: string }[];
}

/** Counts of a trial, one row per trial for tables. */
export interface TrialSummary {
  router: string;
  reads: number;
  writes: number;
  stale_reads: number;
  replica_reads: number;
  replica_share: string;
  errors: number;
}

/**
 * Many users doing what web users do: read their profile, and now and then
 * update it and read it right back (the next request, as after a form
 * post). Each read is checked against the version the user last wrote: an
 * older one is a stale read.
 *
 * @example
 * ```ts
 * const naive = await readYourWritesTrial(naiveRouter, { label: "naive" });
 * summarizeTrial(naive).stale_reads; // > 0 with an apply delay on the replica
 * ```
 */
export async function readYourWritesTrial(
  router: Router,
  options: TrialOptions = {},
): Promise<TrialResult> {
  const users = USERS.slice(0, options.users ?? 20);
  const duration = options.durationMs ?? 1500;
  const writeShare = options.writeShare ?? 0.04;
  const think = options.thinkMs ?? 40;
  const rng = seededRandom(options.seed ?? 5);
  const result: TrialResult = {
    label: options.label ?? `${router.mode} router`,
    reads: [],
    writes: 0,
    errors: [],
    marks: [],
  };
  const versions = new Map<string, number>();
  for (
    const row of await router.primary.sql`
      SELECT user_id, version FROM profile WHERE user_id = ANY(${users})`
  ) {
    versions.set(row.user_id as string, row.version as number);
  }
  const missing = users.filter((u) => !versions.has(u));
  if (missing.length) {
    throw new WorkshopError("INVALID_SETTING", `No profile rows for ${missing.join(", ")}`, {
      fix:
        'Create them first: await db.exec(lesson05.PROFILE_DDL), or lesson05.reset(cluster, "staleness")',
    });
  }
  // Start from a replica that has replayed everything: writes made before
  // the trial (by a router that kept no LSNs) must not count against this one.
  const caughtUp = await currentLsn(router.primary);
  for (const replica of router.replicas) {
    if (!replica.stopped) await waitForReplay(replica, caughtUp, { timeoutMs: 30_000 });
  }
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  const read = async (user: string) => {
    const t = elapsed();
    const expected = versions.get(user)!;
    try {
      const { rows, decision } = await router.request(
        { user, label: "GET /profile" },
        async (db) => {
          const rows = await db.read`SELECT version FROM profile WHERE user_id = ${user}`;
          return { rows, decision: db.decisions.find((d) => d.kind === "read")! };
        },
      );
      const got = rows[0].version as number;
      result.reads.push({
        t,
        user,
        node: decision.node,
        target: decision.target,
        expected,
        got,
        stale: got < expected,
        reason: decision.reason,
        ms: elapsed() - t,
      });
    } catch (error) {
      result.errors.push((error as Error).message);
      result.reads.push({
        t,
        user,
        node: "error",
        target: "error",
        expected,
        got: -1,
        stale: false,
        reason: (error as Error).message,
        ms: elapsed() - t,
      });
    }
  };
  const write = async (user: string) => {
    try {
      const [row] = await router.request(
        { user, label: "POST /profile" },
        (db) =>
          db.write`UPDATE profile SET version = version + 1 WHERE user_id = ${user} RETURNING version`,
      );
      versions.set(user, row.version as number);
      result.writes++;
    } catch (error) {
      result.errors.push((error as Error).message);
    }
  };
  const pause = () => new Promise((resolve) => setTimeout(resolve, think * 2 * rng()));
  const scheduled = (options.schedule ?? []).map(async (item) => {
    await new Promise((resolve) => setTimeout(resolve, item.atMs));
    const mark: TrialResult["marks"][number] = { t: elapsed(), label: item.label };
    result.marks.push(mark);
    await item.action();
    mark.done = elapsed();
  });
  await Promise.all([
    ...users.map(async (user) => {
      await pause();
      while (elapsed() < duration) {
        if (rng() < writeShare) await write(user);
        await read(user);
        await pause();
      }
    }),
    ...scheduled,
  ]);
  result.reads.sort((a, b) => a.t - b.t);
  return result;
}

/**
 * A trial's counts: reads, stale reads, and the share the replica served.
 *
 * @example
 * ```ts
 * await show(table([naive, lsn].map(summarizeTrial)));
 * ```
 */
export function summarizeTrial(result: TrialResult): TrialSummary {
  const replica = result.reads.filter((r) => r.target === "replica").length;
  return {
    router: result.label,
    reads: result.reads.length,
    writes: result.writes,
    stale_reads: result.reads.filter((r) => r.stale).length,
    replica_reads: replica,
    replica_share: `${(100 * replica / Math.max(1, result.reads.length)).toFixed(0)} %`,
    errors: result.errors.length,
  };
}

const OUTCOMES = ["replica, up to date", "replica, STALE", "primary", "error"] as const;
const OUTCOME_COLORS = ["#3182bd", "#d62728", "#9e9e9e", "#000000"];

function outcome(read: TrialRead): typeof OUTCOMES[number] {
  if (read.target === "error") return "error";
  if (read.target === "primary") return "primary";
  return read.stale ? "replica, STALE" : "replica, up to date";
}

/**
 * Trials side by side: one bar per router, split into reads the replica
 * served up to date, stale reads, and reads the primary served.
 *
 * @example
 * ```ts
 * await show(staleReadsPlot([naive, lsn]));
 * ```
 */
export function staleReadsPlot(
  results: readonly TrialResult[],
  options: { title?: string; subtitle?: string } = {},
): Promise<Figure> {
  const rows = results.flatMap((r) =>
    OUTCOMES.map((o) => {
      const n = r.reads.filter((read) => outcome(read) === o).length;
      return { router: r.label, outcome: o, share: (100 * n) / Math.max(1, r.reads.length), n };
    }).filter((row) => row.n > 0)
  );
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle,
    height: 70 + 46 * results.length,
    marginLeft: Math.max(120, 14 + 7 * Math.max(...results.map((r) => r.label.length))),
    marginRight: 40,
    x: { label: "share of reads (%)", domain: [0, 100], grid: true },
    y: { label: null, domain: results.map((r) => r.label) },
    color: { legend: true, domain: [...OUTCOMES], range: OUTCOME_COLORS },
    marks: [
      Plot.barX(
        rows,
        Plot.stackX({ y: "router", x: "share", fill: "outcome", order: [...OUTCOMES], inset: 1 }),
      ),
      Plot.text(
        rows,
        Plot.stackX({
          y: "router",
          x: "share",
          order: [...OUTCOMES],
          z: "outcome",
          text: (d: { n: number; share: number }) => d.share >= 6 ? String(d.n) : "",
          fill: "white",
        }),
      ),
      Plot.ruleX([0]),
    ],
  }));
}

/**
 * Reads per 100 ms over a trial, by who served them, with the scheduled
 * events (replica stopped, back) as rules.
 *
 * @example
 * ```ts
 * await show(servedByTimeline(outage, { title: "The replica stops and comes back" }));
 * ```
 */
export function servedByTimeline(
  result: TrialResult,
  options: { title?: string; subtitle?: string } = {},
): Promise<Figure> {
  const counts = new Map<string, { x1: number; x2: number; outcome: string; reads: number }>();
  for (const read of result.reads) {
    const bucket = Math.floor(read.t / 100);
    const key = `${bucket}|${outcome(read)}`;
    const row = counts.get(key) ??
      { x1: bucket / 10, x2: (bucket + 1) / 10, outcome: outcome(read), reads: 0 };
    row.reads++;
    counts.set(key, row);
  }
  const rows = [...counts.values()];
  const marks = result.marks.map((m) => ({ seconds: m.t / 1000, label: m.label }));
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle,
    height: 300,
    marginTop: 30,
    marginRight: 40,
    x: { label: "time since the users started (s)", grid: true },
    y: { label: "reads per 100 ms", grid: true },
    color: { legend: true, domain: [...OUTCOMES], range: OUTCOME_COLORS },
    marks: [
      Plot.rectY(rows, {
        x1: "x1",
        x2: "x2",
        y: "reads",
        fill: "outcome",
        order: [...OUTCOMES],
        insetLeft: 0.5,
      }),
      ...timeMarks(Plot, marks, -14),
      Plot.ruleY([0]),
    ],
  }));
}
