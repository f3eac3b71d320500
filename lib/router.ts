/**
 * Read/write routing between a primary and its replicas, as the source's
 * Django app does it, plus the LSN check that keeps a user from reading
 * older data than they wrote.
 *
 * - Within one request: reads go to a replica until the request writes;
 *   from then on everything goes to the primary (the source's router, which
 *   keeps `write_happened` in a thread-local; here AsyncLocalStorage plays
 *   the thread-local's part, so the state is per request).
 * - Across requests (mode "lsn"): after a request that wrote, the primary's
 *   `pg_current_wal_lsn()` is stored for the user in Redis ({@link LsnCache},
 *   keys expire); the next request of that user reads from a replica only if
 *   `pg_last_wal_replay_lsn() >= stored` there, else from the primary (or
 *   after waiting up to `waitMs`).
 * - A replica that fails (stopped, unreachable) is skipped for
 *   `retryAfterMs`; reads go to the primary and no error reaches the caller.
 *
 * Every statement's routing decision is logged with its reason
 * ({@link Router.log}), so a notebook can show which node served what.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { WorkshopError } from "./errors.ts";
import { connect, type Node, type Sql } from "./node.ts";
import type { RegionId } from "./regions.ts";
import type { RedisClient, RedisService } from "./redis.ts";

/**
 * How reads are routed.
 * - "primary": everything on the primary (no replica).
 * - "naive": the source's per-request router: replica until the request writes.
 * - "lsn": "naive" plus the cross-request check against the user's last write LSN.
 */
export type RoutingMode = "primary" | "naive" | "lsn";

/**
 * Compares a replica's LSN with the user's stored LSN in application code;
 * returns whether the replica is fresh enough.
 */
export type LsnComparator = (replicaLsn: string, storedLsn: string) => boolean;

/**
 * How "is the replica fresh enough for this user" is decided in mode "lsn".
 * - "replay" (right): `pg_last_wal_replay_lsn() >= $1::pg_lsn` on the replica.
 * - "receive" (a bug): `pg_last_wal_receive_lsn() >= $1::pg_lsn`: received WAL is not yet visible.
 * - a function: the replay LSN is fetched as text and compared in application code.
 */
export type Freshness = "replay" | "receive" | LsnComparator;

/** Options for {@link createRouter}. */
export interface RouterOptions {
  /** The primary (all writes). */
  primary: Node;
  /** Replicas, in order of preference (nearest first). @default [] */
  replicas?: Node[];
  /** How reads are routed. @default "lsn" when a cache is given, else "naive" */
  mode?: RoutingMode;
  /** Where users' last-write LSNs live; required for mode "lsn". */
  cache?: LsnCache;
  /** How freshness is decided in mode "lsn". @default "replay" */
  freshness?: Freshness;
  /** In mode "lsn", wait up to this long for a lagging replica before reading from the primary. @default 0 */
  waitMs?: number;
  /** After a replica fails, skip it for this long before trying again. @default 500 */
  retryAfterMs?: number;
  /** Region the application runs in; crossing regions adds simulated latency. @default the primary's region */
  from?: RegionId;
  /** Connections per node. @default 8 */
  poolSize?: number;
  /** Decisions kept in {@link Router.log}. @default 5000 */
  logLimit?: number;
}

/** Who a request is for. */
export interface RequestInfo {
  /** The user (key of the LSN cache). Without one, no LSN is stored or checked. */
  user?: string;
  /** A label shown in the log, e.g. "POST /things/1". */
  label?: string;
}

/** One routing decision: a statement and the node that served it. */
export interface RouteDecision {
  /** Request number (1, 2, ...). */
  request: number;
  /** Request label. */
  label: string;
  /** The user, if any. */
  user: string;
  /** Statement number within the request (1, 2, ...). */
  seq: number;
  /** What ran: a read, a write, a freshness check, or the LSN bookkeeping. */
  kind: "read" | "write" | "check" | "store-lsn";
  /** The statement, shortened. */
  statement: string;
  /** Name of the node that served it. */
  node: string;
  /** "primary" or "replica". */
  target: "primary" | "replica";
  /** Why it went there. */
  reason: string;
  /** ms since the router was created. */
  t: number;
  /** How long it took, in ms. */
  ms: number;
}

