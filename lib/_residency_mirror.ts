/**
 * The identity mirror: `shared.identity` replicated between the three home
 * nodes by logical replication, each node subscribing to the two others
 * with `origin = none` (PostgreSQL 16). Part of the residency module (see
 * residency.ts, which re-exports the public names).
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import { WorkshopError } from "./errors.ts";
import { ident, literal } from "./fdw.ts";
import type { Node } from "./node.ts";
import { type Home, homeNodes, HOMES, presentHomeNodes } from "./_residency_layout.ts";

/**
 * Name of the subscription on `subscriber` that pulls `publisher`'s identity
 * changes (also the name of its replication slot on `publisher`).
 *
 * @example
 * ```ts
 * mirrorSubscription("gbr", "usa"); // "identity_gbr_to_usa"
 * ```
 */
export function mirrorSubscription(publisher: Home, subscriber: Home): string {
  return `identity_${publisher}_to_${subscriber}`;
}

/**
 * The SQL that makes `subscriber` receive the identity changes made on
 * `publisher`: a subscription with `origin = none` (PostgreSQL 16), so that
 * changes a node received from a peer are not sent on again, which is what
 * lets three nodes replicate to each other without loops. The slot is made
 * beforehand (see {@link mirrorIdentity}).
 *
 * @param pair Which node publishes and which subscribes.
 * @param conninfo How the subscriber reaches the publisher (with password).
 * @example
 * ```ts
 * await usa.exec(mirrorSubscriptionSql({ publisher: "gbr", subscriber: "usa" }, "host=… password=…"));
 * ```
 */
export function mirrorSubscriptionSql(
  pair: { publisher: Home; subscriber: Home },
  conninfo: string,
): string {
  const { publisher, subscriber } = pair;
  const name = mirrorSubscription(publisher, subscriber);
  return `CREATE SUBSCRIPTION ${name}
  CONNECTION ${literal(conninfo)}
  PUBLICATION identity_mirror
  WITH (origin = none, copy_data = false, disable_on_error = true,
        create_slot = false, slot_name = '${name}');`;
}

/**
 * Mirrors `shared.identity` between the three nodes: six subscriptions (each
 * node subscribes to the two others), then waits until every publisher
 * streams to both peers. Skips subscriptions that exist.
 *
 * The replication slots are created first, on each publisher, with
 * `pg_create_logical_replication_slot()`: creating a logical slot waits for
 * every transaction running on the publisher to end, so two nodes each
 * running CREATE SUBSCRIPTION (which creates the slot on the other) at the
 * same time would wait for each other forever.
 *
 * @returns One row per subscription: subscriber, publisher, name, state.
 * @throws {WorkshopError} `REPLICA_FAILED` when a subscription does not start streaming within 30 s.
 */
export async function mirrorIdentity(
  cluster: Cluster,
  options: { timeoutMs?: number } = {},
): Promise<{ subscription: string; subscriber: Home; publisher: Home; streaming: boolean }[]> {
  const nodes = homeNodes(cluster);
  const pairs = HOMES.flatMap((subscriber) =>
    HOMES.filter((p) => p !== subscriber).map((publisher) => ({ publisher, subscriber }))
  );
  const missing: typeof pairs = [];
  for (const pair of pairs) {
    const name = mirrorSubscription(pair.publisher, pair.subscriber);
    const [exists] = await nodes[pair.subscriber].sql`
      SELECT 1 FROM pg_subscription WHERE subname = ${name}`;
    if (exists) continue;
    missing.push(pair);
    await nodes[pair.publisher].sql`
      SELECT pg_create_logical_replication_slot(${name}, 'pgoutput')
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ${name})`;
  }
  await Promise.all(missing.map(async ({ publisher, subscriber }) => {
    const name = mirrorSubscription(publisher, subscriber);
    const route = await cluster.peerRoute(nodes[subscriber], nodes[publisher]);
    const to = nodes[publisher];
    const conninfo = `host=${route.host} port=${route.port} dbname=${to.database} ` +
      `user=${to.user} password=${to.password} application_name=${name}`;
    await nodes[subscriber].exec(mirrorSubscriptionSql({ publisher, subscriber }, conninfo));
  }));
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await mirrorState(cluster);
    if (states.every((s) => s.streaming)) return states;
    if (Date.now() > deadline) {
      const missing = states.filter((s) => !s.streaming).map((s) => s.subscription);
      throw new WorkshopError(
        "REPLICA_FAILED",
        `Identity mirror not streaming after ${timeoutMs} ms: ${missing.join(", ")}`,
        { fix: 'Check the node logs (node.logTail()); or start over with reset(cluster, "model")' },
      );
    }
    await sleep(50);
  }
}

