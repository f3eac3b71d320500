/**
 * The external provider (`WORKSHOP_PROVIDER=external`): the notebooks run on
 * PostgreSQL servers you already have, given by URL with their regions (for
 * example real servers in two cloud regions). Nothing is simulated: links
 * between regions pay the real network latency, and the charts show it.
 *
 * Each notebook node becomes a database of its own, `pgsw_<cluster>_<node>`,
 * on one of the servers, created when the node starts and dropped (`WITH
 * (FORCE)`) when it is removed or the cluster stops. So a notebook touches
 * nothing outside the databases it made, and postgres_fdw between two such
 * databases works even when both sit on one server.
 *
 * Which server a node goes to: the server named like the node; else the
 * least used server in the node's region; else the least used server.
 *
 * Servers are given in `WORKSHOP_EXTERNAL_NODES` (or `configure({ externalNodes })`):
 *
 * ```text
 * eu=postgres://postgres:secret@db-eu.example.com:5432/postgres#eu-west-2,us=postgres://postgres:secret@db-us.example.com/postgres#us-east-1
 * [{"name":"eu","url":"postgres://...","region":"eu-west-2","peerHost":"10.0.0.5","peerPort":5432}]
 * @/path/to/servers.json      (a file holding either form)
 * ```
 *
 * `name=` is optional (default `server_1`, `server_2`, ...), `#region` is
 * optional (default `eu-west-2`); percent-encode `#`, `,` and `@` inside
 * passwords. `peerHost`/`peerPort` (JSON form only) say how the servers reach
 * each other when that differs from how this machine reaches them. The URL's
 * user must be able to create databases and the postgres_fdw extension (a
 * superuser, or `rds_superuser`-like roles on managed services).
 *
 * @module
 */

import postgres from "postgres";
import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { getRegion, type RegionId } from "../regions.ts";
import { currentRun } from "../_runs.ts";
import type { Address, NodeProvider, NodeStartSpec, ProvidedNode } from "./provider.ts";

/** One server the external provider may place nodes on. */
export interface ExternalServer {
  /** Server name; a node with this name is placed on it. */
  name: string;
  /** Connection URL (`postgres://user:password@host:port/database`). */
  url: string;
  /** Region the server is in. @default "eu-west-2" */
  region: RegionId;
  /** Host the other servers use to reach this one (postgres_fdw). @default the URL's host */
  peerHost?: string;
  /** Port the other servers use to reach this one. @default the URL's port */
  peerPort?: number;
}

/** Options for {@link externalProvider}. */
export interface ExternalProviderOptions {
  /** Cluster name, part of each database name. @default "workshop" */
  clusterName?: string;
  /** The servers. @default parsed from settings().externalNodes (WORKSHOP_EXTERNAL_NODES) */
  servers?: ExternalServer[];
  /** Provider kind to report (the compose provider reuses this one). @default "external" */
  kind?: "external" | "compose";
  /** Whether links between regions get simulated latency. @default false (the latency is real) */
  simulatesLatency?: boolean;
  /** Where delay proxies listen and how servers reach them. @default loopback */
  proxyEndpoint?: () => { listenHost: string; reachableHost: string };
}

/** Where a node was placed. */
export interface Placement {
  node: string;
  server: string;
  database: string;
  region: RegionId;
}

/** An external provider, with where each node went. */
export interface ExternalProvider extends NodeProvider {
  /** The servers nodes are placed on. */
  readonly servers: readonly ExternalServer[];
  /** Node -> server placements, in start order. */
  readonly placements: readonly Placement[];
}

const FORMAT_FIX =
  "Use `name=postgres://user:password@host:5432/postgres#region,...`, a JSON array " +
  'of {"name","url","region"}, or @/path/to/file holding either';

/**
 * Parses the external server list (the `WORKSHOP_EXTERNAL_NODES` formats;
 * `@file` is read by {@link loadExternalServers}).
 *
 * @throws {WorkshopError} `INVALID_SETTING` naming the entry and the format; `UNKNOWN_REGION`.
 * @example
 * ```ts
 * parseExternalServers("eu=postgres://postgres:pw@10.0.0.5/postgres#eu-west-2");
 * // [{ name: "eu", url: "postgres://...", region: "eu-west-2" }]
 * ```
 */
