/**
 * Lesson 05, read replicas without stale reads: section resets, the
 * notebook's read-your-writes workload and charts, the LSN comparisons of
 * the bugs section, and the exercises.
 *
 * The cluster: `db` (the primary, London) and `replica` (a streaming hot
 * standby of `db` through the physical slot `replica`), as the source's
 * docker-compose services are named, plus a Redis service holding each
 * user's last-write LSN.
 *
 * ```ts
 * import { lesson05 } from "../lib/mod.ts";
 * const { db, replica } = await lesson05.reset(cluster, "staleness");
 * ```
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { WorkshopError } from "../errors.ts";
import { type CheckResult, defineExercise } from "../exercises.ts";
import type { Node } from "../node.ts";
import { type Figure, renderPlot } from "../plot.ts";
import { seededRandom } from "../random.ts";
import { type RedisService, startRedis } from "../redis.ts";
import {
  addReplica,
  currentLsn,
  lsnToBigInt,
  removeReplica,
  setApplyDelay,
  waitForReplay,
} from "../replication.ts";
import { createRouter, lsnCache, type RouteDecision, type Router } from "../router.ts";

/** Notebook this module belongs to. */
export const NOTEBOOK = "05_read_replicas";

/** The notebook's sections, in order; {@link reset} reaches the state at the start of each. */
export const SECTIONS = [
  "replica",
  "wal",
  "one-request",
  "across-requests",
  "staleness",
  "bugs",
  "replica-down",
  "exercises",
] as const;

/** A section of the notebook, see {@link SECTIONS}. */
export type Section = typeof SECTIONS[number];

/** The lesson's nodes, named like the source's docker-compose services. */
export const NODES = {
  db: { name: "db", region: "eu-west-2", role: "primary" },
  replica: { name: "replica", region: "eu-west-2", role: "replica" },
} as const;

/** Replication slot of the replica (the source's name). */
export const SLOT = "replica";

/** The apply delay the staleness sections use, in ms. */
export const APPLY_DELAY_MS = 1000;

/** The table of the source's Django model `Thing` (app `app`). */
export const APP_THING_DDL = `
  CREATE TABLE IF NOT EXISTS app_thing (
    id serial PRIMARY KEY,
    color varchar(100) NOT NULL
  );`;

/** Users of the read-your-writes workload. */
export const USERS = Array.from({ length: 20 }, (_, i) => `user_${String(i + 1).padStart(2, "0")}`);

/** Each user's profile; `version` goes up by one with every write. */
export const PROFILE_DDL = `
  CREATE TABLE IF NOT EXISTS profile (
    user_id text PRIMARY KEY,
    version int NOT NULL DEFAULT 0
  );
  INSERT INTO profile (user_id)
    SELECT 'user_' || lpad(i::text, 2, '0') FROM generate_series(1, ${USERS.length}) i
    UNION ALL SELECT name FROM unnest(ARRAY['alice', 'bob', 'carol']) name
  ON CONFLICT DO NOTHING;`;

/** What {@link reset} hands back. */
export interface LessonState {
  db: Node;
  /** The replica, from section "wal" on. */
  replica?: Node;
  /** Redis, from section "across-requests" on. */
  redis?: RedisService;
  /** Id of a thing in `app_thing` (the one section 3 made), from section "across-requests" on. */
  pk?: number;
}

const ORDER: Record<Section, number> = Object.fromEntries(SECTIONS.map((s, i) => [s, i])) as Record<
  Section,
  number
>;

/**
 * Brings a cluster (fresh, or broken by a learner) to the state at the start
 * of a section: the primary `db`; from "wal" on, the streaming `replica`
 * and the source's `app_thing` table; from "across-requests" on, Redis;
 * from "staleness" on, the `profile` table. The apply delay is 1 s in
 * "staleness" and "bugs", else 0. Returns the handles the notebook's cells
 * use, so that a learner can re-bind them after a reset.
 *
 * @example
 * ```ts
 * const { replica, pk } = await lesson05.reset(cluster, "across-requests");
 * ```
 */
