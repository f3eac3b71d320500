/**
 * The exercises of notebook 04, registered on import (the lesson module
 * imports this one): a like endpoint for the usa API, and canada routed to
 * the usa node.
 *
 * The lesson module imports this module, so this one uses the lesson's
 * exports only inside functions (never while loading).
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { type CheckResult, defineExercise } from "../exercises.ts";
import { startTweetsApi } from "../tweets_api.ts";
import { apiClient } from "../tweets_api_client.ts";
import { ApiError, tweetId, type TweetsRoute } from "../tweets_api_endpoints.ts";
import {
  apiOptions,
  GENERATED,
  loginAs,
  REGIONAL_APPS,
  reset,
  routeOf,
} from "./04_tweets_by_location.ts";

const LIKE_ROUTE_SOLUTION = `
await cluster.removeService("usa_api");
cluster.addService(await startTweetsApi(usa, {
  ...usaApiOptions,
  routes: [{
    method: "POST",
    path: "/tweets/:id/like",
    handle: async ({ params, sql, table }) => {
      const id = tweetId(params.id);
      const [tweet] = await sql\`
        UPDATE \${sql(table)} SET like_count = like_count + 1 WHERE id = \${id} RETURNING *\`;
      if (!tweet) throw new ApiError(404, \`No tweet with id \${id} in \${table}\`);
      return { body: tweet };
    },
  }],
}));`;

const likeRoute: TweetsRoute = {
  method: "POST",
  path: "/tweets/:id/like",
  handle: async ({ params, sql, table }) => {
    const id = tweetId(params.id);
    const [tweet] = await sql`
      UPDATE ${sql(table)} SET like_count = like_count + 1 WHERE id = ${id} RETURNING *`;
    if (!tweet) throw new ApiError(404, `No tweet with id ${id} in ${table}`);
    return { body: tweet };
  },
};

async function restartUsaApi(cluster: Cluster, routes: TweetsRoute[]): Promise<void> {
  if (cluster.services.some((s) => s.name === "usa_api")) await cluster.removeService("usa_api");
  cluster.addService(
    await startTweetsApi(cluster.node("usa"), { ...apiOptions("usa"), routes }),
  );
}

async function usaLikes(cluster: Cluster): Promise<{ id: number; likes: number } | undefined> {
  return await loginAs(cluster.node("usa"), REGIONAL_APPS.usa).query(async (sql) => {
    const [row] = await sql`SELECT id, like_count FROM us_tweets ORDER BY id LIMIT 1`;
    return row ? { id: row.id as number, likes: row.like_count as number } : undefined;
  });
}

async function likesOf(cluster: Cluster, id: number): Promise<number | undefined> {
  return await loginAs(cluster.node("usa"), REGIONAL_APPS.usa).query(async (sql) => {
    const [row] = await sql`SELECT like_count FROM us_tweets WHERE id = ${id}`;
    return row?.like_count as number | undefined;
  });
}

/** POSTs `path` to usa_api as a user in its own region; a body that is not JSON becomes `{ error }`. */
async function postToUsaApi(
  cluster: Cluster,
  path: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  await using user = await apiClient(cluster, { service: "usa_api" });
  const reply = await user.post(path, undefined);
  const body = typeof reply.body === "string" ? { error: reply.body } : reply.body ?? {};
  return { status: reply.status, body: body as Record<string, unknown> };
}

