/**
 * The provider seam: where nodes come from. A cluster asks its provider to
 * start a node and gets back addresses and a way to stop it; notebooks never
 * see which provider is behind a cluster.
 *
 * Providers: `embedded` (PostgreSQL 16 processes from npm binaries, the
 * default), `docker` (containers through testcontainers, providers/docker.ts),
 * `compose` (a running docker-compose stack, providers/compose.ts) and
 * `external` (servers given by URL, providers/external.ts).
 *
 * @module
 */

import type { ProviderKind } from "../config.ts";

/** What a provider needs to start one node. */
export interface NodeStartSpec {
  /** Node name, unique in the cluster, e.g. "eu_db_1". */
  name: string;
  /** Region id, e.g. "eu-west-2". */
  region: string;
  /** Password for the `postgres` superuser on this node. */
  password: string;
  /** Port to listen on from this machine; undefined picks a free one. */
  port?: number;
  /** Extra server settings (`-c key=value`). */
  settings?: Record<string, string | number | boolean>;
  /** Cluster name, used as a label. */
  clusterName: string;
}

/** A host and port. */
export interface Address {
  host: string;
  port: number;
}

/** A running node as a provider hands it back. */
export interface ProvidedNode {
  /** Address this process connects to. */
  address: Address;
  /** Address other nodes of the same provider use to reach this node (postgres_fdw, replication). */
  peerAddress: Address;
  /** Database user (superuser). */
  user: string;
  /**
   * Password of `user` when it is not the cluster's password (servers given
   * by URL keep their own). @default the cluster's password
   */
  password?: string;
  /** Database name. */
  database: string;
  /** Data directory on this machine, when the provider has one (embedded). */
  dataDir?: string;
  /**
   * Where the node's data lives, for display and for telling nodes apart
   * when there is no `dataDir` here: a Docker volume, a database on a
   * server. @default dataDir
   */
  storage?: string;
  /** The last lines of the server log. */
  logTail(lines?: number): Promise<string>;
  /**
   * Stops the server. `immediate` skips the shutdown checkpoint; `remove`
   * also deletes the node's data. Idempotent.
   */
  stop(options?: { mode?: "fast" | "immediate"; remove?: boolean }): Promise<void>;
  /** Starts a stopped (not removed) node again on the same address. */
  restart(): Promise<void>;
}

/** Where nodes come from. */
export interface NodeProvider {
  /** Which provider this is. */
  readonly kind: ProviderKind;
  /** Starts one node and resolves once it accepts connections. */
  start(spec: NodeStartSpec): Promise<ProvidedNode>;
  /**
   * Where a delay proxy for traffic *from* this provider's nodes must listen,
   * and the host those nodes use to reach it.
   */
  proxyEndpoint(): { listenHost: string; reachableHost: string };
  /** Releases what the provider holds for the whole cluster (networks). */
  dispose(): Promise<void>;
  /**
   * Whether links between regions get simulated latency (delay proxies).
   * False for real servers far apart, whose latency is real. @default true
   */
  readonly simulatesLatency?: boolean;
  /** How many nodes {@link NodeProvider.start} may start at once. @default 2 */
  readonly startConcurrency?: number;
}