export async function reset(cluster: Cluster, section: Section): Promise<LessonState> {
  const stage = ORDER[section];
  if (stage === undefined) {
    throw new WorkshopError("INVALID_SETTING", `Unknown section "${section}" of notebook 05`, {
      fix: `Use one of: ${SECTIONS.join(", ")}`,
    });
  }
  for (const node of cluster.nodes) {
    if (!(node.name in NODES)) await cluster.removeNode(node.name);
  }
  let db = cluster.has("db") ? cluster.node("db") : undefined;
  if (db && db.role !== "primary") {
    await cluster.removeNode("db");
    db = undefined;
  }
  // The bugs section walks the WAL up to the next place where the LSN text
  // grows a digit; from 0/10000000 on that is 4 GiB away, so start over there.
  if (db && section === "bugs" && !db.stopped) {
    const [{ far }] = await db.sql`SELECT pg_current_wal_lsn() >= '0/10000000'::pg_lsn AS far`;
    if (far) {
      if (cluster.has("replica")) await removeReplica(cluster, "replica");
      await cluster.removeNode("db");
      db = undefined;
    }
  }
  db ??= await cluster.addNode(NODES.db);
  if (db.stopped) await db.restart();

  if (stage === 0) {
    if (cluster.has("replica")) await removeReplica(cluster, "replica");
    await db.sql`
      SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`;
    await db.exec(`DROP TABLE IF EXISTS app_thing, profile, wal_filler, burst CASCADE;
      DROP FUNCTION IF EXISTS lsn_at_least(text, text), wait_for_replay(pg_lsn, integer);`);
    for (const service of cluster.services) await cluster.removeService(service.name);
    return { db };
  }

  const replica = await ensureReplica(cluster, db);
  await db.exec(APP_THING_DDL);
  if (stage < ORDER["across-requests"]) {
    for (const service of cluster.services) await cluster.removeService(service.name);
  }
  const redis = stage >= ORDER["across-requests"] ? await startRedis(cluster) : undefined;
  let pk: number | undefined;
  if (stage >= ORDER["across-requests"]) {
    await db.exec(
      `INSERT INTO app_thing (color) SELECT 'blue' WHERE NOT EXISTS (SELECT 1 FROM app_thing)`,
    );
    const [row] = await db.sql`SELECT max(id)::int AS pk FROM app_thing`;
    pk = row.pk as number;
  }
  if (stage >= ORDER.staleness) await db.exec(PROFILE_DDL);
  if (stage >= ORDER.exercises) await db.exec(LSN_AT_LEAST_BUGGY);
  const delay = section === "staleness" || section === "bugs" ? APPLY_DELAY_MS : 0;
  // Everything so far visible on the replica, then the section's delay.
  await setApplyDelay(replica, 0);
  await waitForReplay(replica, await currentLsn(db));
  if (delay > 0) await setApplyDelay(replica, delay);
  return { db, replica, redis, pk };
}

async function ensureReplica(cluster: Cluster, db: Node): Promise<Node> {
  if (cluster.has("replica")) {
    const replica = cluster.node("replica");
    if (replica.stopped) await replica.restart();
    const [row] = await replica.sql`SELECT status FROM pg_stat_wal_receiver`.catch(() => []);
    if (replica.role === "replica" && row?.status === "streaming") return replica;
    if (!(await waitStreaming(replica))) await removeReplica(cluster, "replica");
    else return replica;
  }
  return await addReplica(cluster, { name: "replica", primary: db, slot: SLOT });
}

async function waitStreaming(replica: Node): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    const [row] = await replica.sql`SELECT status FROM pg_stat_wal_receiver`.catch(() => []);
    if (row?.status === "streaming") return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