/** A request's handle: the statements it runs go through the router. */
export interface RequestDb {
  /** Runs a read (tagged template). */
  read(strings: TemplateStringsArray, ...values: unknown[]): Promise<Record<string, unknown>[]>;
  /** Runs a write (tagged template); the rest of the request uses the primary. */
  write(strings: TemplateStringsArray, ...values: unknown[]): Promise<Record<string, unknown>[]>;
  /** Whether this request wrote so far. */
  readonly wrote: boolean;
  /** This request's decisions so far. */
  readonly decisions: RouteDecision[];
}

interface RequestState {
  id: number;
  info: RequestInfo;
  wrote: boolean;
  seq: number;
  decisions: RouteDecision[];
  /** The replica chosen for reads (decided at the first read), or null for the primary. */
  choice?: { node: Node | null; reason: string };
}

/**
 * Creates a router. Close it with {@link Router.close} (or `await using`).
 *
 * @throws {WorkshopError} `INVALID_SETTING` for mode "lsn" without a cache.
 * @example
 * ```ts
 * const cache = await lsnCache(redis, { ttlSeconds: 30 });
 * await using router = createRouter({ primary, replicas: [replica], cache });
 * await router.request({ user: "alice" }, async (db) => {
 *   await db.write`UPDATE profile SET name = 'Alice' WHERE user_id = 'alice'`;
 * });
 * await router.request({ user: "alice" }, (db) => db.read`SELECT name FROM profile WHERE user_id = 'alice'`);
 * // the read went to the replica only if it had replayed alice's write
 * ```
 */
export function createRouter(options: RouterOptions): Router {
  return new Router(options);
}

/**
 * Routes a request's statements; see the module documentation. Get one from
 * {@link createRouter}.
 *
 * @example
 * ```ts
 * await using router = createRouter({ primary: db, replicas: [replica], mode: "naive" });
 * await router.request({ label: "POST /things/1" }, async () => {
 *   await router.read`SELECT * FROM app_thing WHERE id = 1`; // replica
 *   await router.write`UPDATE app_thing SET color = 'blue' WHERE id = 1`; // primary
 *   await router.read`SELECT * FROM app_thing WHERE id = 1`; // primary
 * });
 * router.log.map((d) => d.node); // ["replica", "db", "db"]
 * ```
 */
export class Router implements AsyncDisposable {
  /** The primary. */
  readonly primary: Node;
  /** The replicas, in order of preference. */
  readonly replicas: readonly Node[];
  /** How reads are routed. */
  readonly mode: RoutingMode;
  /** The LSN cache (mode "lsn"). */
  readonly cache?: LsnCache;
  /** How freshness is decided. */
  readonly freshness: Freshness;
  /** Routing decisions, oldest first (at most `logLimit`). */
  readonly log: RouteDecision[] = [];

  #options: RouterOptions;
  #storage = new AsyncLocalStorage<RequestState>();
  #clients = new Map<Node, Promise<Sql>>();
  #downUntil = new Map<Node, number>();
  #requests = 0;
  #started = performance.now();
  #closed = false;

  /** @internal Use {@link createRouter}. */
  constructor(options: RouterOptions) {
    this.#options = options;
    this.primary = options.primary;
    this.replicas = options.replicas ?? [];
    this.cache = options.cache;
    this.mode = options.mode ?? (options.cache ? "lsn" : "naive");
    this.freshness = options.freshness ?? "replay";
    if (this.mode === "lsn" && !this.cache) {
      throw new WorkshopError("INVALID_SETTING", 'Router mode "lsn" needs an LSN cache', {
        fix: 'Pass cache: await lsnCache(redis), or use mode "naive"',
      });
    }
  }

