/**
 * Lesson 04 · Tweets by location: a host database whose `tweets` table is
 * LIST-partitioned by `location` over postgres_fdw, the europe and usa
 * partitions on regional nodes (each with its own database and application
 * role), a DEFAULT partition for the rest, and one tweets API per region.
 *
 * {@link reset} brings a cluster to the start of any section of the
 * notebook; the exercises (04_tweets_by_location_exercises.ts) are
 * registered when this module is imported.
 *
 * ```ts
 * import { lesson04 } from "../lib/mod.ts";
 * await lesson04.reset(cluster, "apis");
 * ```
 *
 * @module
 */

import type { Cluster, NodeOptions } from "../cluster.ts";
import { ident, linkNodes, literal } from "../fdw.ts";
import { connect, type Node, type Sql, type StatementResult } from "../node.ts";
import type { RegionId } from "../regions.ts";
import { startTweetsApi, type TweetsApiOptions } from "../tweets_api.ts";
import { apiClient } from "../tweets_api_client.ts";
import { sectionIndex } from "./_lesson.ts";
import "./04_tweets_by_location_exercises.ts";

/** Notebook file name (without extension). */
export const NOTEBOOK = "04_tweets_by_location";

/** A login: role, password and database. */
export interface Login {
  user: string;
  password: string;
  database: string;
}

/** One regional node: its database, application role, table and API. */
export interface RegionalApp extends Login {
  /** Node name. */
  node: string;
  /** Region of the node and its API. */
  region: RegionId;
  /** Table holding the region's tweets (the API's TWEETS_TABLE). */
  table: string;
  /** Value of `tweets.location` routed to this node. */
  location: string;
  /** First id this node's own sequence hands out (ids stay unique across nodes). */
  idStart: number;
  /** Service name of the region's API. */
  api: string;
}

/** The regional nodes, as the source's docker-compose environment sets them up. */
export const REGIONAL_APPS = {
  europe: {
    node: "europe",
    region: "eu-central-1",
    user: "europe",
    password: "eupassword",
    database: "eutweets",
    table: "europe_tweets",
    location: "europe",
    idStart: 100_000_001,
    api: "europe_api",
  },
  usa: {
    node: "usa",
    region: "us-east-1",
    user: "usa",
    password: "uspassword",
    database: "ustweets",
    table: "us_tweets",
    location: "usa",
    idStart: 200_000_001,
    api: "usa_api",
  },
  asia: {
    node: "asia",
    region: "ap-northeast-1",
    user: "asia",
    password: "asiapassword",
    database: "asiatweets",
    table: "asia_tweets",
    location: "asia",
    idStart: 300_000_001,
    api: "asia_api",
  },
} as const satisfies Record<string, RegionalApp>;

/** The host's application role, which the host API (serving all of `tweets`) logs in as. */
export const HOST_APP = {
  node: "host",
  region: "eu-west-2",
  user: "tweets_app",
  password: "tweetspassword",
  database: "postgres",
  table: "tweets",
  api: "host_api",
} as const;

/** The nodes the notebook starts with. */
export const NODES: NodeOptions[] = [
  { name: "host", region: "eu-west-2", role: "host" },
  { name: "europe", region: "eu-central-1", role: "regional" },
  { name: "usa", region: "us-east-1", role: "regional" },
];

/** The node the new-region section adds. */
export const ASIA_NODE: NodeOptions = { name: "asia", region: "ap-northeast-1", role: "regional" };

/** Tweets the testing section generates, and how many of each location. */
export const GENERATED = { total: 3000, europe: 1350, usa: 1200, asia: 300, canada: 150 } as const;

/** Sections of the notebook, in order. */
export type Section =
  | "regional-databases"
  | "sharding"
  | "testing"
  | "apis"
  | "import-foreign-schema"
  | "new-region"
  | "exercises";

/** Every section, in notebook order. */
export const SECTIONS: readonly Section[] = [
  "regional-databases",
  "sharding",
  "testing",
  "apis",
  "import-foreign-schema",
  "new-region",
  "exercises",
];

/** Runs SQL as an application role, in its database: see {@link loginAs}. */
export interface LoginSession {
  /** Runs SQL text (several statements allowed), as `node.exec()` does. */
  exec(text: string): Promise<StatementResult[]>;
  /** Runs queries on a client logged in as the role. */
  query<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
}

/**
 * SQL as an application role instead of the superuser ("logged into the
 * european server" in the source). Each call opens a connection from the
 * operator's seat (no simulated latency) and closes it afterwards.
 *
 * @example
 * ```ts
 * await loginAs(europe, { user: "europe", password: "eupassword", database: "eutweets" })
 *   .exec(`SELECT count(*) FROM europe_tweets`);
 * ```
 */