/**
 * A router log for tables: runs of the same statement kind on the same node
 * with the same reason (a router polling the replica while it waits) become
 * one row with a count.
 *
 * @example
 * ```ts
 * await show(table(lesson05.compactLog(router.log)));
 * ```
 */
export function compactLog(decisions: readonly RouteDecision[]): Record<string, unknown>[] {
  const rows: (Record<string, unknown> & { times: number })[] = [];
  for (const d of decisions) {
    const last = rows.at(-1);
    if (
      last && last.request === d.label && last.user === d.user && last.kind === d.kind &&
      last.node === d.node && last.reason === d.reason
    ) {
      last.times++;
      continue;
    }
    rows.push({
      request: d.label,
      user: d.user,
      kind: d.kind,
      node: d.node,
      reason: d.reason,
      times: 1,
    });
  }
  return rows.map(({ times, ...row }) => ({
    ...row,
    kind: times > 1 ? `${row.kind} ×${times}` : row.kind,
  }));
}

// ---------------------------------------------------------------------------
// The read-your-writes workload

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
    marginLeft: 190,
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
      Plot.ruleX(marks, { x: "seconds", stroke: "#333", strokeDasharray: "4,3" }),
      Plot.text(marks, {
        x: "seconds",
        text: "label",
        frameAnchor: "top",
        textAnchor: "start",
        dx: 3,
        dy: -14,
      }),
      Plot.ruleY([0]),
    ],
  }));
}

// ---------------------------------------------------------------------------
// Comparing LSNs, right and wrong

/** Ways an application might compare two LSN strings ("is a >= b?"). */
export const LSN_COMPARISONS = {
  /** Compares the text: wrong as soon as the two have different lengths. */
  "as strings": (a: string, b: string) => a >= b,
  /** Splits the halves but parses them with parseInt without a radix: "9A000000" becomes 9. */
  "halves via parseInt(x)": (a: string, b: string) => {
    const [ah, al] = a.split("/").map((x) => parseInt(x));
    const [bh, bl] = b.split("/").map((x) => parseInt(x));
    return ah > bh || (ah === bh && al >= bl);
  },
  /** Joins the halves with 32-bit operators: `<< 32` shifts by 0 and `|` wraps to a negative int32. */
  "(hi << 32) | lo": (a: string, b: string) => {
    const join = (lsn: string) => {
      const [hi, lo] = lsn.split("/").map((x) => parseInt(x, 16));
      return (hi << 32) | lo;
    };
    return join(a) >= join(b);
  },
  /** Right: 64-bit positions as BigInt. */
  "BigInt (right)": (a: string, b: string) => lsnToBigInt(a) >= lsnToBigInt(b),
} as const;

/** Pairs (replica LSN, user's last write) that trip one comparison or another. */
export const LSN_PAIRS: readonly [string, string][] = [
  ["0/9A000000", "0/10000000"],
  ["0/FFFFFF", "0/1000000"],
  ["0/9A00000", "0/10000000"],
  ["0/19FFF00", "0/1A00010"],
  ["9/0", "10/0"],
  ["1/0", "0/FFFFFFFF"],
  ["0/16B3748", "0/16B3748"],
];

/**
 * Each pair compared by PostgreSQL (`a::pg_lsn >= b::pg_lsn`, the truth) and
 * by each of {@link LSN_COMPARISONS}; wrong answers are marked ✘, and those
 * that would serve a stale read say so.
 *
 * @example
 * ```ts
 * await show(table(await compareLsnTable(db)));
 * ```
 */