  /**
   * Runs `handler` as one request: its statements (through the `db` it gets,
   * or {@link Router.read}/{@link Router.write} anywhere inside it) share the
   * request's routing state. After a request that wrote, in mode "lsn", the
   * primary's WAL position is stored for the user.
   *
   * @example
   * ```ts
   * const thing = await router.request({ user: "alice", label: "GET /things/1" },
   *   (db) => db.read`SELECT * FROM app_thing WHERE id = 1`);
   * ```
   */
  async request<T>(info: RequestInfo, handler: (db: RequestDb) => Promise<T>): Promise<T> {
    this.#assertOpen();
    const state: RequestState = { id: ++this.#requests, info, wrote: false, seq: 0, decisions: [] };
    const db: RequestDb = {
      read: (strings, ...values) => this.#run(state, "read", strings, values),
      write: (strings, ...values) => this.#run(state, "write", strings, values),
      get wrote() {
        return state.wrote;
      },
      decisions: state.decisions,
    };
    try {
      return await this.#storage.run(state, () => handler(db));
    } finally {
      if (state.wrote && this.mode === "lsn" && info.user !== undefined) {
        await this.#storeLsn(state);
      }
    }
  }

  /**
   * A read in the current request (the request is found through
   * AsyncLocalStorage, the way Django's router finds its thread-local).
   *
   * @throws {WorkshopError} `INVALID_SETTING` outside {@link Router.request}.
   */
  read(strings: TemplateStringsArray, ...values: unknown[]): Promise<Record<string, unknown>[]> {
    return this.#run(this.#current(), "read", strings, values);
  }

  /** A write in the current request; see {@link Router.read}. */
  write(strings: TemplateStringsArray, ...values: unknown[]): Promise<Record<string, unknown>[]> {
    return this.#run(this.#current(), "write", strings, values);
  }

  /** Whether a replica is being skipped after a failure, right now. */
  isDown(replica: Node): boolean {
    return (this.#downUntil.get(replica) ?? 0) > performance.now();
  }

  /** Forgets the log. */
  clearLog(): void {
    this.log.length = 0;
  }

  /** ms since the router was created (the `t` of decisions). */
  elapsed(): number {
    return performance.now() - this.#started;
  }

  /** Closes the router's connections. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const clients = await Promise.allSettled(this.#clients.values());
    this.#clients.clear();
    await Promise.all(
      clients.map((c) =>
        c.status === "fulfilled" ? c.value.end({ timeout: 1 }).catch(() => {}) : 0
      ),
    );
  }

  /** Same as {@link Router.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #current(): RequestState {
    const state = this.#storage.getStore();
    if (!state) {
      throw new WorkshopError("INVALID_SETTING", "router.read/write called outside a request", {
        fix: "Run it inside router.request({ user }, async (db) => { ... })",
      });
    }
    return state;
  }

  async #run(
    state: RequestState,
    kind: "read" | "write",
    strings: TemplateStringsArray,
    values: unknown[],
  ): Promise<Record<string, unknown>[]> {
    this.#assertOpen();
    const text = statementText(strings);
    if (kind === "write" || state.wrote) {
      const reason = kind === "write"
        ? "writes always go to the primary"
        : "read after a write in this request";
      state.wrote = true;
      return await this.#exec(
        state,
        kind,
        text,
        this.primary,
        "primary",
        reason,
        (sql) => sql(strings, ...values),
      );
    }
    state.choice ??= await this.#choose(state);
    const { node, reason } = state.choice;
    if (!node) {
      return await this.#exec(
        state,
        kind,
        text,
        this.primary,
        "primary",
        reason,
        (sql) => sql(strings, ...values),
      );
    }
    try {
      return await this.#exec(
        state,
        kind,
        text,
        node,
        "replica",
        reason,
        (sql) => sql(strings, ...values),
      );
    } catch (error) {
      const why = this.#failed(node, error);
      state.choice = {
        node: null,
        reason: `${node.name} failed (${why}); read retried on the primary`,
      };
      return await this.#exec(
        state,
        kind,
        text,
        this.primary,
        "primary",
        state.choice.reason,
        (sql) => sql(strings, ...values),
      );
    }
  }

  /** Picks the node for this request's reads (before any write). */
  async #choose(state: RequestState): Promise<{ node: Node | null; reason: string }> {
    if (this.mode === "primary") {
      return { node: null, reason: "router sends everything to the primary" };
    }
    const candidates = this.replicas.filter((r) => !this.isDown(r));
    if (candidates.length === 0) {
      return {
        node: null,
        reason: this.replicas.length
          ? "no replica available (recently failed)"
          : "no replica configured",
      };
    }
    if (this.mode === "naive" || state.info.user === undefined) {
      return { node: candidates[0], reason: "read before any write in this request" };
    }
    let stored: string | null;
    try {
      stored = await this.cache!.get(state.info.user);
    } catch (error) {
      // Without the user's last write we cannot tell whether a replica is
      // fresh enough: the primary is always safe.
      return {
        node: null,
        reason: `LSN cache unavailable (${(error as Error).message.slice(0, 60)})`,
      };
    }
    if (!stored) {
      return { node: candidates[0], reason: `no recent write by ${state.info.user} in the cache` };
    }
    const waitStarted = performance.now();
    const deadline = waitStarted + (this.#options.waitMs ?? 0);
    let last = "";
    for (let attempt = 0;; attempt++) {
      for (const replica of candidates) {
        if (this.isDown(replica)) continue;
        try {
          const verdict = await this.#fresh(state, replica, stored);
          if (verdict.fresh) {
            return {
              node: replica,
              reason: `${verdict.what} ${verdict.lsn} >= last write ${stored}` +
                (attempt > 0 ? ` (waited ${Math.round(performance.now() - waitStarted)} ms)` : ""),
            };
          }
          last = `${replica.name} behind: ${verdict.what} ${verdict.lsn} < last write ${stored}`;
        } catch (error) {
          last = `${replica.name} failed (${this.#failed(replica, error)})`;
        }
      }
      if (performance.now() >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return { node: null, reason: last || "no replica available" };
  }

  async #fresh(
    state: RequestState,
    replica: Node,
    stored: string,
  ): Promise<{ fresh: boolean; lsn: string; what: string }> {
    const freshness = this.freshness;
    if (typeof freshness === "function") {
      const [row] = await this.#exec(
        state,
        "check",
        "SELECT pg_last_wal_replay_lsn()",
        replica,
        "replica",
        "freshness check (compared in application code)",
        (sql) => sql`SELECT pg_last_wal_replay_lsn()::text AS lsn`,
      );
      const lsn = (row?.lsn as string | null) ?? "0/0";
      return { fresh: freshness(lsn, stored), lsn, what: "replay (app compare)" };
    }
    const fn = freshness === "receive" ? "pg_last_wal_receive_lsn" : "pg_last_wal_replay_lsn";
    const [row] = await this.#exec(
      state,
      "check",
      `SELECT ${fn}() >= $1::pg_lsn`,
      replica,
      "replica",
      "freshness check",
      (sql) =>
        sql`SELECT ${sql.unsafe(fn)}() >= ${stored}::pg_lsn AS fresh, ${
          sql.unsafe(fn)
        }()::text AS lsn`,
    );
    return {
      fresh: row?.fresh === true,
      lsn: (row?.lsn as string | null) ?? "null",
      what: freshness === "receive" ? "receive" : "replay",
    };
  }

  async #storeLsn(state: RequestState): Promise<void> {
    const [row] = await this.#exec(
      state,
      "store-lsn",
      "SELECT pg_current_wal_lsn()",
      this.primary,
      "primary",
      `remember ${state.info.user}'s last write in Redis`,
      (sql) => sql`SELECT pg_current_wal_lsn()::text AS lsn`,
    );
    await this.cache!.remember(state.info.user!, row.lsn as string);
  }

  async #exec(
    state: RequestState,
    kind: RouteDecision["kind"],
    statement: string,
    node: Node,
    target: "primary" | "replica",
    reason: string,
    run: (sql: Sql) => Promise<unknown>,
  ): Promise<Record<string, unknown>[]> {
    const t = this.elapsed();
    const sql = await this.#client(node);
    const rows = await run(sql) as Record<string, unknown>[];
    const decision: RouteDecision = {
      request: state.id,
      label: state.info.label ?? "",
      user: state.info.user ?? "",
      seq: ++state.seq,
      kind,
      statement,
      node: node.name,
      target,
      reason,
      t,
      ms: this.elapsed() - t,
    };
    state.decisions.push(decision);
    this.log.push(decision);
    if (this.log.length > (this.#options.logLimit ?? 5000)) this.log.shift();
    return [...rows];
  }

  #client(node: Node): Promise<Sql> {
    let client = this.#clients.get(node);
    if (!client) {
      client = node.cluster.route(this.#options.from ?? this.primary.region, node).then((address) =>
        connect(address, node.user, node.password, {
          database: node.database,
          max: this.#options.poolSize ?? 8,
          applicationName: "pgsw-router",
        })
      );
      this.#clients.set(node, client);
    }
    return client;
  }

  /** Marks a replica down when the error says it is unreachable; returns a short description. */
  #failed(replica: Node, error: unknown): string {
    const code = String((error as { code?: unknown })?.code ?? "");
    if (isUnavailable(code)) {
      this.#downUntil.set(replica, performance.now() + (this.#options.retryAfterMs ?? 500));
      // Start over with a new pool when the replica is tried again: postgres.js
      // backs off exponentially across a pool's failed reconnects (up to 20 s),
      // which would hold the first reads after the replica is back.
      const pool = this.#clients.get(replica);
      this.#clients.delete(replica);
      pool?.then((sql) => sql.end({ timeout: 1 })).catch(() => {});
    }
    return code || (error as Error)?.message?.slice(0, 60) || "error";
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new WorkshopError("CLUSTER_STOPPED", "The router is closed", {
        fix: "Create a new one with createRouter()",
      });
    }
  }
}

