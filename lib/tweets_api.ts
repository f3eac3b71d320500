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
 * Every error is JSON `{ "error": "..." }` saying what was wrong and what to
 * send instead: 400 (not JSON, a bad id or limit), 404 (no such tweet or
 * route), 405 (wrong method), 413 (body over 16 KiB), 422 (a field is
 * missing or invalid), 500/503 (the database failed). Input only ever
 * reaches SQL as a bound parameter.
 *
 * Users in other regions call an API through `cluster.routeToService()`,
 * which adds the simulated round trip; {@link apiClient} and
 * {@link apiLatencyFromRegions} do that for them.
 *
 * @module
 */

import type { Cluster, ClusterService } from "./cluster.ts";
import { settings } from "./config.ts";
import { htmlTable } from "./display.ts";
import { type Figure, renderPlot } from "./plot.ts";
import { simulatedLatencyNote } from "./plot_latency.ts";
import { WorkshopError } from "./errors.ts";
import { connect, type Node, type Sql } from "./node.ts";
import type { Address } from "./providers/provider.ts";
import type { RegionLatencyRow } from "./region_latency.ts";
import { getRegion, type RegionId } from "./regions.ts";

/** One tweet, as the APIs return it. */
export interface Tweet {
  id: number;
  location: string;
  text: string;
  owner_id: number;
  like_count: number;
}

/** An extra endpoint for {@link TweetsApiOptions.routes}. */
export interface TweetsRoute {
  /** HTTP method. */
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Path pattern with `:name` segments, e.g. `/tweets/:id/like`. */
  path: string;
  /** Answers the request; throw an {@link ApiError} for a 4xx answer. */
  handle(request: TweetsRequest): Promise<TweetsReply> | TweetsReply;
}

/** What a {@link TweetsRoute} handler receives. */
export interface TweetsRequest {
  /** Values of the `:name` segments of the path. */
  params: Record<string, string>;
  /** Query string parameters. */
  query: URLSearchParams;
  /** Parsed JSON body (undefined when the request has none; a body that is not JSON answers 400). */
  body: unknown;
  /** The API's database client (logged in as the API's role). */
  sql: Sql;
  /** The table the API serves. */
  table: string;
}

/** A handler's answer: a status (default 200) and a JSON body. */
export interface TweetsReply {
  /** HTTP status. @default 200 */
  status?: number;
  /** Sent as JSON. */
  body: unknown;
}

/**
 * An error a handler throws to answer with a 4xx status and `{ error }`.
 *
 * @example
 * ```ts
 * throw new ApiError(404, "No tweet with id 7 in us_tweets");
 * ```
 */