defineExercise({
  id: "04.like_endpoint",
  notebook: "04_tweets_by_location",
  title: "A like endpoint for the usa API",
  prompt: "Give the usa API a `POST /tweets/:id/like` endpoint: it adds 1 to the tweet's " +
    "`like_count` in `us_tweets` and answers 200 with the updated tweet, or 404 with " +
    "`{ error }` when the tweet does not exist. Restart `usa_api` with a `routes` option.",
  hints: [
    'Stop the running API with `await cluster.removeService("usa_api")`, then start it again ' +
    "with `startTweetsApi(usa, { ...usaApiOptions, routes: [...] })` and `cluster.addService()`.",
    'A route is `{ method: "POST", path: "/tweets/:id/like", handle }`; `handle` gets ' +
    "`{ params, sql, table }` and returns `{ body }` (status 200 by default).",
    "Parse the id with `tweetId(params.id)`, run `UPDATE ... SET like_count = like_count + 1 " +
    "WHERE id = ${id} RETURNING *` with the `sql` you are given, and `throw new ApiError(404, ...)` " +
    "when no row comes back.",
  ],
  solution: LIKE_ROUTE_SOLUTION,
  setup: (cluster) => reset(cluster, "exercises"),
  async check(cluster): Promise<CheckResult> {
    const service = cluster.services.find((s) => s.name === "usa_api");
    if (!service) {
      return {
        status: "wrong",
        message: "the cluster has no usa_api any more; start it again with " +
          "cluster.addService(await startTweetsApi(usa, { ...usaApiOptions, routes: [...] }))",
      };
    }
    const target = await usaLikes(cluster);
    if (!target) return { status: "wrong", message: "us_tweets on the usa node is empty" };
    const reply = await postToUsaApi(cluster, `/tweets/${target.id}/like`);
    const error = String(reply.body.error ?? "");
    if (reply.status === 404 && error.startsWith("No route")) {
      return {
        status: "not-attempted",
        message: `usa_api has no POST /tweets/:id/like yet (it answered 404: ${
          error.slice(0, 60)
        }…)`,
      };
    }
    if (reply.status !== 200) {
      return {
        status: "wrong",
        message: `liking tweet ${target.id} answered ${reply.status} (${error || "no error"}); ` +
          "it should answer 200 with the updated tweet",
      };
    }
    const after = await likesOf(cluster, target.id);
    if (after !== target.likes + 1) {
      return {
        status: "wrong",
        message: `liking tweet ${target.id} answered 200, but its like_count in us_tweets went ` +
          `from ${target.likes} to ${after}; it should go up by exactly 1`,
      };
    }
    if (reply.body.like_count !== after) {
      return {
        status: "wrong",
        message: `the like was stored (like_count ${after}), but the answer says like_count ` +
          `${JSON.stringify(reply.body.like_count)}; return the updated tweet`,
      };
    }
    const missing = await postToUsaApi(cluster, "/tweets/2147483000/like");
    if (missing.status !== 404) {
      return {
        status: "wrong",
        message: `liking a tweet that does not exist (id 2147483000) answered ${missing.status}; ` +
          "answer 404 with throw new ApiError(404, ...)",
      };
    }
    return {
      status: "correct",
      message: `POST /tweets/${target.id}/like raised its like_count from ${target.likes} to ` +
        `${after} in us_tweets, and an unknown id answers 404`,
    };
  },
  solve: (cluster) => restartUsaApi(cluster, [likeRoute]),
  attemptWrong: (cluster) =>
    restartUsaApi(cluster, [{
      method: "POST",
      path: "/tweets/:id/like",
      handle: async ({ params, sql, table }) => {
        const [tweet] = await sql`SELECT * FROM ${sql(table)} WHERE id = ${tweetId(params.id)}`;
        return { body: tweet ?? {} };
      },
    }]),
});

/** The canada exercise's solution: move the canada rows, then re-attach us_tweets with the new list. */
const CANADA_SQL = `
  BEGIN;
  LOCK TABLE tweets_default IN EXCLUSIVE MODE;
  ALTER TABLE tweets DETACH PARTITION us_tweets;
  INSERT INTO us_tweets SELECT * FROM tweets_default WHERE location = 'canada';
  DELETE FROM tweets_default WHERE location = 'canada';
  ALTER TABLE tweets ATTACH PARTITION us_tweets FOR VALUES IN ('usa', 'canada');
  COMMIT;
`;

