/**
 * Regional tweets APIs: the source's FastAPI app (`tweets_api`), one per
 * region, each serving the table its configuration names (the source's
 * `TWEETS_TABLE`) from its regional database as the regional application
 * role. An API is an HTTP server on 127.0.0.1 (Deno.serve, a free port) that
 * the cluster owns once added with `cluster.addService()`, so `cluster.stop()`
 * stops it.
 *
 * | endpoint           | answers                                                        |
 * |--------------------|----------------------------------------------------------------|
 * | `GET /tweets`      | 200, the newest tweets (`?limit=` 1 to 1000, default 20)       |
 * | `GET /tweets/:id`  | 200 with the tweet, 404 when the table has no such id          |
 * | `POST /tweets`     | 201 with the stored tweet; JSON body `{text, owner_id, location?}` |
 *
 * Every error is JSON `{ "error": "..." }` (see tweets_api_endpoints.ts,
 * which holds the endpoints, their input checks and error answers). Users in
 * other regions call an API through `cluster.routeToService()`, which adds
 * the simulated round trip; `apiClient()` and `apiLatencyFromRegions()` in
 * tweets_api_client.ts do that for them.
 *
 * @module
 */

import type { ClusterService } from "./cluster.ts";
import { htmlTable } from "./display.ts";
import { WorkshopError } from "./errors.ts";
import { connect, type Node, type Sql } from "./node.ts";
import type { Address } from "./providers/provider.ts";
import { getRegion, type RegionId } from "./regions.ts";
import { compileRoutes, handleRequest, type TweetsRoute } from "./tweets_api_endpoints.ts";

/** Options for {@link startTweetsApi}; together they are the source's environment variables. */
export interface TweetsApiOptions {
  /** Service name, unique in the cluster, e.g. "europe_api". */
  name: string;
  /** Region the API runs in; its connection to the node crosses regions if they differ. @default the node's region */
  region?: RegionId;
  /** Database to serve from (the path of the source's `POSTGRES_DATABASE_URL`). @default the node's database */
  database?: string;
  /** Role the API logs in as (not the superuser). */
  user: string;
  /** Password of `user`. */
  password: string;
  /** Table to serve (the source's `TWEETS_TABLE`). @default "tweets" */
  table?: string;
  /**
   * Locations this API stores; `POST /tweets` refuses others and uses the
   * first when the body has none. Empty: any location, and the body must name it.
   * @default []
   */
  locations?: readonly string[];
  /** Extra endpoints, matched before the built-in ones. @default [] */
  routes?: TweetsRoute[];
}

/** A running tweets API. */
export interface TweetsApi extends ClusterService {
  /** Base URL from this process, without simulated latency, e.g. "http://127.0.0.1:41234". */
  readonly url: string;
  /** Node whose database it serves. */
  readonly node: Node;
  /** Database it serves from. */
  readonly database: string;
  /** Role it logs in as. */
  readonly user: string;
  /** Table it serves. */
  readonly table: string;
  /** Locations it stores (empty: any). */
  readonly locations: readonly string[];
  /** Requests answered so far. */
  readonly requests: number;
}

/**
 * Starts a tweets API for `node`: an HTTP server on 127.0.0.1 with a free
 * port, serving `table` from `database` as `user`. Checks at start that the
 * role can log in and read and insert into the table. Add it to the cluster
 * so that `cluster.stop()` stops it.
 *
 * @param node The node holding the table.
 * @param options Name, region, database, role, table; see {@link TweetsApiOptions}.
 * @returns The running API, also a cluster service.
 * @throws {WorkshopError} `INVALID_SETTING` for a bad name, a login that fails,
 *   a missing table or missing privileges.
 * @example
 * ```ts
 * const europeApi = cluster.addService(await startTweetsApi(europe, {
 *   name: "europe_api", database: "eutweets", user: "europe", password: "eupassword",
 *   table: "europe_tweets", locations: ["europe"],
 * }));
 * const res = await fetch(`${europeApi.url}/tweets?limit=5`);
 * ```
 */