/** Errors that mean "this server cannot serve now" rather than "this statement is wrong". */
function isUnavailable(code: string): boolean {
  return /^(ECONN|EPIPE|ETIMEDOUT|CONNECT|CONNECTION_)/.test(code) || code.startsWith("08") ||
    code.startsWith("57P");
}

function statementText(strings: TemplateStringsArray): string {
  const text = strings.reduce((acc, s, i) => acc + (i ? `$${i}` : "") + s, "").replace(/\s+/g, " ")
    .trim();
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Options for {@link lsnCache}. */
export interface LsnCacheOptions {
  /** Seconds a stored LSN lives; the cache never grows past the users active in this window. @default 30 */
  ttlSeconds?: number;
  /** Key prefix after the service's prefix. @default "lsn:" */
  prefix?: string;
}

/**
 * Users' last-write LSNs in Redis: `SET <prefix><user> <lsn> EX <ttl>`,
 * keeping the larger LSN when two requests of one user race (a small Lua
 * script compares the LSNs as numbers, never as text).
 */
export class LsnCache {
  /** Seconds a stored LSN lives. */
  readonly ttlSeconds: number;
  /** Full key prefix. */
  readonly prefix: string;
  #client: RedisClient;

  /** @internal Use {@link lsnCache}. */
  constructor(client: RedisClient, prefix: string, ttlSeconds: number) {
    this.#client = client;
    this.prefix = prefix;
    this.ttlSeconds = ttlSeconds;
  }

  /** The Redis key of a user. */
  key(user: string): string {
    return `${this.prefix}${user}`;
  }

  /** Stores `lsn` for `user` (unless a larger one is stored) and renews the TTL; returns what is stored. */
  async remember(user: string, lsn: string): Promise<string> {
    return String(
      await this.#client.eval(REMEMBER_MAX_LSN, {
        keys: [this.key(user)],
        arguments: [lsn, String(this.ttlSeconds)],
      }),
    );
  }

  /** The stored LSN of `user`, or null (never wrote, or expired). */
  async get(user: string): Promise<string | null> {
    return await this.#client.get(this.key(user));
  }

  /** Seconds until the user's key expires (-2: no key). */
  async ttl(user: string): Promise<number> {
    return await this.#client.ttl(this.key(user));
  }

  /** How many users have a stored LSN now. */
  async size(): Promise<number> {
    let n = 0;
    for await (const keys of this.#client.scanIterator({ MATCH: `${this.prefix}*`, COUNT: 1000 })) {
      n += keys.length;
    }
    return n;
  }

  /** Deletes every stored LSN. */
  async clear(): Promise<void> {
    for await (const keys of this.#client.scanIterator({ MATCH: `${this.prefix}*`, COUNT: 1000 })) {
      if (keys.length > 0) await this.#client.del(keys);
    }
  }
}