async function canadaState(cluster: Cluster) {
  const host = cluster.node("host");
  const [bound] = await host.sql`
    SELECT pg_get_expr(c.relpartbound, c.oid) AS bound, i.inhparent::regclass::text AS parent
    FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
    WHERE c.oid = to_regclass('public.us_tweets')`;
  const [defaults] = await host.sql`
    SELECT to_regclass('public.tweets_default') IS NOT NULL AS present,
           (SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass('public.tweets_default')
              AND inhparent = 'tweets'::regclass) AS attached`;
  const inDefault = defaults.present
    ? Number(
      (await host.sql`SELECT count(*) AS n FROM tweets_default WHERE location = 'canada'`)[0].n,
    )
    : 0;
  const onUsa = await loginAs(cluster.node("usa"), REGIONAL_APPS.usa).query(async (sql) =>
    Number((await sql`SELECT count(*) AS n FROM us_tweets WHERE location = 'canada'`)[0].n)
  );
  return {
    bound: (bound?.bound as string | null) ?? null,
    attached: bound?.parent === "tweets",
    defaultAttached: Number(defaults.attached) === 1,
    inDefault,
    onUsa,
  };
}

defineExercise({
  id: "04.canada_to_usa",
  notebook: "04_tweets_by_location",
  title: "Route canada to the usa node",
  prompt: "Tweets with location `canada` land in `tweets_default` on the host. Route them to the " +
    "usa node: `us_tweets` takes `('usa', 'canada')`, the canada tweets already in the default " +
    "partition move to the usa node, and none is lost.",
  hints: [
    "A partition's bound cannot be changed in place: detach `us_tweets` and attach it again " +
    "with the new list of values.",
    "Attaching fails while `tweets_default` still holds canada rows (the same error as for asia): " +
    "move them into `us_tweets` first. While it is detached, `us_tweets` is a plain foreign table " +
    "you can INSERT into.",
    "Do it in one transaction (BEGIN ... COMMIT) with `LOCK TABLE tweets_default IN EXCLUSIVE MODE` " +
    "first, as the new-region section did.",
  ],
  solution: `await host.exec(\`${CANADA_SQL}\`);`,
  setup: (cluster) => reset(cluster, "exercises"),
  async check(cluster): Promise<CheckResult> {
    const s = await canadaState(cluster);
    const takesCanada = s.bound !== null && /'canada'/.test(s.bound) && /'usa'/.test(s.bound);
    if (!s.attached) {
      return {
        status: "wrong",
        message: "us_tweets is not a partition of tweets right now (detached?); attach it again " +
          "with FOR VALUES IN ('usa', 'canada')",
      };
    }
    if (!s.defaultAttached) {
      return {
        status: "wrong",
        message: "tweets has no default partition any more; attach tweets_default again " +
          "(ALTER TABLE tweets ATTACH PARTITION tweets_default DEFAULT)",
      };
    }
    if (!takesCanada && s.inDefault >= GENERATED.canada) {
      return {
        status: "not-attempted",
        message:
          `us_tweets still takes ${s.bound}, and ${s.inDefault} canada tweets wait in tweets_default`,
      };
    }
    const route = await routeOf(cluster.node("host"), "canada");
    if (!takesCanada || route !== "us_tweets") {
      return {
        status: "wrong",
        message: `a new canada tweet goes to ${route}, not us_tweets (us_tweets takes ${s.bound})`,
      };
    }
    if (s.inDefault > 0) {
      return {
        status: "wrong",
        message: `${s.inDefault} canada tweets are still in tweets_default on the host`,
      };
    }
    if (s.onUsa < GENERATED.canada) {
      return {
        status: "wrong",
        message: `only ${s.onUsa} canada tweets are on the usa node, of the ${GENERATED.canada} ` +
          "that were in tweets_default: some were lost; move rows with INSERT ... SELECT before " +
          'deleting them (lost? reset with lesson04.reset(cluster, "exercises"))',
      };
    }
    return {
      status: "correct",
      message: `us_tweets takes ${s.bound}; all ${s.onUsa} canada tweets are on the usa node and ` +
        "new ones go there too",
    };
  },
  solve: async (cluster) => {
    await cluster.node("host").exec(CANADA_SQL);
  },
  attemptWrong: async (cluster) => {
    await cluster.node("host").exec(`
      BEGIN;
      DELETE FROM tweets_default WHERE location = 'canada';
      ALTER TABLE tweets DETACH PARTITION us_tweets;
      ALTER TABLE tweets ATTACH PARTITION us_tweets FOR VALUES IN ('usa', 'canada');
      COMMIT;`);
  },
});
