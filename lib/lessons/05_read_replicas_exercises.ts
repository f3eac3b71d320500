/**
 * The exercises of notebook 05, registered on import (the lesson module
 * imports this one): wait for the replica in one round trip, a second
 * replica and reads from the freshest, and fix an LSN comparison.
 *
 * The lesson module imports this module, so this one uses the lesson's
 * exports only inside functions (never while loading), and spells out the
 * notebook name.
 *
 * @module
 */

import { type CheckResult, defineExercise } from "../exercises.ts";
import type { Node } from "../node.ts";
import { startRedis } from "../redis.ts";
import { addReplica, currentLsn, setApplyDelay, waitForReplay } from "../replication.ts";
import { createRouter, lsnCache } from "../router.ts";
import { reset } from "./05_read_replicas.ts";
import { LSN_PAIRS } from "./05_read_replicas_lsn.ts";

const NOTEBOOK = "05_read_replicas";

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
    const delay = await applyDelayMs(replica);
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
      await setApplyDelay(replica, delay);
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
    const delay = await applyDelayMs(replica);
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
      await setApplyDelay(replica, delay);
    }
  },
  async solve(cluster) {
    await addReplica(cluster, { name: "us_replica", primary: "db", region: "us-east-1" });
  },
  async attemptWrong(cluster) {
    await addReplica(cluster, { name: "us_replica", primary: "db", region: "eu-west-2" });
  },
});

/** The replica's `recovery_min_apply_delay`, in ms. */
async function applyDelayMs(replica: Node): Promise<number> {
  const [{ delay }] = await replica.sql`
    SELECT setting::int AS delay FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
  return delay as number;
}

function squash(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}