export class ApiError extends Error {
  /** HTTP status to answer with. */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

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

/** Largest `limit` of `GET /tweets`. */
export const MAX_LIMIT = 1000;
/** Longest tweet text, in characters. */
export const MAX_TEXT = 280;
/** Largest request body, in bytes. */
export const MAX_BODY_BYTES = 16 * 1024;
const INT4_MAX = 2_147_483_647;
const COLUMNS = ["id", "location", "text", "owner_id", "like_count"];
const POST_FIELDS = ["text", "owner_id", "location"];

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
  const routes = (options.routes ?? []).map((r) => ({
    ...r,
    pattern: new URLPattern({ pathname: r.path }),
  }));
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
  const context = { sql, table, locations, name };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      requests++;
      try {
        return await answer(request, context, routes);
      } catch (error) {
        return errorResponse(error, table);
      }
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

interface Context {
  sql: Sql;
  table: string;
  locations: string[];
  name: string;
}

async function answer(
  request: Request,
  c: Context,
  routes: (TweetsRoute & { pattern: URLPattern })[],
): Promise<Response> {
  const url = new URL(request.url);
  const method = request.method.toUpperCase();
  for (const route of routes) {
    const match = route.pattern.exec({ pathname: url.pathname });
    if (!match || route.method !== method) continue;
    const body = method === "GET" || method === "DELETE"
      ? undefined
      : await readJson(request, { optional: true });
    const reply = await route.handle({
      params: Object.fromEntries(
        Object.entries(match.pathname.groups).map(([k, v]) => [k, v ?? ""]),
      ),
      query: url.searchParams,
      body,
      sql: c.sql,
      table: c.table,
    });
    return json(reply.status ?? 200, reply.body);
  }
  const path = url.pathname.replace(/\/+$/, "") || "/";
  if (path === "/tweets") {
    if (method === "GET") return json(200, await listTweets(c, url.searchParams));
    if (method === "POST") {
      const tweet = await postTweet(c, await readJson(request));
      return json(201, tweet, { location: `/tweets/${tweet.id}` });
    }
    return notAllowed(method, path, "GET, POST");
  }
  const one = path.match(/^\/tweets\/([^/]+)$/);
  if (one) {
    if (method !== "GET") return notAllowed(method, path, "GET");
    const id = tweetId(decodeURIComponent(one[1]));
    const [tweet] = await c.sql`
      SELECT ${c.sql(COLUMNS)} FROM ${c.sql(c.table)} WHERE id = ${id} ORDER BY id LIMIT 1`;
    if (!tweet) throw new ApiError(404, `No tweet with id ${id} in ${c.table}`);
    return json(200, tweet);
  }
  throw new ApiError(
    404,
    `No route for ${method} ${url.pathname}; this API has GET /tweets, GET /tweets/:id, POST /tweets${
      routes.map((r) => `, ${r.method} ${r.path}`).join("")
    }`,
  );
}

async function listTweets(c: Context, query: URLSearchParams): Promise<Tweet[]> {
  const raw = query.get("limit");
  const limit = raw === null ? 20 : Number(raw);
  if (raw !== null && (!/^\d+$/.test(raw.trim()) || limit < 1 || limit > MAX_LIMIT)) {
    throw new ApiError(
      400,
      `limit must be a whole number from 1 to ${MAX_LIMIT} (got ${JSON.stringify(raw)})`,
    );
  }
  const rows = await c.sql`
    SELECT ${c.sql(COLUMNS)} FROM ${c.sql(c.table)} ORDER BY id DESC LIMIT ${limit}`;
  return rows as unknown as Tweet[];
}

async function postTweet(c: Context, body: unknown): Promise<Tweet> {
  const input = validateTweet(body, { locations: c.locations, api: `"${c.name}"` });
  const [tweet] = await c.sql`
    INSERT INTO ${c.sql(c.table)} (location, text, owner_id, like_count)
    VALUES (${input.location}, ${input.text}, ${input.owner_id}, 0)
    RETURNING ${c.sql(COLUMNS)}`;
  return tweet as unknown as Tweet;
}

/**
 * Checks a `POST /tweets` body and returns the tweet to store.
 *
 * @param body The parsed JSON body.
 * @param options `locations` the API stores (empty: any, and the body must name one) and its `api` name for messages.
 * @returns `{ text, owner_id, location }`.
 * @throws {ApiError} 400 when the body is not an object, 422 naming every bad field.
 * @example
 * ```ts
 * validateTweet({ text: "hi", owner_id: 1 }, { locations: ["europe"] }); // { text: "hi", owner_id: 1, location: "europe" }
 * ```
 */
export function validateTweet(
  body: unknown,
  options: { locations?: readonly string[]; api?: string } = {},
): { text: string; owner_id: number; location: string } {
  const locations = options.locations ?? [];
  const api = options.api ?? "this API";
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ApiError(
      400,
      `The body must be a JSON object like {"text": "...", "owner_id": 1} (got ${kindOf(body)})`,
    );
  }
  const b = body as Record<string, unknown>;
  const problems: string[] = [];
  const unknown = Object.keys(b).filter((k) => !POST_FIELDS.includes(k));
  if (unknown.length) {
    problems.push(
      `unknown field ${unknown.map((k) => `"${k}"`).join(", ")} (allowed: ${
        POST_FIELDS.join(", ")
      })`,
    );
  }
  const text = typeof b.text === "string" ? b.text.trim() : "";
  if (typeof b.text !== "string" || text.length === 0 || b.text.length > MAX_TEXT) {
    problems.push(
      `text must be a non-empty string of at most ${MAX_TEXT} characters (got ${describe(b.text)})`,
    );
  }
  const owner = b.owner_id;
  if (typeof owner !== "number" || !Number.isInteger(owner) || owner < 1 || owner > INT4_MAX) {
    problems.push(`owner_id must be a whole number from 1 to ${INT4_MAX} (got ${describe(owner)})`);
  }
  let location = locations[0] ?? "";
  if (b.location !== undefined) {
    if (typeof b.location !== "string" || b.location.length === 0) {
      problems.push(`location must be a non-empty string (got ${describe(b.location)})`);
    } else if (locations.length && !locations.includes(b.location)) {
      problems.push(
        `location "${b.location}" is not stored by ${api}, which stores ${
          locations.map((l) => `"${l}"`).join(", ")
        }: post it to the API of that region, or leave location out`,
      );
    } else location = b.location;
  } else if (!locations.length) {
    problems.push(`location is required here (for example "europe" or "usa")`);
  }
  if (problems.length) throw new ApiError(422, `Invalid tweet: ${problems.join("; ")}`);
  return { text: b.text as string, owner_id: owner as number, location };
}

