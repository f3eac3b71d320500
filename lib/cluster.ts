/**
 * A cluster: a named set of PostgreSQL nodes that can grow and shrink while
 * running, from one provider, with simulated latency between regions.
 *
 * @module
 */

import { type ProviderKind, settings } from "./config.ts";
import { htmlTable } from "./display.ts";
import { WorkshopError } from "./errors.ts";
import { type DelayProxy, postgresRefusal, startDelayProxy } from "./latency_proxy.ts";
import { Node, type NodeHost } from "./node.ts";
import type { Address, NodeProvider, NodeStartSpec, ProvidedNode } from "./providers/provider.ts";
import { getRegion, type RegionId, roundTripMs } from "./regions.ts";
import { seededRandom } from "./random.ts";
import { releaseRunIfEmpty } from "./_runs.ts";

/** How to create one node. */
export interface NodeOptions {
  /** Unique name, e.g. "eu_db_1" (letters, digits, underscores). */
  name: string;
  /** Region the node is placed in. @default "eu-west-2" */
  region?: RegionId;
  /** What the node does in the lesson. @default "node" */
  role?: string;
  /** Port on 127.0.0.1; unset picks a free port. */
  port?: number;
  /** Extra server settings passed as `-c key=value`. */
  settings?: Record<string, string | number | boolean>;
  /**
   * Starts the server instead of the cluster's provider (a replica from a
   * base copy, for example). @default the provider's start
   */
  start?: (spec: NodeStartSpec) => Promise<ProvidedNode>;
}

/** Something besides nodes that a cluster owns and stops (an HTTP API, a Redis server). */
export interface ClusterService {
  /** Name, unique in the cluster (e.g. "eu_api"). */
  name: string;
  /** Region the service runs in. */
  region: RegionId;
  /** Address this process reaches it at. */
  address: Address;
  /** Stops it; called once when the cluster stops or the service is removed. */
  stop(): Promise<void>;
}

/** Options for {@link startCluster}. */
export interface ClusterOptions {
  /** Cluster name; starting a cluster with the name of a running one replaces it. @default "workshop" */
  name?: string;
  /** Nodes to start now. @default [] */
  nodes?: NodeOptions[];
  /** Where nodes come from. @default settings().provider */
  provider?: ProviderKind | NodeProvider;
  /** Superuser password; a random one per cluster when unset. */
  password?: string;
}

const REGISTRY_KEY = Symbol.for("pgsw.clusters");
const registry: Map<string, Cluster> =
  ((globalThis as Record<symbol, unknown>)[REGISTRY_KEY] as Map<string, Cluster>) ??
    ((globalThis as Record<symbol, unknown>)[REGISTRY_KEY] = new Map());