/**
 * Whether each mirror subscription streams, seen from its publisher's
 * `pg_stat_replication`.
 *
 * @example
 * ```ts
 * (await mirrorState(cluster)).every((s) => s.streaming);
 * ```
 */
export async function mirrorState(
  cluster: Cluster,
): Promise<{ subscription: string; subscriber: Home; publisher: Home; streaming: boolean }[]> {
  const nodes = homeNodes(cluster);
  const rows = await Promise.all(HOMES.map(async (publisher) => {
    const streaming = new Set(
      (await nodes[publisher].sql`
        SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'`)
        .map((r) => r.application_name as string),
    );
    return HOMES.filter((s) => s !== publisher).map((subscriber) => {
      const subscription = mirrorSubscription(publisher, subscriber);
      return { subscription, subscriber, publisher, streaming: streaming.has(subscription) };
    });
  }));
  return rows.flat();
}

/**
 * Waits until `shared.identity` is the same on every node (same digest of
 * every row), i.e. logical replication has delivered every change.
 *
 * @returns The row count and digest every node agrees on.
 * @throws {WorkshopError} `REPLICA_FAILED` naming a disabled subscription
 *   (an apply error, such as the same uuid created on two nodes), or when
 *   the nodes still differ after the timeout.
 * @example
 * ```ts
 * await usa.exec(`SELECT util.create_manager_tree(15)`);
 * await awaitMirror(cluster);
 * ```
 */
export async function awaitMirror(
  cluster: Cluster,
  options: { timeoutMs?: number } = {},
): Promise<{ rows: number; digest: string; waitedMs: number }> {
  const nodes = presentHomeNodes(cluster);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const started = performance.now();
  for (let round = 0;; round++) {
    const seen = await Promise.all(nodes.map(async (n) => {
      const [row] = await n.sql`
        SELECT count(*) AS rows,
               coalesce(md5(string_agg(uuid::text || region || coalesce(manager_uuid::text, '-'),
                                       ',' ORDER BY uuid)), '') AS digest
        FROM shared.identity`;
      return { node: n.name, rows: row.rows as number, digest: row.digest as string };
    }));
    if (seen.every((s) => s.digest === seen[0].digest)) {
      return { rows: seen[0].rows, digest: seen[0].digest, waitedMs: performance.now() - started };
    }
    if (round % 10 === 9) await assertMirrorEnabled(nodes);
    if (performance.now() - started > timeoutMs) {
      throw new WorkshopError(
        "REPLICA_FAILED",
        `shared.identity differs between nodes after ${timeoutMs} ms: ${
          seen.map((s) => `${s.node} ${s.rows} rows`).join(", ")
        }`,
        { fix: 'Check the node logs (node.logTail()); or start over with reset(cluster, "model")' },
      );
    }
    await sleep(20);
  }
}

async function assertMirrorEnabled(nodes: Node[]): Promise<void> {
  for (const node of nodes) {
    const disabled = await node.sql`
      SELECT s.subname, coalesce(t.apply_error_count, 0) AS errors
      FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats t ON t.subid = s.oid
      WHERE NOT s.subenabled AND s.subname LIKE 'identity\\_%'`;
    if (disabled.length) {
      throw new WorkshopError(
        "REPLICA_FAILED",
        `Identity mirror subscription ${disabled[0].subname} on "${node.name}" is disabled (${
          disabled[0].errors
        } apply errors)`,
        {
          fix:
            `A change could not be applied (the same uuid created on two nodes?); see node.logTail(), ` +
            `or start over with reset(cluster, "model")`,
          details: await node.logTail(8),
        },
      );
    }
  }
}

/**
 * Removes the mirror from `nodes`: every subscription (without dropping its
 * slot remotely), then the logical slots once no walsender uses them (at
 * most 15 s), and the publication. Works on a half-built or broken mirror.
 */
export async function dropMirror(nodes: readonly Node[]): Promise<void> {
  for (const node of nodes) {
    const subs = await node.sql`SELECT subname FROM pg_subscription`;
    for (const { subname } of subs) {
      const name = ident(subname as string);
      await node.exec(`ALTER SUBSCRIPTION ${name} DISABLE`);
      await node.exec(`ALTER SUBSCRIPTION ${name} SET (slot_name = NONE)`);
      await node.exec(`DROP SUBSCRIPTION ${name}`);
    }
  }
  for (const node of nodes) {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const slots = await node.sql`
        SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'logical'`;
      for (const s of slots.filter((s) => !s.active)) {
        await node.sql`SELECT pg_drop_replication_slot(${s.slot_name as string})`.catch(() => {});
      }
      if (slots.every((s) => !s.active) || Date.now() > deadline) break;
      await sleep(50);
    }
    await node.exec(`DROP PUBLICATION IF EXISTS identity_mirror;`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