/**
 * Parses a tweet id from a path segment.
 *
 * @throws {ApiError} 400 unless it is a whole number from 1 to 2147483647.
 * @example
 * ```ts
 * tweetId("42"); // 42
 * ```
 */
export function tweetId(raw: string): number {
  const id = Number(raw);
  if (!/^\d+$/.test(raw) || id < 1 || id > INT4_MAX) {
    throw new ApiError(
      400,
      `A tweet id is a whole number from 1 to ${INT4_MAX} (got ${JSON.stringify(raw)})`,
    );
  }
  return id;
}

async function readJson(
  request: Request,
  options: { optional?: boolean } = {},
): Promise<unknown> {
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > MAX_BODY_BYTES) {
    throw new ApiError(413, `The body is ${declared} bytes; the limit is ${MAX_BODY_BYTES}`);
  }
  const text = await request.text();
  if (new TextEncoder().encode(text).length > MAX_BODY_BYTES) {
    throw new ApiError(413, `The body is over the limit of ${MAX_BODY_BYTES} bytes`);
  }
  if (text.trim() === "") {
    if (options.optional) return undefined;
    throw new ApiError(400, `The body is empty; send JSON like {"text": "...", "owner_id": 1}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError(
      400,
      `The body is not valid JSON (${
        (error as Error).message
      }); send JSON like {"text": "...", "owner_id": 1}`,
    );
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return Response.json(body, { status, headers });
}

function notAllowed(method: string, path: string, allow: string): Response {
  return json(405, { error: `${method} is not allowed on ${path}; use ${allow}` }, { allow });
}

function errorResponse(error: unknown, table: string): Response {
  if (error instanceof ApiError) return json(error.status, { error: error.message });
  const e = error as { code?: string; message?: string };
  const code = typeof e.code === "string" ? e.code : "";
  if (/^(08|57P0)/.test(code) || /ECONNREFUSED|ECONNRESET|CONNECT_TIMEOUT|CONNECTION_/.test(code)) {
    return json(503, { error: `The database of this API is unavailable: ${e.message ?? code}` });
  }
  if (code.startsWith("23") || code === "22001") {
    return json(422, { error: `The database refused the tweet: ${e.message}` });
  }
  if (code === "42501") {
    return json(403, { error: `The API's role may not do this on ${table}: ${e.message}` });
  }
  return json(500, { error: `Database error: ${e.message ?? String(error)}` });
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** One answer from an {@link ApiClient}. */
export interface ApiReply<T = unknown> {
  /** HTTP status. */
  status: number;
  /** Parsed JSON body. */
  body: T;
  /** Time from sending the request to reading the whole answer, in ms. */
  ms: number;
}

/** A user in one region calling one API (through the simulated latency). */
export interface ApiClient extends AsyncDisposable {
  /** The API's service name. */
  readonly service: string;
  /** Region the user sits in. */
  readonly from: RegionId;
  /** Base URL the user calls (a delay proxy across regions). */
  readonly url: string;
  /** Sends a request: an object body goes as JSON, a string body as it is (to try malformed input). */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<ApiReply<T>>;
  /** `GET path`. */
  get<T = unknown>(path: string): Promise<ApiReply<T>>;
  /** `POST path` with a JSON body. */
  post<T = unknown>(path: string, body: unknown): Promise<ApiReply<T>>;
  /** Closes the user's connections. Idempotent. */
  close(): void;
}

/** Options for {@link apiClient}. */
export interface ApiClientOptions {
  /** Service name of the API, e.g. "europe_api". */
  service: string;
  /** Region the user sits in. @default the API's region */
  from?: RegionId;
}

/**
 * A user in region `from` calling a cluster's API. Requests cross the
 * simulated latency between the user's region and the API's; the
 * connection is kept alive between requests, like a browser's.
 *
 * @throws {WorkshopError} `UNKNOWN_NODE` when the cluster has no such service.
 * @example
 * ```ts
 * const berlin = await apiClient(cluster, { service: "europe_api", from: "eu-central-1" });
 * const { status, body } = await berlin.post("/tweets", { text: "Servus", owner_id: 7 });
 * berlin.close();
 * ```
 */
export async function apiClient(cluster: Cluster, options: ApiClientOptions): Promise<ApiClient> {
  const service = cluster.service(options.service);
  const from = getRegion(options.from ?? service.region).id;
  const address = await cluster.routeToService(from, service.name);
  const url = `http://${address.host}:${address.port}`;
  const http = Deno.createHttpClient({});
  let closed = false;
  const request = async <T>(method: string, path: string, body?: unknown) => {
    if (closed) {
      throw new WorkshopError("CLUSTER_STOPPED", `The client of "${service.name}" is closed`, {
        fix: "Make a new one with apiClient()",
      });
    }
    const started = performance.now();
    const init: RequestInit & { client: Deno.HttpClient } = {
      method,
      client: http,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    };
    const response = await fetch(`${url}${path}`, init);
    const text = await response.text();
    const ms = performance.now() - started;
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body: parsed as T, ms };
  };
  const close = () => {
    if (closed) return;
    closed = true;
    http.close();
  };
  return {
    service: service.name,
    from,
    url,
    request,
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
    close,
    [Symbol.asyncDispose]: () => Promise.resolve(close()),
  };
}