export async function compareLsnTable(
  node: Node,
  pairs: readonly [string, string][] = LSN_PAIRS,
): Promise<Record<string, string>[]> {
  const truth = await node.sql`
    SELECT a, b, a::pg_lsn >= b::pg_lsn AS fresh
    FROM unnest(${pairs.map((p) => p[0])}::text[], ${pairs.map((p) => p[1])}::text[]) AS t(a, b)`;
  return truth.map((row) => {
    const a = row.a as string;
    const b = row.b as string;
    const fresh = row.fresh as boolean;
    const cells: Record<string, string> = {
      "replica LSN": a,
      "user's last write": b,
      "pg_lsn >= (truth)": String(fresh),
    };
    for (const [name, compare] of Object.entries(LSN_COMPARISONS)) {
      const answer = compare(a, b);
      cells[name] = answer === fresh ? String(answer) : `${answer} ✘${answer ? " stale read" : ""}`;
    }
    return cells;
  });
}

/** What {@link approachLengthBoundary} did. */
export interface BoundaryApproach {
  /** WAL position before. */
  from: string;
  /** WAL position after (in the last segment below the boundary). */
  to: string;
  /** Where the LSN text grows a digit. */
  boundary: string;
  /** WAL segments closed with pg_switch_wal(). */
  switches: number;
}

/**
 * Fast-forwards the primary's WAL to the last segment before the next
 * position where the LSN's low half gains a hex digit (0/1000000 at
 * 16 MiB, 0/10000000 at 256 MiB), by closing segments with
 * `pg_switch_wal()`, and waits until the replica replayed it. A busy server
 * crosses these positions by itself; this makes it happen now.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when the next such position is
 *   more than 300 MiB of WAL away (start over with `reset(cluster, "bugs")`).
 * @example
 * ```ts
 * const step = await approachLengthBoundary(db, replica); // { from: "0/9A1B20", to: "0/F00060", boundary: "0/1000000", ... }
 * ```
 */