export function loginAs(node: Node, login: Login): LoginSession {
  const query = async <T>(fn: (sql: Sql) => Promise<T>): Promise<T> => {
    const sql = connect({ host: node.host, port: node.port }, login.user, login.password, {
      database: login.database,
      applicationName: `pgsw-${login.user}`,
    });
    try {
      return await fn(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  };
  return {
    query,
    exec: (text) => query(async (sql) => toResults(await sql.unsafe(text).simple())),
  };
}

/** The API options of a region, as the notebook passes them to `startTweetsApi()`. */
export function apiOptions(region: keyof typeof REGIONAL_APPS | "host"): TweetsApiOptions {
  const app = region === "host" ? HOST_APP : REGIONAL_APPS[region];
  return {
    name: app.api,
    region: app.region,
    database: app.database,
    user: app.user,
    password: app.password,
    table: app.table,
    ...("location" in app ? { locations: [app.location] } : {}),
  };
}

/**
 * Brings a cluster (fresh, or broken by a learner) to the state at the start
 * of a section of notebook 04: it removes the APIs, the asia node and every
 * object of the lesson, then builds each earlier section again.
 *
 * @param cluster A running cluster (its nodes are added when missing).
 * @param section The section to start.
 * @example
 * ```ts
 * await lesson04.reset(cluster, "new-region");
 * ```
 */
export async function reset(cluster: Cluster, section: Section): Promise<void> {
  const index = sectionIndex(NOTEBOOK, SECTIONS, section);
  await cluster.addNodes(NODES);
  await clear(cluster);
  const steps: (() => Promise<void>)[] = [
    () => createRegionalDatabases(cluster),
    () => shard(cluster),
    () => loadTweets(cluster),
    () => startApis(cluster),
    () => importUsaSchema(cluster),
    () => addAsia(cluster),
  ];
  for (const step of steps.slice(0, index)) await step();
}

/** Removes what the lesson created, leaving host, europe and usa empty. */
async function clear(cluster: Cluster): Promise<void> {
  const apis: string[] = [HOST_APP.api, ...Object.values(REGIONAL_APPS).map((a) => a.api)];
  for (const service of [...cluster.services].reverse()) {
    if (apis.includes(service.name)) await cluster.removeService(service.name);
  }
  if (cluster.has("asia")) await cluster.removeNode("asia");
  await cluster.node("host").exec(`
    DROP SCHEMA IF EXISTS usa_remote CASCADE;
    DROP TABLE IF EXISTS tweets CASCADE;
    DROP EXTENSION IF EXISTS postgres_fdw CASCADE;
    DO $$ BEGIN
      IF EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(HOST_APP.user)}) THEN
        DROP OWNED BY ${ident(HOST_APP.user)};
        DROP ROLE ${ident(HOST_APP.user)};
      END IF;
    END $$;`);
  for (const app of [REGIONAL_APPS.europe, REGIONAL_APPS.usa]) {
    const node = cluster.node(app.node);
    await node.exec(`DROP DATABASE IF EXISTS ${ident(app.database)} WITH (FORCE)`);
    await node.exec(`DROP ROLE IF EXISTS ${ident(app.user)}`);
  }
}

/** The columns of the tweets table, the same on the host and on every regional node (a partition needs them). */
const TWEET_COLUMNS = `
      id serial4 NOT NULL,
      "location" varchar NOT NULL,
      "text" varchar NOT NULL,
      owner_id int4 NOT NULL,
      like_count int4 NOT NULL
    `;

/**
 * A regional node's application role, its database (owned by the role) and
 * its table, created as the role, with the node's own id range. Idempotent.
 *
 * @example
 * ```ts
 * await createRegionalDatabase(asia, REGIONAL_APPS.asia);
 * ```
 */
export async function createRegionalDatabase(node: Node, app: RegionalApp): Promise<void> {
  await node.exec(`
    DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(app.user)}) THEN
        CREATE ROLE ${ident(app.user)} LOGIN PASSWORD ${literal(app.password)};
      END IF;
    END $$;`);
  const exists = await node.sql`SELECT 1 FROM pg_database WHERE datname = ${app.database}`;
  if (!exists.length) {
    await node.exec(`CREATE DATABASE ${ident(app.database)} OWNER ${ident(app.user)}`);
  }
  await loginAs(node, app).exec(`
    CREATE TABLE IF NOT EXISTS ${ident(app.table)} (${TWEET_COLUMNS});
    SELECT setval(${literal(`${app.table}_id_seq`)},
                  greatest(${app.idStart - 1}, (SELECT max(id) FROM ${ident(app.table)})));`);
}

async function createRegionalDatabases(cluster: Cluster): Promise<void> {
  for (const app of [REGIONAL_APPS.europe, REGIONAL_APPS.usa]) {
    await createRegionalDatabase(cluster.node(app.node), app);
  }
}

/** Options for {@link linkRegion}. */
export interface LinkRegionOptions {
  /** postgres_fdw `batch_size` of the server. @default postgres_fdw's default (1) */
  batchSize?: number;
}

/**
 * A foreign server on the host named after a regional node (dbname: its
 * regional database), with user mappings for the operator and tweets_app
 * that log in as the regional application role. Idempotent.
 *
 * @example
 * ```ts
 * await linkRegion(cluster, REGIONAL_APPS.asia, { batchSize: 500 });
 * ```
 */
export async function linkRegion(
  cluster: Cluster,
  app: RegionalApp,
  options: LinkRegionOptions = {},
): Promise<void> {
  const batchSize = options.batchSize;
  const host = cluster.node("host");
  await linkNodes(host, cluster.node(app.node), {
    server: app.node,
    dbname: app.database,
    remoteUser: app.user,
    remotePassword: app.password,
    batchSize,
  });
  await host.exec(`
    CREATE USER MAPPING IF NOT EXISTS FOR ${ident(HOST_APP.user)} SERVER ${ident(app.node)}
      OPTIONS (user ${literal(app.user)}, password ${literal(app.password)});`);
}

/** Section "sharding": postgres_fdw, servers, mappings, the partitioned table, tweets_app. */
async function shard(cluster: Cluster): Promise<void> {
  const host = cluster.node("host");
  await host.exec(`
    CREATE ROLE ${ident(HOST_APP.user)} LOGIN PASSWORD ${literal(HOST_APP.password)};
    CREATE TABLE tweets (${TWEET_COLUMNS}) PARTITION BY LIST ("location");
    GRANT SELECT, INSERT ON tweets TO ${ident(HOST_APP.user)};
    GRANT USAGE ON SEQUENCE tweets_id_seq TO ${ident(HOST_APP.user)};`);
  for (const app of [REGIONAL_APPS.europe, REGIONAL_APPS.usa]) {
    await linkRegion(cluster, app);
    await host.exec(`
      CREATE FOREIGN TABLE ${ident(app.table)} PARTITION OF tweets
        FOR VALUES IN (${literal(app.location)}) SERVER ${ident(app.node)};`);
  }
  await host.exec(`CREATE TABLE tweets_default PARTITION OF tweets DEFAULT;`);
}

/** Section "testing": the rows the notebook writes, and batch_size on the servers. */
async function loadTweets(cluster: Cluster): Promise<void> {
  const host = cluster.node("host");
  await host.exec(`
    INSERT INTO tweets (location, text, owner_id, like_count) VALUES
      ('europe', 'Guten Morgen from Berlin', 1, 0),
      ('usa', 'Hello from New York', 2, 0),
      ('antarctica', 'Is anyone out there?', 3, 0);`);
  await loginAs(cluster.node("europe"), REGIONAL_APPS.europe).exec(`
    INSERT INTO europe_tweets (location, text, owner_id, like_count)
      VALUES ('europe', 'Bonjour from Paris, written in Frankfurt', 4, 0);`);
  await host.exec(BATCH_DEMO_INSERT);
  await host.exec(`
    ALTER SERVER europe OPTIONS (ADD batch_size '500');
    ALTER SERVER usa OPTIONS (ADD batch_size '500');`);
  await host.exec(BATCH_DEMO_INSERT);
  await host.exec(GENERATE_TWEETS);
}

/** 20 tweets for the usa node, written through the host (the batch_size demonstration). */
export const BATCH_DEMO_INSERT = `
  INSERT INTO tweets (location, text, owner_id, like_count)
    SELECT 'usa', 'batch demo #' || i, 100 + i, 0
    FROM generate_series(1, 20) AS i;`;

/** The testing section's generated tweets (see {@link GENERATED}). */
export const GENERATE_TWEETS = `
  INSERT INTO tweets (location, text, owner_id, like_count)
    SELECT
      CASE WHEN i % 20 < 9 THEN 'europe'
           WHEN i % 20 < 17 THEN 'usa'
           WHEN i % 20 < 19 THEN 'asia'
           ELSE 'canada' END,
      'generated tweet #' || i,
      1 + i % 500,
      (i * 7) % 50
    FROM generate_series(1, 3000) AS i;`;

/** Section "apis": the three APIs and the tweets the section posts through them. */
async function startApis(cluster: Cluster): Promise<void> {
  for (const region of ["europe", "usa", "host"] as const) {
    const node = cluster.node(region === "host" ? "host" : REGIONAL_APPS[region].node);
    cluster.addService(await startTweetsApi(node, apiOptions(region)));
  }
  const berlin = await apiClient(cluster, { service: "europe_api", from: "eu-central-1" });
  const newYork = await apiClient(cluster, { service: "host_api", from: "us-east-1" });
  try {
    await expectCreated(berlin.post("/tweets", { text: "Servus from Munich", owner_id: 4242 }));
    await expectCreated(
      newYork.post("/tweets", { text: "Posted through London", owner_id: 7, location: "usa" }),
    );
  } finally {
    berlin.close();
    newYork.close();
  }
}

async function expectCreated(reply: Promise<{ status: number; body: unknown }>): Promise<void> {
  const { status, body } = await reply;
  if (status !== 201) {
    throw new Error(`Posting a tweet answered ${status}: ${JSON.stringify(body)}`);
  }
}

/** Section "import-foreign-schema": the usa node's public schema imported into usa_remote. */
async function importUsaSchema(cluster: Cluster): Promise<void> {
  await cluster.node("host").exec(`
    CREATE SCHEMA usa_remote;
    IMPORT FOREIGN SCHEMA public FROM SERVER usa INTO usa_remote;`);
}

/** Section "new-region": more asia tweets, the asia node, the move out of the default, asia_api. */
async function addAsia(cluster: Cluster): Promise<void> {
  const host = cluster.node("host");
  await host.exec(MORE_ASIA_TWEETS);
  const asia = await cluster.addNode(ASIA_NODE);
  await createRegionalDatabase(asia, REGIONAL_APPS.asia);
  await linkRegion(cluster, REGIONAL_APPS.asia, { batchSize: 500 });
  await host.exec(MOVE_ASIA_AND_ATTACH);
  cluster.addService(await startTweetsApi(asia, apiOptions("asia")));
}

/** The new-region section's extra asia tweets, which land in the default partition. */
export const MORE_ASIA_TWEETS = `
  INSERT INTO tweets (location, text, owner_id, like_count)
    SELECT 'asia', 'konnichiwa #' || i, 1 + i % 500, 0
    FROM generate_series(1, 1000) AS i;`;

/** Moves the asia rows out of the default partition and attaches asia_tweets, in one transaction. */
export const MOVE_ASIA_AND_ATTACH = `
  BEGIN;
  -- 1. Writers wait (reads go on) while rows move out of the default partition.
  LOCK TABLE tweets_default IN EXCLUSIVE MODE;
  -- 2. A foreign table for asia_tweets on the asia node, not a partition yet.
  IMPORT FOREIGN SCHEMA public LIMIT TO (asia_tweets) FROM SERVER asia INTO public;
  -- 3. Move the rows: copy them to the asia node, delete them here.
  INSERT INTO asia_tweets SELECT * FROM tweets_default WHERE location = 'asia';
  DELETE FROM tweets_default WHERE location = 'asia';
  -- 4. Attach: PostgreSQL scans tweets_default and finds no 'asia' row left.
  ALTER TABLE tweets ATTACH PARTITION asia_tweets FOR VALUES IN ('asia');
  COMMIT;`;

/**
 * The partition a new row with this location goes to, found by inserting
 * one through the host and rolling back (nothing is written).
 *
 * @example
 * ```ts
 * await routeOf(host, "canada"); // "tweets_default"
 * ```
 */
export async function routeOf(host: Node, location: string): Promise<string> {
  let partition = "";
  await host.sql.begin(async (tx) => {
    const [row] = await tx`
      INSERT INTO tweets (location, text, owner_id, like_count)
      VALUES (${location}, 'routing probe', 1, 0)
      RETURNING tableoid::regclass::text AS partition`;
    partition = row.partition as string;
    throw new RollbackProbe();
  }).catch((error) => {
    if (!(error instanceof RollbackProbe)) throw error;
  });
  return partition;
}

class RollbackProbe extends Error {}

function toResults(result: unknown): StatementResult[] {
  const multi = Array.isArray(result) && result.length > 0 && Array.isArray(result[0]) &&
    typeof (result[0] as { command?: unknown }).command === "string";
  const list = multi ? result as unknown[] : [result];
  return list.map((r) => {
    const rows = r as Record<string, unknown>[] & { command?: string; count?: number };
    return { command: rows.command ?? "", count: rows.count ?? rows.length, rows: [...rows] };
  });
}