/**
 * Starts a cluster and its first nodes.
 *
 * Starting a cluster under the name of one that is running in this process
 * stops the old one first, so a notebook's setup cell can be re-run.
 *
 * @example
 * ```ts
 * await using cluster = await startCluster({
 *   name: "horizontal-scaling",
 *   nodes: [{ name: "eu_db_1", region: "eu-west-2" }],
 * });
 * const eu1 = cluster.node("eu_db_1");
 * ```
 */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const name = options.name ?? "workshop";
  await registry.get(name)?.stop();
  const provider = await resolveProvider(options.provider ?? settings().provider, name);
  const password = options.password ?? randomPassword();
  const cluster = new Cluster(name, provider, password);
  registry.set(name, cluster);
  try {
    await cluster.addNodes(options.nodes ?? []);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Every cluster running in this process. */
export function runningClusters(): Cluster[] {
  return [...registry.values()];
}

/**
 * A running set of nodes. Stop it with {@link Cluster.stop} or `await using`.
 */
export class Cluster implements AsyncDisposable, NodeHost {
  /** Cluster name. */
  readonly name: string;
  /** Where the nodes come from. */
  readonly provider: NodeProvider;

  #password: string;
  #nodes = new Map<string, Node>();
  #starting = new Map<string, Promise<Node>>();
  #order: string[] = [];
  #services = new Map<string, ClusterService>();
  #proxies = new Map<string, Promise<DelayProxy>>();
  #stopped = false;
  #rng = seededRandom();

  /** @internal Use {@link startCluster}. */
  constructor(name: string, provider: NodeProvider, password: string) {
    this.name = name;
    this.provider = provider;
    this.#password = password;
  }

  /** The nodes, in the order they were asked for. */
  get nodes(): Node[] {
    return [...this.#nodes.values()].sort((a, b) =>
      this.#order.indexOf(a.name) - this.#order.indexOf(b.name)
    );
  }

  /** The superuser password of every node. */
  get password(): string {
    return this.#password;
  }

  /** Whether the cluster was stopped. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * The node with this name.
   *
   * @throws {WorkshopError} `UNKNOWN_NODE` listing the nodes that exist.
   */
  node(name: string): Node {
    const node = this.#nodes.get(name);
    if (!node) {
      throw new WorkshopError("UNKNOWN_NODE", `No node named "${name}" in cluster "${this.name}"`, {
        fix: this.#nodes.size
          ? `Use one of: ${[...this.#nodes.keys()].join(", ")}`
          : `Add it first with cluster.addNode({ name: "${name}" })`,
      });
    }
    return node;
  }

  /** Whether a node with this name exists. */
  has(name: string): boolean {
    return this.#nodes.has(name);
  }

  /**
   * Starts a node and adds it. Adding a node that exists with the same
   * region and role returns the existing node, so cells can be re-run.
   *
   * @throws {WorkshopError} `DUPLICATE_NODE`, `UNKNOWN_REGION`, `PORT_IN_USE`, `NODE_START_FAILED`.
   */
  async addNode(options: NodeOptions): Promise<Node> {
    this.#assertRunning();
    const region = getRegion(options.region ?? "eu-west-2").id;
    const role = options.role ?? "node";
    if (!/^[a-z_][a-z0-9_]*$/i.test(options.name)) {
      throw new WorkshopError("INVALID_SETTING", `Invalid node name "${options.name}"`, {
        fix: "Use letters, digits and underscores, starting with a letter (eu_db_1)",
      });
    }
    if (this.#services.has(options.name)) {
      throw new WorkshopError(
        "DUPLICATE_NODE",
        `Cannot add node "${options.name}": a service has that name`,
        {
          fix: "Choose another name",
        },
      );
    }
    const existing = this.#nodes.get(options.name);
    if (existing) {
      if (existing.region === region && existing.role === role) return existing;
      throw new WorkshopError(
        "DUPLICATE_NODE",
        `Cannot add node "${options.name}": it exists in ${existing.region} as ${existing.role}`,
        { fix: `Remove it first (cluster.removeNode("${options.name}")) or choose another name` },
      );
    }
    const pending = this.#starting.get(options.name);
    if (pending) return await pending;
    if (!this.#order.includes(options.name)) this.#order.push(options.name);
    const starting = this.#startNode({ ...options, region, role }).finally(() =>
      this.#starting.delete(options.name)
    );
    this.#starting.set(options.name, starting);
    return await starting;
  }

  /**
   * Starts several nodes (two at a time, or as many as the provider's
   * `startConcurrency`) and adds them; resolves in the given order.
   */
  async addNodes(list: NodeOptions[]): Promise<Node[]> {
    const result: Node[] = [];
    const step = Math.max(1, this.provider.startConcurrency ?? 2);
    for (let i = 0; i < list.length; i += step) {
      result.push(...await Promise.all(list.slice(i, i + step).map((o) => this.addNode(o))));
    }
    return result;
  }

  /**
   * Stops a node, deletes its data and forgets it. Proxies leading to it close.
   *
   * @throws {WorkshopError} `UNKNOWN_NODE`.
   */
  async removeNode(name: string): Promise<void> {
    const node = this.node(name);
    this.#nodes.delete(name);
    await this.#closeProxies((key) => key.endsWith(`->${name}`));
    await node.destroy();
  }

  /**
   * The address a client in region `from` uses to reach `node`: the node
   * itself in the same region, or a delay proxy when regions differ and the
   * latency scale is above 0.
   */
  route(from: RegionId, node: Node): Promise<Address> {
    return this.#route(getRegion(from).id, node, "client");
  }

  /**
   * The address `from` (a node) uses to reach `to` for postgres_fdw or
   * replication: direct inside a region, through a delay proxy across regions.
   */
  peerRoute(from: Node, to: Node): Promise<Address> {
    return this.#route(from.region, to, "peer");
  }

  /**
   * The address a client in region `from` uses to reach a service of the
   * cluster (an HTTP API, Redis): through a delay proxy across regions.
   *
   * @throws {WorkshopError} `UNKNOWN_NODE` when no service has this name.
   */
  routeToService(from: RegionId, name: string): Promise<Address> {
    const service = this.service(name);
    return this.#proxyFor(
      getRegion(from).id,
      name,
      service.region,
      service.address,
      service.address,
      "client",
    );
  }

  /**
   * Adds a service that the cluster stops with its nodes (first the
   * services, in reverse order, then the nodes). Returns the service.
   *
   * @example
   * ```ts
   * const api = cluster.addService(await startTweetsApi(europe, { table: "europe_tweets" }));
   * ```
   */
  addService<T extends ClusterService>(service: T): T {
    this.#assertRunning();
    if (this.#services.has(service.name) || this.#nodes.has(service.name)) {
      throw new WorkshopError(
        "DUPLICATE_NODE",
        `Cannot add service "${service.name}": the name is taken`,
        {
          fix: "Remove the existing one first, or choose another name",
        },
      );
    }
    getRegion(service.region);
    this.#services.set(service.name, service);
    return service;
  }

  /** The service with this name (see {@link Cluster.addService}). */
  service(name: string): ClusterService {
    const service = this.#services.get(name);
    if (!service) {
      throw new WorkshopError(
        "UNKNOWN_NODE",
        `No service named "${name}" in cluster "${this.name}"`,
        {
          fix: this.#services.size
            ? `Use one of: ${[...this.#services.keys()].join(", ")}`
            : "Add it with cluster.addService()",
        },
      );
    }
    return service;
  }

  /** Every service, in the order added. */
  get services(): ClusterService[] {
    return [...this.#services.values()];
  }

  /** Stops a service and forgets it; proxies leading to it close. */
  async removeService(name: string): Promise<void> {
    const service = this.service(name);
    this.#services.delete(name);
    await this.#closeProxies((key) => key.endsWith(`->${name}`));
    await service.stop();
  }

  /**
   * The node that an address seen from inside the cluster leads to (a
   * foreign server's host and port; `database`, its dbname, picks among nodes
   * sharing a server), or undefined.
   */
  async nodeAt(host: string, port: number, database?: string): Promise<Node | undefined> {
    // Several nodes can share a server (external and compose providers: one
    // database each); the foreign server's dbname tells them apart.
    const candidates = [...this.#nodes.values()].filter((node) =>
      (node.peerAddress.port === port && node.peerAddress.host === host) ||
      (node.port === port && node.host === host)
    );
    const found = candidates.find((node) => node.database === database) ?? candidates[0];
    if (found) return found;
    for (const [key, pending] of this.#proxies) {
      const proxy = await pending.catch(() => undefined);
      if (proxy && proxy.port === port) return this.#nodes.get(key.split("->")[1]);
    }
    return undefined;
  }

  /** Stops every node and proxy and deletes their data. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (registry.get(this.name) === this) registry.delete(this.name);
    await Promise.allSettled(this.#starting.values());
    for (const service of [...this.#services.values()].reverse()) {
      await service.stop().catch(() => {});
    }
    this.#services.clear();
    const nodes = [...this.#nodes.values()];
    this.#nodes.clear();
    await Promise.all(nodes.map((n) => n.destroy().catch(() => {})));
    await this.#closeProxies(() => true);
    await this.provider.dispose();
    await releaseRunIfEmpty();
  }

  /** Same as {@link Cluster.stop}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /** Rich display in notebooks: a table of nodes. */
  [Symbol.for("Jupyter.display")](): Record<string, string> {
    const rows = this.nodes.map((n) => ({
      name: n.name,
      region: n.region,
      role: n.role,
      url: n.url,
    }));
    return {
      "text/html": htmlTable(rows, {
        caption: `cluster "${this.name}" (${this.provider.kind} provider)`,
      }),
      "text/plain": rows.map((r) => `${r.name}\t${r.region}\t${r.role}\t${r.url}`).join("\n"),
    };
  }

  async #startNode(options: NodeOptions & { region: RegionId; role: string }): Promise<Node> {
    const start = options.start ?? ((spec: NodeStartSpec) => this.provider.start(spec));
    const provided = await start({
      name: options.name,
      region: options.region,
      password: this.#password,
      port: options.port,
      settings: options.settings,
      clusterName: this.name,
    });
    if (this.#stopped) {
      await provided.stop({ mode: "immediate", remove: true });
      throw new WorkshopError(
        "CLUSTER_STOPPED",
        `Cluster "${this.name}" stopped while "${options.name}" started`,
        {
          fix: "Start a new cluster",
        },
      );
    }
    const node = new Node(
      {
        name: options.name,
        region: options.region,
        role: options.role,
        password: provided.password ?? this.#password,
      },
      provided,
      this,
    );
    this.#nodes.set(node.name, node);
    return node;
  }

  #route(from: RegionId, node: Node, kind: "client" | "peer"): Promise<Address> {
    const direct = kind === "client" ? { host: node.host, port: node.port } : node.peerAddress;
    return this.#proxyFor(
      from,
      node.name,
      node.region,
      { host: node.host, port: node.port },
      direct,
      kind,
    );
  }

  #proxyFor(
    from: RegionId,
    name: string,
    region: RegionId,
    target: Address,
    direct: Address,
    kind: "client" | "peer",
  ): Promise<Address> {
    if (
      from === region || settings().latencyScale === 0 || this.provider.simulatesLatency === false
    ) {
      return Promise.resolve(direct);
    }
    const key = `${kind}:${from}->${name}`;
    let proxy = this.#proxies.get(key);
    if (!proxy) {
      const endpoint = this.provider.proxyEndpoint();
      const rtt = roundTripMs(from, region);
      proxy = startDelayProxy(target, {
        oneWayMs: () => (rtt / 2) * settings().latencyScale,
        refusal: this.#nodes.has(name)
          ? () =>
            postgresRefusal(
              `node "${name}" (${region}) is not accepting connections (reached from ${from})`,
            )
          : undefined,
        rng: this.#rng,
        listenHost: kind === "client" ? "127.0.0.1" : endpoint.listenHost,
        label: `${from} -> ${name} (${region})`,
      });
      this.#proxies.set(key, proxy);
      proxy.catch(() => this.#proxies.delete(key));
    }
    const reachable = kind === "client" ? "127.0.0.1" : this.provider.proxyEndpoint().reachableHost;
    return proxy.then((p) => ({ host: reachable, port: p.port }));
  }

  async #closeProxies(match: (key: string) => boolean): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const [key, pending] of this.#proxies) {
      if (!match(key)) continue;
      this.#proxies.delete(key);
      closing.push(pending.then((p) => p.close(), () => {}));
    }
    await Promise.all(closing);
  }

  #assertRunning(): void {
    if (this.#stopped) {
      throw new WorkshopError("CLUSTER_STOPPED", `Cluster "${this.name}" is stopped`, {
        fix: "Start a new cluster with startCluster()",
      });
    }
  }
}

/**
 * The provider for a cluster. Providers load on demand, so that
 * testcontainers is only imported when the docker provider is chosen.
 */
async function resolveProvider(
  choice: ProviderKind | NodeProvider,
  clusterName: string,
): Promise<NodeProvider> {
  if (typeof choice !== "string") return choice;
  switch (choice) {
    case "embedded":
      return (await import("./providers/embedded.ts")).embeddedProvider();
    case "docker":
      return await (await import("./providers/docker.ts")).dockerProvider({ clusterName });
    case "compose":
      return await (await import("./providers/compose.ts")).composeProvider({ clusterName });
    case "external":
      return await (await import("./providers/external.ts")).externalProvider({ clusterName });
    default:
      throw new WorkshopError("UNKNOWN_PROVIDER", `Unknown provider "${choice}"`, {
        fix: "Use one of: embedded, docker, compose, external",
      });
  }
}

function randomPassword(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "A").replaceAll("/", "B");
}