export async function approachLengthBoundary(
  primary: Node,
  replica: Node,
): Promise<BoundaryApproach> {
  const from = await currentLsn(primary);
  const [{ seg }] = await primary
    .sql`SELECT setting::bigint AS seg FROM pg_settings WHERE name = 'wal_segment_size'`;
  const position = lsnToBigInt(from);
  const hi = position >> 32n;
  const lo = position & 0xFFFFFFFFn;
  let boundaryLo = 0x100000n;
  while (boundaryLo <= lo) boundaryLo *= 16n;
  const boundary = (hi << 32n) + boundaryLo;
  if (boundaryLo > 0xFFFFFFFFn || boundary - position > 300n * 1024n * 1024n) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `The WAL position ${from} is too far from the next place where the LSN text grows a digit`,
      { fix: 'Start over with a fresh pair: await lesson05.reset(cluster, "bugs")' },
    );
  }
  const target = boundary - BigInt(seg as number);
  const [{ delay }] = await replica.sql`
    SELECT setting::int AS delay FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
  if (delay !== 0) await setApplyDelay(replica, 0);
  await primary.exec(`CREATE TABLE IF NOT EXISTS wal_filler (at timestamptz DEFAULT now())`);
  let closed = 0;
  while (lsnToBigInt(await currentLsn(primary)) < target) {
    await primary.sql`
      WITH w AS (INSERT INTO wal_filler DEFAULT VALUES RETURNING 1)
      SELECT pg_switch_wal() FROM w`;
    closed++;
  }
  const to = await currentLsn(primary);
  await waitForReplay(replica, to);
  if (delay !== 0) await setApplyDelay(replica, delay as number);
  return {
    from,
    to,
    boundary: `${(boundary >> 32n).toString(16).toUpperCase()}/${
      (boundary & 0xFFFFFFFFn).toString(16).toUpperCase()
    }`,
    switches: closed,
  };
}

// ---------------------------------------------------------------------------
// Exercises

/** The app's LSN comparison as it might ship: halves compared as text. */
export const LSN_AT_LEAST_BUGGY = `
  CREATE OR REPLACE FUNCTION lsn_at_least(replica_lsn text, stored_lsn text)
  RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT split_part(replica_lsn, '/', 1) > split_part(stored_lsn, '/', 1)
        OR (split_part(replica_lsn, '/', 1) = split_part(stored_lsn, '/', 1)
            AND split_part(replica_lsn, '/', 2) >= split_part(stored_lsn, '/', 2))
  $$;`;

const LSN_AT_LEAST_FIXED = `
  CREATE OR REPLACE FUNCTION lsn_at_least(replica_lsn text, stored_lsn text)
  RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT replica_lsn::pg_lsn >= stored_lsn::pg_lsn
  $$;`;

/** Pads the low half only: still wrong when the high halves differ in length. */
const LSN_AT_LEAST_HALF_FIXED = `
  CREATE OR REPLACE FUNCTION lsn_at_least(replica_lsn text, stored_lsn text)
  RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT split_part(replica_lsn, '/', 1) > split_part(stored_lsn, '/', 1)
        OR (split_part(replica_lsn, '/', 1) = split_part(stored_lsn, '/', 1)
            AND lpad(split_part(replica_lsn, '/', 2), 8, '0') >= lpad(split_part(stored_lsn, '/', 2), 8, '0'))
  $$;`;

/** Pairs the lsn_at_least check runs, both ways round. */
const CHECK_PAIRS: [string, string][] = [
  ...LSN_PAIRS,
  ["0/F4A0B8", "0/1000120"],
  ["A/0", "9/FFFFFFFF"],
  ["FF/1", "100/0"],
  ["0/0", "0/0"],
  ["2/10", "2/F"],
];

/** Exercise 3: fix `lsn_at_least(text, text)`, an LSN comparison that compares text. */
export const lsnCompare = defineExercise({
  id: "05.lsn_compare",
  notebook: NOTEBOOK,
  title: "Fix the LSN comparison",
  prompt:
    "The app decides whether the replica is fresh enough with `lsn_at_least(replica_lsn text, " +
    "stored_lsn text)` on `db` (it replicates to `replica`). It looks careful, high half first, then " +
    "the low half, and it still serves stale reads. Find the bug and replace the function " +
    "(`CREATE OR REPLACE FUNCTION`, same name and arguments) so that it agrees with PostgreSQL on every pair.",
  hints: [
    "Try `SELECT lsn_at_least('0/FFFFFF', '0/1000000')`: which of the two positions is later?",
    "`split_part` returns text, and text compares character by character: 'F' > '1' whatever the length.",
    "PostgreSQL has a type for this: `replica_lsn::pg_lsn >= stored_lsn::pg_lsn`.",
  ],
  solution: `await db.exec(\`${LSN_AT_LEAST_FIXED}\`);`,
  setup: (cluster) => reset(cluster, "exercises").then(() => {}),
  async check(cluster): Promise<CheckResult> {
    const db = cluster.node("db");
    const [fn] = await db.sql`
      SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure('lsn_at_least(text, text)')`;
    if (!fn) {
      return {
        status: "wrong",
        message:
          "there is no function lsn_at_least(text, text) on db; create it with the same arguments",
      };
    }
    const buggyBody = /AS \$\$([\s\S]*)\$\$/.exec(LSN_AT_LEAST_BUGGY)![1];
    if (squash(fn.prosrc as string) === squash(buggyBody)) {
      return {
        status: "not-attempted",
        message: "lsn_at_least still has the body the app shipped",
      };
    }
    const pairs = CHECK_PAIRS.flatMap(([a, b]) => [[a, b], [b, a]]);
    for (const [a, b] of pairs) {
      let rows;
      try {
        rows = await db.sql`
          SELECT lsn_at_least(${a}, ${b}) AS answer, ${a}::pg_lsn >= ${b}::pg_lsn AS truth`;
      } catch (error) {
        return {
          status: "wrong",
          message: `lsn_at_least('${a}', '${b}') raised an error: ${(error as Error).message}`,
        };
      }
      const { answer, truth } = rows[0];
      if (answer !== truth) {
        return {
          status: "wrong",
          message: `lsn_at_least('${a}', '${b}') returns ${answer}, but ${a} is ${
            truth ? "at or after" : "before"
          } ${b}${answer ? ": the app would read a stale replica" : ""}`,
        };
      }
    }
    return {
      status: "correct",
      message:
        `lsn_at_least agrees with pg_lsn on all ${pairs.length} pairs, including different lengths`,
    };
  },
  async solve(cluster) {
    await cluster.node("db").exec(LSN_AT_LEAST_FIXED);
  },
  async attemptWrong(cluster) {
    await cluster.node("db").exec(LSN_AT_LEAST_HALF_FIXED);
  },
});

