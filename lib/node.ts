/**
 * A node: one PostgreSQL server in a cluster, with a name, a region, a role,
 * a postgres.js client and a URL whose password is masked when shown.
 *
 * @module
 */

import postgres from "postgres";
import { WorkshopError } from "./errors.ts";
import type { Address, ProvidedNode } from "./providers/provider.ts";
import type { RegionId } from "./regions.ts";
import { htmlTable } from "./display.ts";
import { splitStatements } from "./sql_text.ts";

/** A postgres.js client. */
export type Sql = postgres.Sql<Record<string, unknown>>;

/** One statement's outcome from {@link Node.exec}. */
export interface StatementResult {
  /** Command tag, e.g. "INSERT", "SELECT", "CREATE TABLE". */
  command: string;
  /** Rows affected or returned. */
  count: number;
  /** Rows returned (empty for commands). */
  rows: Record<string, unknown>[];
}

/** Options for {@link Node.client}. */
export interface ClientOptions {
  /** Region the client sits in; crossing regions adds simulated latency. @default the node's region */
  from?: RegionId;
  /** Pool size. @default 1 */
  max?: number;
  /** Shown in pg_stat_activity. @default "pgsw" */
  applicationName?: string;
}

/** What a node needs from its cluster (implemented by `Cluster`). */
export interface NodeHost {
  /** Cluster name. */
  readonly name: string;
  /** The node with this name; throws UNKNOWN_NODE. */
  node(name: string): Node;
  /** Every node of the cluster. */
  readonly nodes: Node[];
  /** Address a client in region `from` uses to reach `node`. */
  route(from: RegionId, node: Node): Promise<Address>;
  /** Address node `from` uses to reach node `to` (postgres_fdw, replication). */
  peerRoute(from: Node, to: Node): Promise<Address>;
  /** The node an address seen from inside the cluster leads to. */
  nodeAt(host: string, port: number, database?: string): Promise<Node | undefined>;
}

/** Parses int8 (count(*), sizes) as JavaScript numbers; workshop values stay far below 2^53. */
const NUMBER_TYPES = {
  int8: {
    to: 20,
    from: [20],
    serialize: (x: unknown) => String(x),
    parse: (x: string) => Number(x),
  },
};

/**
 * Creates a postgres.js client with the kit's defaults (notices kept, int8 as number).
 *
 * @example
 * ```ts
 * const sql = connect({ host: "127.0.0.1", port: 5432 }, "postgres", "secret");
 * ```
 */
export function connect(
  address: Address,
  user: string,
  password: string,
  options: {
    database?: string;
    max?: number;
    applicationName?: string;
    onnotice?: (n: postgres.Notice) => void;
  } = {},
): Sql {
  return postgres({
    host: address.host,
    port: address.port,
    user,
    password,
    database: options.database ?? "postgres",
    max: options.max ?? 1,
    idle_timeout: 60,
    connect_timeout: 30,
    prepare: true,
    onnotice: options.onnotice ?? (() => {}),
    connection: { application_name: options.applicationName ?? "pgsw" },
    types: NUMBER_TYPES,
  }) as unknown as Sql;
}

/**
 * One PostgreSQL server of a cluster. Get nodes from a cluster, never construct them.
 *
 * @example
 * ```ts
 * const eu1 = cluster.node("eu_db_1");
 * const [{ n }] = await eu1.sql`SELECT count(*) AS n FROM customer`;
 * ```
 */
export class Node {
  /** Unique name in the cluster, e.g. "eu_db_1". */
  readonly name: string;
  /** Region the node is placed in. */
  readonly region: RegionId;
  /** What the node does in the lesson ("coordinator", "shard", "primary", "replica", ...). */
  readonly role: string;
  /** Client from the operator's seat: no simulated latency. Pool of 4. */
  readonly sql: Sql;
  /** NOTICE messages the server sent to {@link Node.sql} (newest last, at most 100). */
  readonly notices: string[] = [];

  #provided: ProvidedNode;
  #password: string;
  /** The cluster this node belongs to. */
  readonly cluster: NodeHost;
  #clients = new Set<Sql>();
  #stopped = false;

  /** @internal Called by the cluster. */
  constructor(
    spec: { name: string; region: RegionId; role: string; password: string },
    provided: ProvidedNode,
    host: NodeHost,
  ) {
    this.name = spec.name;
    this.region = spec.region;
    this.role = spec.role;
    this.#password = spec.password;
    this.#provided = provided;
    this.cluster = host;
    this.sql = connect(provided.address, provided.user, spec.password, {
      database: provided.database,
      max: 4,
      applicationName: "pgsw-operator",
      onnotice: (notice) => {
        this.notices.push(`${notice.severity}: ${notice.message}`);
        if (this.notices.length > 100) this.notices.shift();
      },
    });
    this.#clients.add(this.sql);
  }