export function parseExternalServers(text: string): ExternalServer[] {
  const source = text.trim();
  if (!source) return [];
  let raw: Partial<ExternalServer>[];
  if (source.startsWith("[")) {
    try {
      raw = JSON.parse(source);
    } catch (error) {
      throw new WorkshopError("INVALID_SETTING", "WORKSHOP_EXTERNAL_NODES is not valid JSON", {
        fix: FORMAT_FIX,
        details: (error as Error).message,
      });
    }
    if (!Array.isArray(raw)) {
      throw new WorkshopError("INVALID_SETTING", "WORKSHOP_EXTERNAL_NODES must be a JSON array", {
        fix: FORMAT_FIX,
      });
    }
  } else {
    raw = source.split(/[,\s]+/).filter(Boolean).map((entry) => {
      const named = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(entry);
      const rest = named ? named[2] : entry;
      const hash = rest.lastIndexOf("#");
      return {
        name: named?.[1],
        url: hash >= 0 ? rest.slice(0, hash) : rest,
        region: (hash >= 0 ? rest.slice(hash + 1) : undefined) as RegionId | undefined,
      };
    });
  }
  const servers = raw.map((entry, i) => {
    const url = String(entry?.url ?? "");
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Invalid server URL "${maskUrl(url)}" in WORKSHOP_EXTERNAL_NODES (entry ${i + 1})`,
        { fix: FORMAT_FIX },
      );
    }
    if (!/^postgres(ql)?:$/.test(parsed.protocol) || !parsed.hostname) {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Server URL "${
          maskUrl(url)
        }" in WORKSHOP_EXTERNAL_NODES is not a postgres:// URL with a host`,
        { fix: FORMAT_FIX },
      );
    }
    const name = entry.name ?? `server_${i + 1}`;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Invalid server name "${name}" in WORKSHOP_EXTERNAL_NODES`,
        {
          fix: "Use letters, digits and underscores (eu_db_1)",
        },
      );
    }
    const server: ExternalServer = { name, url, region: getRegion(entry.region ?? "eu-west-2").id };
    if (entry.peerHost) server.peerHost = String(entry.peerHost);
    if (entry.peerPort) server.peerPort = Number(entry.peerPort);
    return server;
  });
  const names = new Set<string>();
  for (const s of servers) {
    if (names.has(s.name)) {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Server name "${s.name}" appears twice in WORKSHOP_EXTERNAL_NODES`,
        {
          fix: "Give each server its own name",
        },
      );
    }
    names.add(s.name);
  }
  return servers;
}

/**
 * The servers from `text` (default: the `externalNodes` setting), reading
 * `@path` files.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when nothing is configured or the list is malformed.
 */
