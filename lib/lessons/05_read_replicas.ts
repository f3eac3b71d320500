/**
 * Lesson 05, read replicas without stale reads: the lesson's facts,
 * `reset()`, and the router-log table. The read-your-writes workload and
 * its charts are in 05_read_replicas_trial.ts, the LSN comparisons of the
 * bugs section in 05_read_replicas_lsn.ts, the exercises in
 * 05_read_replicas_exercises.ts; this module re-exports them, so `lesson05`
 * in mod.ts has them all.
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
import type { Node } from "../node.ts";
import { type RedisService, startRedis } from "../redis.ts";
import {
  addReplica,
  currentLsn,
  removeReplica,
  setApplyDelay,
  waitForReplay,
} from "../replication.ts";
import type { RouteDecision } from "../router.ts";
import { sectionIndex } from "./_lesson.ts";
import { LSN_AT_LEAST_BUGGY } from "./05_read_replicas_exercises.ts";

export {
  LSN_AT_LEAST_BUGGY,
  lsnCompare,
  secondReplica,
  waitForReplayExercise,
} from "./05_read_replicas_exercises.ts";
export {
  approachLengthBoundary,
  type BoundaryApproach,
  compareLsnTable,
  LSN_COMPARISONS,
  LSN_PAIRS,
} from "./05_read_replicas_lsn.ts";
export {
  readYourWritesTrial,
  servedByTimeline,
  staleReadsPlot,
  summarizeTrial,
  type TrialOptions,
  type TrialRead,
  type TrialResult,
  type TrialSummary,
} from "./05_read_replicas_trial.ts";

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
  const stage = sectionIndex(NOTEBOOK, SECTIONS, section);
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