/** SET the key to ARGV[1] with EX ARGV[2] unless it holds a larger LSN (then only renew the TTL). */
const REMEMBER_MAX_LSN = `
local function pos(lsn)
  local hi, lo = string.match(lsn, '^(%x+)/(%x+)$')
  return tonumber(hi, 16) * 4294967296 + tonumber(lo, 16)
end
local current = redis.call('GET', KEYS[1])
if (not current) or pos(ARGV[1]) > pos(current) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return current`;

/**
 * An LSN cache on a Redis service, with keys under the service's prefix.
 *
 * @example
 * ```ts
 * const redis = await startRedis(cluster);
 * const cache = await lsnCache(redis, { ttlSeconds: 30 });
 * await cache.remember("alice", "0/16B3748");
 * ```
 */
export async function lsnCache(
  redis: RedisService,
  options: LsnCacheOptions = {},
): Promise<LsnCache> {
  const ttl = options.ttlSeconds ?? 30;
  if (!(Number.isInteger(ttl) && ttl > 0)) {
    throw new WorkshopError("INVALID_SETTING", `Invalid LSN cache TTL ${ttl} s`, {
      fix: "Use a whole number of seconds above 0, longer than the replica lag you expect",
    });
  }
  return new LsnCache(await redis.client(), `${redis.keyPrefix}${options.prefix ?? "lsn:"}`, ttl);
}
