/**
 * Redis for the lessons that cache things (the last-write LSN of each user):
 * a real `redis-server` started from the machine's binary, or an existing
 * server given by `REDIS_URL`, added to a cluster as a service so that
 * `cluster.stop()` stops it.
 *
 * The client is node-redis (`npm:redis`, the client Redis maintains), loaded
 * on first use so that lessons without Redis do not pay for it.
 *
 * | option  | environment variable | default                                   |
 * |---------|----------------------|-------------------------------------------|
 * | url     | REDIS_URL            | unset: start a private redis-server       |
 * | binary  |                      | "redis-server" on PATH                    |
 *
 * A private server listens on 127.0.0.1 on a free port with persistence off
 * (`--save '' --appendonly no`); its pid file in the run directory lets the
 * reaper stop it if this process dies.
 *
 * @module
 */

import type { RedisClientType } from "redis";
import type { Cluster, ClusterService } from "./cluster.ts";
import { WorkshopError } from "./errors.ts";
import { freePort } from "./ports.ts";
import type { RegionId } from "./regions.ts";
import { currentRun } from "./_runs.ts";

/** A connected node-redis client. */
export type RedisClient = RedisClientType;

/** Options for {@link startRedis}. */
export interface RedisOptions {
  /** Service name in the cluster. @default "redis" */
  name?: string;
  /** Region the server sits in; clients in other regions pay simulated latency. @default "eu-west-2" */
  region?: RegionId;
  /** An existing server to use instead of starting one, e.g. "redis://127.0.0.1:6379/0". @default the REDIS_URL environment variable */
  url?: string;
  /** The redis-server program. @default "redis-server" */
  binary?: string;
  /** How long the server may take to answer PING. @default 10000 */
  timeoutMs?: number;
}

/** A Redis server the cluster owns (or borrows, with `REDIS_URL`). */
export interface RedisService extends ClusterService {
  /** The server's URL as seen from this process. */
  readonly url: string;
  /** Whether the kit started the server (false for `REDIS_URL`). */
  readonly owned: boolean;
  /** Prefix for every key the kit writes, unique per cluster: `pgsw:<cluster>:`. */
  readonly keyPrefix: string;
  /**
   * A connected client from region `from` (through simulated latency when it
   * differs from the server's region). Closed when the service stops.
   */
  client(options?: { from?: RegionId }): Promise<RedisClient>;
  /** The server's version, e.g. "7.0.15". */
  version(): Promise<string>;
}

/**
 * Starts Redis for a cluster (or connects to `REDIS_URL`) and adds it to the
 * cluster as a service. Calling it again returns the running service.
 *
 * @throws {WorkshopError} `REDIS_UNAVAILABLE` when no redis-server can be
 *   started or the server at the URL does not answer; the fix names the
 *   package to install or the variable to set.
 * @example
 * ```ts
 * const redis = await startRedis(cluster);
 * const client = await redis.client();
 * await client.set(`${redis.keyPrefix}hello`, "world", { EX: 60 });
 * ```
 */
export async function startRedis(
  cluster: Cluster,
  options: RedisOptions = {},
): Promise<RedisService> {
  const name = options.name ?? "redis";
  const existing = cluster.services.find((s) => s.name === name);
  if (existing) {
    if (isRedisService(existing)) return existing;
    throw new WorkshopError(
      "DUPLICATE_NODE",
      `Cannot start Redis "${name}": a service has that name`,
      {
        fix: 'Pass another name: startRedis(cluster, { name: "cache" })',
      },
    );
  }
  const region = options.region ?? "eu-west-2";
  const url = options.url ?? (Deno.env.get("REDIS_URL")?.trim() || undefined);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const server = url
    ? await borrowServer(url, timeoutMs)
    : await spawnServer(name, options.binary ?? "redis-server", timeoutMs);
  const keyPrefix = `pgsw:${cluster.name}:`;
  const clients = new Set<RedisClient>();
  let stopped = false;
  const service: RedisService & { [REDIS]: true } = {
    [REDIS]: true,
    name,
    region,
    address: server.address,
    url: server.url,
    owned: server.owned,
    keyPrefix,
    async client(clientOptions = {}) {
      if (stopped) {
        throw new WorkshopError("CLUSTER_STOPPED", `Redis "${name}" is stopped`, {
          fix: "Start it again with startRedis(cluster)",
        });
      }
      const from = clientOptions.from ?? region;
      const address = from === region ? server.address : await cluster.routeToService(from, name);
      const client = await connectClient(urlWithAddress(server.url, address), timeoutMs);
      clients.add(client);
      return client;
    },
    async version() {
      const client = await connectClient(server.url, timeoutMs, false);
      try {
        const info = await client.info("server");
        return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
      } finally {
        client.destroy();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!server.owned) await deleteKeys(server.url, keyPrefix).catch(() => {});
      for (const client of clients) client.destroy();
      clients.clear();
      await server.stop();
    },
  };
  try {
    return cluster.addService(service);
  } catch (error) {
    await service.stop();
    throw error;
  }
}