/** Options for {@link apiLatencyFromRegions}. */
export interface ApiLatencyOptions {
  /** Service name of the API. */
  service: string;
  /** Path requested with GET. @default "/tweets?limit=20" */
  path?: string;
  /** User regions. @default the regions of the cluster's nodes */
  regions?: RegionId[];
  /** Measurements per region after one warm-up request. @default 5 */
  repeat?: number;
  /** Step label of the rows (the chart's panels). @default the service name */
  step?: string;
}

/**
 * Users in each region call `GET path` on an API; returns the median
 * latency per region, ready for `regionLatencyPlot()`.
 *
 * @throws {Error} when a request does not answer 2xx (a latency of an error is no latency).
 * @example
 * ```ts
 * const rows = await apiLatencyFromRegions(cluster, { service: "europe_api", regions: ["eu-central-1", "us-east-1"] });
 * await show(regionLatencyPlot(rows));
 * ```
 */
export async function apiLatencyFromRegions(
  cluster: Cluster,
  options: ApiLatencyOptions,
): Promise<RegionLatencyRow[]> {
  const path = options.path ?? "/tweets?limit=20";
  const regions = options.regions ?? [...new Set(cluster.nodes.map((n) => n.region))];
  const repeat = options.repeat ?? 5;
  const rows: RegionLatencyRow[] = [];
  for (const region of regions) {
    const user = await apiClient(cluster, { service: options.service, from: region });
    try {
      const samples: number[] = [];
      for (let i = 0; i <= repeat; i++) {
        const reply = await user.get<{ error?: string }>(path);
        if (reply.status < 200 || reply.status > 299) {
          throw new Error(
            `GET ${path} on "${options.service}" from ${region} answered ${reply.status}: ${
              reply.body?.error ?? JSON.stringify(reply.body)
            }`,
          );
        }
        if (i > 0) samples.push(reply.ms);
      }
      const sorted = [...samples].sort((a, b) => a - b);
      rows.push({
        region,
        step: options.step ?? options.service,
        query: `GET ${path}`,
        ms: sorted[Math.floor((sorted.length - 1) / 2)],
        samples,
        latencyScale: settings().latencyScale,
      });
    } finally {
      user.close();
    }
  }
  return rows;
}

/** Options for {@link apiLatencyPlot}. */
export interface ApiLatencyPlotOptions {
  /** Title above the chart. */
  title?: string;
  /** Line under the title. @default the simulated-latency note */
  subtitle?: string;
}

/**
 * Median latency per API, one panel per user region: who waits for what.
 *
 * @param rows Rows from {@link apiLatencyFromRegions} (the step is the API).
 * @example
 * ```ts
 * await show(apiLatencyPlot(rows, { title: "GET /tweets from each region" }));
 * ```
 */
export function apiLatencyPlot(
  rows: readonly RegionLatencyRow[],
  options: ApiLatencyPlotOptions = {},
): Promise<Figure> {
  const apis = [...new Set(rows.map((r) => r.step))];
  const users = [...new Set(rows.map((r) => `users in ${getRegion(r.region).city}`))];
  const data = rows.map((r) => ({
    api: r.step,
    user: `users in ${getRegion(r.region).city}`,
    ms: r.ms,
  }));
  const max = Math.max(1, ...data.map((d) => d.ms));
  const scale = rows[0]?.latencyScale ?? settings().latencyScale;
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(scale),
    height: 50 + users.length * (apis.length * 22 + 14),
    marginLeft: 90,
    marginRight: 150,
    x: { label: "median latency (ms)", grid: true, domain: [0, max * 1.2] },
    y: { label: null, domain: apis },
    fy: { label: null, domain: users },
    color: { legend: true, label: "API", domain: apis },
    marks: [
      Plot.barX(data, { fy: "user", y: "api", x: "ms", fill: "api" }),
      Plot.text(data, {
        fy: "user",
        y: "api",
        x: "ms",
        text: (d: { ms: number }) => `${d.ms.toFixed(1)} ms`,
        textAnchor: "start",
        dx: 4,
      }),
      Plot.ruleX([0]),
    ],
  }));
}
