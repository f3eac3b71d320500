/**
 * The endpoints of a tweets API (listed in tweets_api.ts, whose
 * `startTweetsApi()` serves them over HTTP): what each answers, the input it
 * accepts, and extra routes a lesson adds.
 *
 * Every error is JSON `{ "error": "..." }` saying what was wrong and what to
 * send instead: 400 (not JSON, a bad id or limit), 404 (no such tweet or
 * route), 405 (wrong method), 413 (body over 16 KiB), 422 (a field is
 * missing or invalid), 500/503 (the database failed). Input only ever
 * reaches SQL as a bound parameter.
 *
 * @module
 */

import type { Sql } from "./node.ts";

/** One tweet, as the APIs return it. */
export interface Tweet {
  id: number;
  location: string;
  text: string;
  owner_id: number;
  like_count: number;
}

/** An extra endpoint for a tweets API (`TweetsApiOptions.routes`). */
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

/** Largest `limit` of `GET /tweets`. */
export const MAX_LIMIT = 1000;
/** Longest tweet text, in characters. */
export const MAX_TEXT = 280;
/** Largest request body, in bytes. */
export const MAX_BODY_BYTES = 16 * 1024;
const INT4_MAX = 2_147_483_647;
const COLUMNS = ["id", "location", "text", "owner_id", "like_count"];
const POST_FIELDS = ["text", "owner_id", "location"];

/** An extra route, its path compiled once: see {@link compileRoutes}. */
export type CompiledRoute = TweetsRoute & { pattern: URLPattern };

/**
 * Compiles the path patterns of extra routes (a bad pattern throws here,
 * before the API connects to its database).
 *
 * @example
 * ```ts
 * const routes = compileRoutes([{ method: "POST", path: "/tweets/:id/like", handle }]);
 * ```
 */
export function compileRoutes(routes: readonly TweetsRoute[]): CompiledRoute[] {
  return routes.map((r) => ({ ...r, pattern: new URLPattern({ pathname: r.path }) }));
}

/** What the endpoints need of their API. */
export interface EndpointContext {
  /** The API's database client. */
  sql: Sql;
  /** The table it serves. */
  table: string;
  /** Locations it stores (empty: any). */
  locations: string[];
  /** Its service name, for messages. */
  name: string;
  /** Extra routes, matched before the built-in ones. */
  routes: CompiledRoute[];
}

/**
 * Answers one HTTP request: the extra routes first, then the built-in
 * endpoints; any error becomes a JSON `{ error }` answer (never a throw).
 *
 * @example
 * ```ts
 * Deno.serve((request) => handleRequest(request, { sql, table, locations, name, routes: [] }));
 * ```
 */
export async function handleRequest(request: Request, c: EndpointContext): Promise<Response> {
  try {
    return await answer(request, c);
  } catch (error) {
    return errorResponse(error, c.table);
  }
}

async function answer(request: Request, c: EndpointContext): Promise<Response> {
  const url = new URL(request.url);
  const method = request.method.toUpperCase();
  for (const route of c.routes) {
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
      c.routes.map((r) => `, ${r.method} ${r.path}`).join("")
    }`,
  );
}

async function listTweets(c: EndpointContext, query: URLSearchParams): Promise<Tweet[]> {
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

async function postTweet(c: EndpointContext, body: unknown): Promise<Tweet> {
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