const REDIS = Symbol.for("pgsw.redis");

function isRedisService(service: ClusterService): service is RedisService {
  return (service as unknown as Record<symbol, unknown>)[REDIS] === true;
}

interface Server {
  address: { host: string; port: number };
  url: string;
  owned: boolean;
  stop(): Promise<void>;
}

const INSTALL_FIX =
  "Install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), " +
  "or set REDIS_URL=redis://host:port to use a server that is already running";

async function spawnServer(name: string, binary: string, timeoutMs: number): Promise<Server> {
  const run = await currentRun();
  const port = await freePort();
  const dir = await Deno.makeTempDir({ dir: run.path, prefix: `redis-${name}-` });
  const logFile = `${dir}/redis.log`;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(binary, {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--dir",
        dir,
        "--logfile",
        logFile,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new WorkshopError(
      "REDIS_UNAVAILABLE",
      `Cannot start Redis: "${binary}" ${
        error instanceof Deno.errors.NotFound ? "was not found" : "could not run"
      }`,
      { fix: INSTALL_FIX, cause: error },
    );
  }
  child.unref();
  const pidFile = `${run.pidsDir}/redis-${name}-${child.pid}.pid`;
  await Deno.writeTextFile(pidFile, `${child.pid} redis-server\n`);
  let exited: Deno.CommandStatus | undefined;
  const status = child.status.then((s) => exited = s);
  const stderr = new Response(child.stderr).text().catch(() => "");
  const stop = async () => {
    child.ref();
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await status;
    clearTimeout(timer);
    await stderr;
    await Deno.remove(pidFile).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const url = `redis://127.0.0.1:${port}`;
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && !exited) {
    if (await pingOnce(url)) {
      return { address: { host: "127.0.0.1", port }, url, owned: true, stop };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const log = (await Deno.readTextFile(logFile).catch(() => "")) + (exited ? await stderr : "");
  await stop();
  throw new WorkshopError(
    "REDIS_UNAVAILABLE",
    exited
      ? `redis-server exited while starting (code ${exited.code}, port ${port})`
      : `redis-server did not answer PING within ${timeoutMs} ms (port ${port})`,
    { fix: INSTALL_FIX, details: log.trim().split("\n").slice(-10).join("\n") },
  );
}

async function borrowServer(url: string, timeoutMs: number): Promise<Server> {
  let parsed: URL;
  try {
    parsed = new URL(url);
    if (!/^rediss?:$/.test(parsed.protocol)) throw new Error("not a redis URL");
  } catch {
    throw new WorkshopError("INVALID_SETTING", `Invalid REDIS_URL "${url}"`, {
      fix: "Use redis://host:port (optionally redis://user:password@host:port/db), or unset it",
    });
  }
  try {
    const client = await connectClient(url, timeoutMs, false);
    client.destroy();
  } catch (error) {
    throw new WorkshopError(
      "REDIS_UNAVAILABLE",
      `No Redis answers at REDIS_URL ${parsed.host}: ${(error as Error).message}`,
      {
        fix:
          "Start that server, correct REDIS_URL, or unset it so the kit starts its own redis-server",
        cause: error,
      },
    );
  }
  return {
    address: { host: parsed.hostname, port: Number(parsed.port || 6379) },
    url,
    owned: false,
    stop: () => Promise.resolve(),
  };
}

async function connectClient(
  url: string,
  timeoutMs: number,
  reconnect = true,
): Promise<RedisClient> {
  const { createClient } = await import("redis");
  const client = createClient({
    url,
    socket: {
      connectTimeout: timeoutMs,
      // Reconnect a few times (a proxy restarts, a server blips), then give up
      // so that a stopped server never keeps the process alive.
      reconnectStrategy: reconnect
        ? (retries: number) => retries > 10 ? false : Math.min(50 * 2 ** retries, 1000)
        : false,
    },
  }) as unknown as RedisClient;
  // node-redis emits "error" on every failed attempt; without a listener that would crash the process.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    try {
      client.destroy();
    } catch { /* never opened */ }
    throw error;
  }
  return client;
}

async function pingOnce(url: string): Promise<boolean> {
  const { createClient } = await import("redis");
  const client = createClient({ url, socket: { connectTimeout: 1000, reconnectStrategy: false } });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    try {
      client.destroy();
    } catch { /* never opened */ }
  }
}

async function deleteKeys(url: string, prefix: string): Promise<void> {
  const client = await connectClient(url, 2_000, false);
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      if (keys.length > 0) await client.del(keys);
    }
  } finally {
    client.destroy();
  }
}

function urlWithAddress(url: string, address: { host: string; port: number }): string {
  const parsed = new URL(url);
  parsed.hostname = address.host;
  parsed.port = String(address.port);
  return parsed.toString();
}