  /** Host this process connects to. */
  get host(): string {
    return this.#provided.address.host;
  }
  /** Port this process connects to. */
  get port(): number {
    return this.#provided.address.port;
  }
  /** How other nodes of the cluster reach this one directly (without simulated latency). */
  get peerAddress(): Address {
    return this.#provided.peerAddress;
  }
  /** Superuser name. */
  get user(): string {
    return this.#provided.user;
  }
  /** Database name. */
  get database(): string {
    return this.#provided.database;
  }
  /** The cluster's password (for user mappings and replication settings). */
  get password(): string {
    return this.#password;
  }
  /** Data directory, for providers that have one on this machine. */
  get dataDir(): string | undefined {
    return this.#provided.dataDir;
  }
  /**
   * Where the node's data lives: its data directory, a Docker volume, or a
   * database on a server (external providers). Two nodes never share it.
   */
  get storage(): string {
    return this.#provided.storage ?? this.#provided.dataDir ??
      `${this.host}:${this.port}/${this.database}`;
  }
  /** Whether the node was stopped. */
  get stopped(): boolean {
    return this.#stopped;
  }
  /** Connection URL with the password masked, safe to show. */
  get url(): string {
    return `postgres://${this.user}:****@${this.host}:${this.port}/${this.database}`;
  }
  /** Connection URL with the real password, for programs. Never print it. */
  connectionString(): string {
    return `postgres://${this.user}:${
      encodeURIComponent(this.#password)
    }@${this.host}:${this.port}/${this.database}`;
  }

  /**
   * Runs SQL text that may hold several statements (and BEGIN/COMMIT) on one
   * connection, one statement after the other as `psql -f` would, and returns
   * each statement's result. After an error, an open transaction is rolled
   * back, and the error carries the failing statement (`error.statement`)
   * and its index (`error.statementIndex`).
   *
   * @example
   * ```ts
   * await eu1.exec(`BEGIN; DROP TABLE customer; ALTER TABLE customer_partitioned RENAME TO customer; COMMIT;`);
   * ```
   */
  async exec(text: string): Promise<StatementResult[]> {
    this.#assertRunning();
    const reserved = await this.sql.reserve();
    const results: StatementResult[] = [];
    let current = "";
    try {
      for (const statement of splitStatements(text)) {
        current = statement;
        const rows = await reserved.unsafe(statement).simple() as unknown as
          & Record<string, unknown>[]
          & { command?: string; count?: number };
        results.push({
          command: rows.command ?? "",
          count: rows.count ?? rows.length,
          rows: [...rows],
        });
      }
      return results;
    } catch (error) {
      // A failed statement inside BEGIN ... COMMIT leaves the connection in an aborted
      // transaction; roll it back so the pooled connection is usable again.
      await reserved.unsafe("ROLLBACK").catch(() => {});
      if (error instanceof Error) {
        Object.assign(error, { statement: current, statementIndex: results.length });
      }
      throw error;
    } finally {
      reserved.release();
    }
  }

  /**
   * A new client for this node, optionally from another region (through the
   * simulated latency). The cluster closes it when it stops.
   *
   * @example
   * ```ts
   * const fromVirginia = await eu1.client({ from: "us-east-1" });
   * await fromVirginia`SELECT 1`; // pays a London-N. Virginia round trip
   * ```
   */
  async client(options: ClientOptions = {}): Promise<Sql> {
    this.#assertRunning();
    const address = await this.cluster.route(options.from ?? this.region, this);
    const sql = connect(address, this.user, this.#password, {
      database: this.database,
      max: options.max ?? 1,
      applicationName: options.applicationName ?? "pgsw",
    });
    this.#clients.add(sql);
    return sql;
  }

  /** Closes a client made by {@link Node.client}. */
  async closeClient(sql: Sql): Promise<void> {
    this.#clients.delete(sql);
    await sql.end({ timeout: 1 });
  }

  /** The last lines of the server log. */
  logTail(lines = 20): Promise<string> {
    return this.#provided.logTail(lines);
  }

  /** Stops the server but keeps its data, so that {@link Node.restart} can bring it back. */
  async stop(): Promise<void> {
    await this.#endClients(false);
    await this.#provided.stop({ mode: "fast" });
    this.#stopped = true;
  }

  /** Starts a node stopped with {@link Node.stop} again. */
  async restart(): Promise<void> {
    await this.#provided.restart();
    this.#stopped = false;
  }

  /** @internal Stops the server and deletes its data; used by the cluster. */
  async destroy(): Promise<void> {
    await this.#endClients(true);
    await this.#provided.stop({ mode: "immediate", remove: true });
    this.#stopped = true;
  }

  /** Masked URL. */
  toString(): string {
    return `${this.name} (${this.region}, ${this.role}) ${this.url}`;
  }

  /** Rich display in notebooks: a one-row table. */
  [Symbol.for("Jupyter.display")](): Record<string, string> {
    const row = { name: this.name, region: this.region, role: this.role, url: this.url };
    return { "text/html": htmlTable([row]), "text/plain": this.toString() };
  }

  async #endClients(all: boolean): Promise<void> {
    const clients = [...this.#clients].filter((c) => all || c !== this.sql);
    await Promise.all(clients.map((c) => c.end({ timeout: 1 }).catch(() => {})));
    for (const c of clients) if (c !== this.sql) this.#clients.delete(c);
  }

  #assertRunning(): void {
    if (this.#stopped) {
      throw new WorkshopError("CLUSTER_STOPPED", `Node "${this.name}" is stopped`, {
        fix: `Restart it with node.restart(), or start the cluster again`,
      });
    }
  }
}