const WAIT_FOR_REPLAY_SOLUTION = `
  CREATE OR REPLACE FUNCTION wait_for_replay(target pg_lsn, timeout_ms int)
  RETURNS boolean LANGUAGE plpgsql AS $$
  DECLARE
    deadline timestamptz := clock_timestamp() + timeout_ms * interval '1 millisecond';
  BEGIN
    LOOP
      IF pg_last_wal_replay_lsn() >= target THEN RETURN true; END IF;
      IF clock_timestamp() >= deadline THEN RETURN false; END IF;
      PERFORM pg_sleep(0.005);
    END LOOP;
  END $$;`;

/** Waits on the receive LSN: returns before the data is visible. */
const WAIT_FOR_RECEIVE_WRONG = WAIT_FOR_REPLAY_SOLUTION.replace(
  "pg_last_wal_replay_lsn()",
  "pg_last_wal_receive_lsn()",
);

/** Exercise 1: `wait_for_replay(pg_lsn, int)`, waiting for the replica on the replica. */
export const waitForReplayExercise = defineExercise({
  id: "05.wait_for_replay",
  notebook: NOTEBOOK,
  title: "Wait for the replica in one round trip",
  prompt:
    "Instead of falling back to the primary, a router can wait a little for the replica. Polling from " +
    "the app costs a round trip per try; do it on the replica instead. Create on `db` (it replicates) " +
    "`wait_for_replay(target pg_lsn, timeout_ms int) RETURNS boolean`: on the replica it returns true " +
    "as soon as the replica has replayed up to `target` (so the user's write is visible), and false " +
    "once `timeout_ms` have passed.",
  hints: [
    "A PL/pgSQL LOOP with `PERFORM pg_sleep(0.005)` between tries; `clock_timestamp()` moves during a " +
    "statement, `now()` does not.",
    "Visible means replayed: compare `pg_last_wal_replay_lsn()`, not the receive LSN.",
  ],
  solution: `await db.exec(\`${WAIT_FOR_REPLAY_SOLUTION}\`);`,
  setup: (cluster) => reset(cluster, "exercises").then(() => {}),
  async check(cluster): Promise<CheckResult> {
    const db = cluster.node("db");
    const [fn] = await db
      .sql`SELECT to_regprocedure('wait_for_replay(pg_lsn, integer)') IS NOT NULL AS ok`;
    if (!fn.ok) {
      return {
        status: "not-attempted",
        message: "there is no function wait_for_replay(pg_lsn, integer) on db yet",
      };
    }
    const replica = cluster.node("replica");
    await waitForReplay(replica, await currentLsn(db));
    const [{ delay }] = await replica.sql`
      SELECT setting::int AS delay FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
    await db.exec(`CREATE TABLE IF NOT EXISTS wait_probe (id serial PRIMARY KEY, note text)`);
    await waitForReplay(replica, await currentLsn(db));
    try {
      // 1. The replica is 300 ms behind and the function may wait 5 s: it must
      //    return true, and the row must be visible right after.
      await setApplyDelay(replica, 300);
      const [w1] = await db.sql`INSERT INTO wait_probe (note) VALUES ('first') RETURNING id`;
      const lsn1 = await currentLsn(db);
      const [r1] = await withTimeout(
        replica,
        4000,
        (sql) => sql`SELECT wait_for_replay(${lsn1}::pg_lsn, 5000) AS ok`,
      );
      if (r1 === "timeout") {
        return {
          status: "wrong",
          message:
            "wait_for_replay(lsn, 5000) did not return within 4 s although the replica was only 300 ms behind",
        };
      }
      if (r1.ok !== true) {
        return {
          status: "wrong",
          message:
            `wait_for_replay returned ${r1.ok} for a write the replica replays after 300 ms (timeout 5000 ms)`,
        };
      }
      const [seen] = await replica.sql`SELECT count(*)::int AS n FROM wait_probe WHERE id = ${w1
        .id as number}`;
      if (seen.n !== 1) {
        return {
          status: "wrong",
          message:
            "wait_for_replay returned true, but the row written was not visible on the replica yet: " +
            "is it comparing the receive LSN instead of the replay LSN?",
        };
      }
      // 2. The replica is 3 s behind and the function may wait 100 ms: it must give up and return false.
      await setApplyDelay(replica, 3000);
      await db.sql`INSERT INTO wait_probe (note) VALUES ('second')`;
      const lsn2 = await currentLsn(db);
      const [r2] = await withTimeout(
        replica,
        1500,
        (sql) => sql`SELECT wait_for_replay(${lsn2}::pg_lsn, 100) AS ok`,
      );
      if (r2 === "timeout") {
        return {
          status: "wrong",
          message:
            "wait_for_replay(lsn, 100) was still waiting after 1.5 s: stop once timeout_ms have passed",
        };
      }
      if (r2.ok !== false) {
        return {
          status: "wrong",
          message:
            `wait_for_replay(lsn, 100) returned ${r2.ok} while the replica was 3 s behind; it should return false`,
        };
      }
      return {
        status: "correct",
        message:
          "wait_for_replay waited for a 300 ms lag (the write was visible after it) and gave up after 100 ms on a 3 s lag",
      };
    } finally {
      await setApplyDelay(replica, delay as number);
      if (delay === 0) {
        await waitForReplay(replica, await currentLsn(db), { timeoutMs: 15_000 }).catch(() => {});
      }
    }
  },
  async solve(cluster) {
    await cluster.node("db").exec(WAIT_FOR_REPLAY_SOLUTION);
  },
  async attemptWrong(cluster) {
    await cluster.node("db").exec(WAIT_FOR_RECEIVE_WRONG);
  },
});

/** Runs one statement on a fresh connection to `node` with a statement timeout; "timeout" if it hits. */
async function withTimeout(
  node: Node,
  ms: number,
  run: (sql: Node["sql"]) => Promise<Record<string, unknown>[]>,
): Promise<[Record<string, unknown>] | ["timeout"]> {
  const sql = await node.client({ applicationName: "pgsw-exercise-check" });
  try {
    await sql`SELECT set_config('statement_timeout', ${String(ms)}, false)`;
    const rows = await run(sql);
    return [rows[0]];
  } catch (error) {
    if ((error as { code?: string }).code === "57014") return ["timeout"];
    throw error;
  } finally {
    await node.closeClient(sql);
  }
}

/** Exercise 2: a second replica in us-east-1, and reads from the first fresh replica. */
export const secondReplica = defineExercise({
  id: "05.second_replica",
  notebook: NOTEBOOK,
  title: "A second replica, and reads from the freshest",
  prompt:
    "Add a second replica `us_replica` in N. Virginia (`us-east-1`) that streams from `db` through its " +
    "own slot, with no apply delay. Then give a router both replicas (`replicas: [replica, usReplica]`): " +
    "while `replica` lags, a user who just wrote reads from `us_replica` instead of the primary.",
  hints: [
    '`addReplica(cluster, { name: "us_replica", primary: db, region: "us-east-1" })` makes the slot, ' +
    "the base copy and the settings; across regions it streams through the simulated latency.",
    "A router checks the replicas in the order given and uses the first that has replayed past the " +
    "user's last write: `createRouter({ primary: db, replicas: [replica, usReplica], cache })`.",
  ],
  solution:
    `const usReplica = await addReplica(cluster, { name: "us_replica", primary: db, region: "us-east-1" });
await setApplyDelay(replica, 1000);
const both = createRouter({ primary: db, replicas: [replica, usReplica], cache });
await both.request({ user: "alice" }, (q) => q.write\`UPDATE profile SET version = version + 1 WHERE user_id = 'alice'\`);
await both.request({ user: "alice" }, (q) => q.read\`SELECT version FROM profile WHERE user_id = 'alice'\`);
await show(table(both.log.slice(-2), { columns: ["kind", "node", "reason"] }));
await both.close();`,
  setup: (cluster) => reset(cluster, "exercises").then(() => {}),
  async check(cluster): Promise<CheckResult> {
    if (!cluster.has("us_replica")) {
      return { status: "not-attempted", message: "there is no node us_replica in the cluster yet" };
    }
    const us = cluster.node("us_replica");
    const db = cluster.node("db");
    if (us.role !== "replica") {
      return {
        status: "wrong",
        message: `us_replica is a ${us.role} node, not a replica: make it with addReplica()`,
      };
    }
    if (us.region !== "us-east-1") {
      return {
        status: "wrong",
        message: `us_replica is in ${us.region}; the task puts it in us-east-1 (N. Virginia)`,
      };
    }
    const [standby] = await us.sql`
      SELECT pg_is_in_recovery() AS recovering, s.status, s.slot_name,
             current_setting('recovery_min_apply_delay') AS delay
      FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver s ON true`;
    if (!standby.recovering || standby.status !== "streaming") {
      return {
        status: "wrong",
        message: "us_replica is not a streaming standby (pg_stat_wal_receiver shows no streaming)",
      };
    }
    const [slot] = await db.sql`
      SELECT active FROM pg_replication_slots WHERE slot_name = ${standby.slot_name as string}`;
    if (!standby.slot_name || !slot?.active) {
      return {
        status: "wrong",
        message: "us_replica streams without an active replication slot of its own on db",
      };
    }
    if (standby.delay !== "0") {
      return {
        status: "wrong",
        message: `us_replica has recovery_min_apply_delay = ${standby.delay}; the task wants none`,
      };
    }
    const replica = cluster.node("replica");
    const [{ delay }] = await replica.sql`
      SELECT setting::int AS delay FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
    const redis = await startRedis(cluster);
    const cache = await lsnCache(redis, { prefix: "check-lsn:" });
    const router = createRouter({ primary: db, replicas: [replica, us], cache, waitMs: 3000 });
    try {
      await setApplyDelay(replica, 2000);
      await router.request({ user: "exercise" }, (q) =>
        q.write`
        INSERT INTO app_thing (color) VALUES ('exercise-probe')`);
      const served = await router.request({ user: "exercise" }, async (q) => {
        await q.read`SELECT count(*) FROM app_thing WHERE color = 'exercise-probe'`;
        return q.decisions.find((d) => d.kind === "read")!;
      });
      if (served.node !== "us_replica") {
        return {
          status: "wrong",
          message:
            `a user who just wrote read from ${served.node} (${served.reason}); with replica lagging 2 s, us_replica should serve it`,
        };
      }
      return {
        status: "correct",
        message:
          `us_replica streams from db through slot ${standby.slot_name} and served a read right after a write (${served.reason})`,
      };
    } finally {
      await router.close();
      await cache.clear();
      await db.exec(`DELETE FROM app_thing WHERE color = 'exercise-probe'`);
      await setApplyDelay(replica, delay as number);
    }
  },
  async solve(cluster) {
    await addReplica(cluster, { name: "us_replica", primary: "db", region: "us-east-1" });
  },
  async attemptWrong(cluster) {
    await addReplica(cluster, { name: "us_replica", primary: "db", region: "eu-west-2" });
  },
});

function squash(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}