export async function loadExternalServers(
  text: string = settings().externalNodes,
): Promise<ExternalServer[]> {
  let source = text.trim();
  if (source.startsWith("@")) {
    const path = source.slice(1);
    source = await Deno.readTextFile(path).catch((error) => {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Cannot read WORKSHOP_EXTERNAL_NODES file "${path}"`,
        {
          fix: "Check the path after @",
          details: (error as Error).message,
        },
      );
    });
  }
  const servers = parseExternalServers(source);
  if (servers.length === 0) {
    throw new WorkshopError("INVALID_SETTING", "WORKSHOP_EXTERNAL_NODES is empty", {
      fix: `The external provider needs servers. ${FORMAT_FIX}`,
    });
  }
  return servers;
}

/**
 * Creates the external provider for one cluster. Drops databases that
 * crashed runs of this machine left on the servers.
 *
 * @example
 * ```ts
 * const provider = await externalProvider({
 *   clusterName: "demo",
 *   servers: [{ name: "eu", url: "postgres://postgres:pw@db-eu:5432/postgres", region: "eu-west-2" }],
 * });
 * await using cluster = await startCluster({ name: "demo", provider, nodes: [{ name: "eu_db_1" }] });
 * ```
 */
export async function externalProvider(
  options: ExternalProviderOptions = {},
): Promise<ExternalProvider> {
  const clusterName = options.clusterName ?? "workshop";
  const servers = options.servers ?? await loadExternalServers();
  const admins = new Map<string, Admin>();
  const admin = (server: ExternalServer) => {
    let a = admins.get(server.name);
    if (!a) admins.set(server.name, a = new Admin(server));
    return a;
  };
  const placements: Placement[] = [];
  const used = new Map<string, number>();
  const marker = await runMarker();
  await Promise.all(servers.map((s) => admin(s).sweepStale()));

  const pick = (spec: NodeStartSpec): ExternalServer => {
    const named = servers.find((s) => s.name === spec.name);
    if (named) return named;
    const inRegion = servers.filter((s) => s.region === spec.region);
    const pool = inRegion.length ? inRegion : servers;
    return pool.reduce((best, s) =>
      (used.get(s.name) ?? 0) < (used.get(best.name) ?? 0) ? s : best
    );
  };

  return {
    kind: options.kind ?? "external",
    servers,
    placements,
    simulatesLatency: options.simulatesLatency ?? false,
    startConcurrency: 4,
    proxyEndpoint: options.proxyEndpoint ??
      (() => ({ listenHost: "127.0.0.1", reachableHost: "127.0.0.1" })),
    start: async (spec) => {
      const server = pick(spec);
      used.set(server.name, (used.get(server.name) ?? 0) + 1);
      const database = databaseName(clusterName, spec.name);
      try {
        const node = await admin(server).createNodeDatabase(
          database,
          spec.name,
          marker,
          spec.settings,
        );
        placements.push({ node: spec.name, server: server.name, database, region: server.region });
        return node;
      } catch (error) {
        used.set(server.name, (used.get(server.name) ?? 1) - 1);
        throw error;
      }
    },
    dispose: async () => {
      await Promise.all([...admins.values()].map((a) => a.close()));
      admins.clear();
    },
  };
}

/**
 * Connects to every configured server and checks that its user may create
 * databases; returns one line describing them (for the preflight).
 *
 * @throws {WorkshopError} `INVALID_SETTING` (list, rights) or `NODE_START_FAILED` (unreachable).
 */
export async function checkExternalServers(
  servers?: ExternalServer[],
): Promise<string> {
  const list = servers ?? await loadExternalServers();
  const parts: string[] = [];
  for (const server of list) {
    const admin = new Admin(server);
    try {
      const sql = await admin.connected();
      const [r] = await sql`
        SELECT current_setting('server_version') AS version, rolsuper, rolcreatedb
        FROM pg_roles WHERE rolname = current_user`;
      if (!r.rolsuper && !r.rolcreatedb) {
        throw new WorkshopError(
          "INVALID_SETTING",
          `User of external server "${server.name}" may not create databases`,
          {
            fix:
              "Use a superuser in the URL (the notebooks also create the postgres_fdw extension)",
          },
        );
      }
      parts.push(`${server.name} (${server.region}, PostgreSQL ${r.version})`);
    } finally {
      await admin.close();
    }
  }
  return `${list.length} server(s): ${parts.join(", ")}`;
}

/** The database a node gets: `pgsw_<cluster>_<node>`, at most 63 bytes. */
export function databaseName(cluster: string, node: string): string {
  const clean = (s: string) => s.toLowerCase().replace(/[^a-z0-9_]+/g, "_");
  const name = `pgsw_${clean(cluster)}_${clean(node)}`;
  if (name.length <= 63) return name;
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `${name.slice(0, 54)}_${h.toString(16).padStart(8, "0")}`;
}

/** The comment put on each database: which machine and run directory made it. */
async function runMarker(): Promise<string> {
  const run = await currentRun();
  return `pgsw run ${Deno.hostname()} ${run.path}`;
}

/** One server: an admin connection and the databases this provider made there. */
class Admin {
  #server: ExternalServer;
  #sql: postgres.Sql | undefined;
  #url: URL;

  constructor(server: ExternalServer) {
    this.#server = server;
    this.#url = new URL(server.url);
  }

  get sql(): postgres.Sql {
    this.#sql ??= postgres(this.#server.url, {
      max: 2,
      onnotice: () => {},
      connect_timeout: 10,
      idle_timeout: 30,
      connection: { application_name: "pgsw-external-admin" },
    });
    return this.#sql;
  }

  get address(): Address {
    return {
      host: this.#url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(this.#url.port || 5432),
    };
  }

  /** Creates the node's database and returns the node. */
  async createNodeDatabase(
    database: string,
    node: string,
    marker: string,
    settings?: Record<string, string | number | boolean>,
  ): Promise<ProvidedNode> {
    const sql = await this.connected();
    const [existing] = await sql`
      SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = ${database}`;
    if (existing) {
      const owner = parseMarker(existing.comment as string | null);
      if (owner && (await ownerAlive(owner)) && `pgsw run ${owner.host} ${owner.dir}` !== marker) {
        throw new WorkshopError(
          "DUPLICATE_NODE",
          `Cannot add node "${node}": database "${database}" on server "${this.#server.name}" ` +
            `belongs to another workshop run (${owner.host}, ${owner.dir})`,
          { fix: "Stop that run first, or start this cluster under another name" },
        );
      }
      await sql.unsafe(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
    }
    await this.#checkSettings(node, settings ?? {});
    await sql.unsafe(`CREATE DATABASE ${ident(database)} TEMPLATE template0 ENCODING 'UTF8'`);
    await sql.unsafe(`COMMENT ON DATABASE ${ident(database)} IS ${literal(marker)}`);
    // Settings a session may change become the database's own defaults.
    for (const [key, value] of Object.entries(settings ?? {})) {
      if (this.#perDatabase.has(key)) {
        await sql.unsafe(
          `ALTER DATABASE ${ident(database)} SET ${ident(key)} = ${literal(String(value))}`,
        );
      }
    }
    const user = decodeURIComponent(this.#url.username || "postgres");
    const password = decodeURIComponent(this.#url.password);
    const address = this.address;
    let removed = false;
    let stopped = false;
    const server = this.#server;
    return {
      address,
      peerAddress: {
        host: server.peerHost ?? address.host,
        port: server.peerPort ?? address.port,
      },
      user,
      password,
      database,
      storage: `database ${database} on server ${server.name}`,
      logTail: () =>
        Promise.resolve(
          `(server logs of external server "${server.name}" are not available to the kit)`,
        ),
      stop: async ({ remove = false } = {}) => {
        if (removed) return;
        if (!stopped) {
          // A real server is not ours to stop: closing the database to new
          // connections and ending the open ones looks the same to clients.
          stopped = true;
          await sql.unsafe(`ALTER DATABASE ${ident(database)} ALLOW_CONNECTIONS false`)
            .catch(() => {});
          await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE datname = ${database} AND pid <> pg_backend_pid()`.catch(() => {});
        }
        if (remove) {
          removed = true;
          await sql.unsafe(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
        }
      },
      restart: async () => {
        if (removed) throw new Error(`Node "${node}" was removed and cannot restart`);
        if (!stopped) return;
        await sql.unsafe(`ALTER DATABASE ${ident(database)} ALLOW_CONNECTIONS true`);
        stopped = false;
      },
    };
  }

  #perDatabase = new Set<string>();

  /**
   * A server's settings are not ours to change: settings a session may set
   * are applied to the node's database; a server-wide one (wal_level) that
   * differs from what the node asks for is an error naming the fix.
   */
  async #checkSettings(
    node: string,
    wanted: Record<string, string | number | boolean>,
  ): Promise<void> {
    const names = Object.keys(wanted);
    if (names.length === 0) return;
    const rows = await this.sql`
      SELECT name, setting, context, vartype FROM pg_settings WHERE name IN ${this.sql(names)}`;
    const wrong: string[] = [];
    for (const row of rows) {
      const name = row.name as string;
      if (row.context === "user" || row.context === "superuser") {
        this.#perDatabase.add(name);
        continue;
      }
      if (!["enum", "bool", "string"].includes(row.vartype as string)) continue;
      const norm = (v: unknown) => {
        const t = String(v).trim().toLowerCase().replace(/^'|'$/g, "");
        return ({ true: "on", false: "off", yes: "on", no: "off", "1": "on", "0": "off" } as Record<
          string,
          string
        >)[t] ?? t;
      };
      if (norm(row.setting) !== norm(wanted[name])) {
        wrong.push(`${name} = ${wanted[name]} (server has ${row.setting})`);
      }
    }
    if (wrong.length) {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Node "${node}" needs server settings that external server "${this.#server.name}" does not have: ${
          wrong.join(", ")
        }`,
        {
          fix:
            `Set them on that server (ALTER SYSTEM SET ...; then restart it), or run this notebook ` +
            `with WORKSHOP_PROVIDER=embedded or docker`,
        },
      );
    }
  }

  /** Drops databases that runs of this machine left behind when they died. */
  async sweepStale(): Promise<void> {
    const sql = await this.connected();
    const rows = await sql`
      SELECT datname, shobj_description(oid, 'pg_database') AS comment
      FROM pg_database WHERE datname LIKE 'pgsw\\_%'`;
    for (const row of rows) {
      const owner = parseMarker(row.comment as string | null);
      if (!owner || owner.host !== Deno.hostname() || await ownerAlive(owner)) continue;
      await sql.unsafe(`DROP DATABASE IF EXISTS ${ident(row.datname as string)} WITH (FORCE)`)
        .catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.#sql?.end({ timeout: 2 }).catch(() => {});
    this.#sql = undefined;
  }

  async connected(): Promise<postgres.Sql> {
    try {
      await this.sql`SELECT 1`;
      return this.sql;
    } catch (error) {
      throw new WorkshopError(
        "NODE_START_FAILED",
        `Cannot connect to external server "${this.#server.name}" (${maskUrl(this.#server.url)})`,
        {
          fix:
            "Check the URL in WORKSHOP_EXTERNAL_NODES: host, port, user and password, and that " +
            "this machine may connect (pg_hba.conf, firewalls)",
          cause: error,
          details: String((error as Error)?.message ?? error),
        },
      );
    }
  }
}

function parseMarker(comment: string | null): { host: string; dir: string } | undefined {
  const m = /^pgsw run (\S+) (.+)$/.exec(comment ?? "");
  return m ? { host: m[1], dir: m[2] } : undefined;
}

/** A run on another machine counts as alive: only its own machine can tell. */
async function ownerAlive(owner: { host: string; dir: string }): Promise<boolean> {
  if (owner.host !== Deno.hostname()) return true;
  return await Deno.stat(owner.dir).then(() => true, () => false);
}

/** The URL with its password replaced by `****`. */
export function maskUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@]*@/, "$1****@");
}

function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