export async function startTweetsApi(
  node: Node,
  options: TweetsApiOptions,
): Promise<TweetsApi> {
  const name = options.name;
  if (!/^[a-z_][a-z0-9_]*$/i.test(name ?? "")) {
    throw new WorkshopError("INVALID_SETTING", `Invalid tweets API name "${name}"`, {
      fix: "Use letters, digits and underscores, starting with a letter (europe_api)",
    });
  }
  const region = getRegion(options.region ?? node.region).id;
  const database = options.database ?? node.database;
  const table = options.table ?? "tweets";
  if (!/^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$/i.test(table)) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Invalid table "${table}" for tweets API "${name}"`,
      {
        fix:
          "Name a table as table or schema.table (letters, digits, underscores), e.g. europe_tweets",
      },
    );
  }
  const locations = [...(options.locations ?? [])];
  const routes = compileRoutes(options.routes ?? []);
  const where = `database "${database}" on node "${node.name}"`;
  const address = await node.cluster.route(region, node);
  const sql = connect(address, options.user, options.password, {
    database,
    max: 4,
    applicationName: name,
  });
  try {
    await checkAccess(sql, { name, table, user: options.user, where });
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw error;
  }

  let requests = 0;
  const context = { sql, table, locations, name, routes };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => {
      requests++;
      return handleRequest(request, context);
    },
  );
  server.unref(); // a forgotten API never keeps the process alive
  const listen: Address = { host: "127.0.0.1", port: server.addr.port };
  const url = `http://${listen.host}:${listen.port}`;
  let stopping: Promise<void> | undefined;
  const api: TweetsApi = {
    name,
    region,
    address: listen,
    url,
    node,
    database,
    user: options.user,
    table,
    locations,
    get requests() {
      return requests;
    },
    stop() {
      stopping ??= (async () => {
        await server.shutdown().catch(() => {});
        await sql.end({ timeout: 1 }).catch(() => {});
      })();
      return stopping;
    },
  };
  const row = () => ({
    name,
    region,
    url,
    node: node.name,
    database,
    user: options.user,
    table,
    locations: locations.join(", ") || "(any)",
  });
  Object.defineProperty(api, Symbol.for("Jupyter.display"), {
    value: () => ({
      "text/html": htmlTable([row()]),
      "text/plain": Object.values(row()).join("\t"),
    }),
  });
  return api;
}

async function checkAccess(
  sql: Sql,
  o: { name: string; table: string; user: string; where: string },
): Promise<void> {
  let check;
  try {
    [check] = await sql`
      SELECT to_regclass(${o.table}) IS NOT NULL AS present,
             CASE WHEN to_regclass(${o.table}) IS NULL THEN NULL
                  ELSE has_table_privilege(${o.table}, 'SELECT') END AS can_select,
             CASE WHEN to_regclass(${o.table}) IS NULL THEN NULL
                  ELSE has_table_privilege(${o.table}, 'INSERT') END AS can_insert,
             (SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class
               WHERE relkind IN ('r', 'p', 'f') AND relnamespace = 'public'::regnamespace) AS tables`;
  } catch (error) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot start tweets API "${o.name}": logging in to ${o.where} as "${o.user}" failed: ${
        (error as Error).message
      }`,
      {
        fix: "Check database, user and password: the role needs LOGIN and CONNECT on the database",
        cause: error,
      },
    );
  }
  if (!check.present) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot start tweets API "${o.name}": no table "${o.table}" in ${o.where}`,
      { fix: `Create it first, or set table to one of: ${check.tables ?? "(no tables)"}` },
    );
  }
  const missing = [!check.can_select && "SELECT", !check.can_insert && "INSERT"].filter(Boolean);
  if (missing.length) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot start tweets API "${o.name}": role "${o.user}" lacks ${
        missing.join(" and ")
      } on "${o.table}" in ${o.where}`,
      { fix: `GRANT ${missing.join(", ")} ON ${o.table} TO ${o.user} (as the table's owner)` },
    );
  }
}
