/**
 * The docker provider (`WORKSHOP_PROVIDER=docker`): each node is a
 * `postgres:16` container (or `WORKSHOP_DOCKER_IMAGE`) started through
 * npm:testcontainers, on a user-defined bridge network of its cluster with
 * the node's name as network alias. A foreign server on `eu_db_1` reaches
 * `eu_db_2` as `host 'eu_db_2', port '5432'`, as the source's
 * `host.docker.internal` trick meant to, without leaving Docker's network.
 *
 * - Ports are published on 127.0.0.1 only, on a port picked once per node, so
 *   a stopped node restarts on the same address.
 * - Everything carries the run's labels (see `_docker.ts`); `Cluster.stop()`
 *   removes the containers, their volumes and the network; if the process
 *   dies, the run's reaper removes what carries the run's label, and the next
 *   start removes what dead runs left. Ryuk is not used (its image needs a
 *   registry, and the label-scoped clean-up covers the same ground).
 * - Links between regions go through the cluster's delay proxies, which
 *   listen on the network's gateway address, where containers reach this
 *   machine.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import postgres from "postgres";
import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { assertPortFree, freePort } from "../ports.ts";
import {
  acquireRunLabel,
  containerLogTail,
  createNetwork,
  dockerClient,
  dockerName,
  engineIsLocal,
  ensureImage,
  type LabelledNetwork,
  loadTestcontainers,
  proxyEndpointFor,
  releaseRunLabel,
  type RunLabels,
  type RuntimeClient,
  sweepStaleDockerRuns,
  type TestcontainersModule,
} from "./_docker.ts";
import type { NodeProvider, NodeStartSpec, ProvidedNode } from "./provider.ts";
import { type DockerTemplate, dockerTemplate } from "./_docker_template.ts";
import type { Cluster } from "../cluster.ts";
import { registerStandbyStarter, type StandbyPlan } from "../replication.ts";

const PGDATA = "/var/lib/postgresql/data";

// addReplica() on a docker cluster: the cluster's provider makes the standby.
registerStandbyStarter("docker", (plan, spec) => {
  const provider = (plan.primary.cluster as unknown as Cluster).provider as DockerProvider;
  return provider.startStandby(plan, spec);
});

/** Options for {@link dockerProvider}. */
export interface DockerProviderOptions {
  /** Cluster name, used in container and network names and labels. @default "workshop" */
  clusterName?: string;
  /** Image of the nodes. @default settings().dockerImage ("postgres:16", env WORKSHOP_DOCKER_IMAGE) */
  image?: string;
  /** Nodes started at once by `cluster.addNodes()`. @default 6 */
  startConcurrency?: number;
}

/** A docker provider: a {@link NodeProvider} plus what the docker-specific helpers need. */
export interface DockerProvider extends NodeProvider {
  readonly kind: "docker";
  /** The cluster's network. */
  readonly network: { name: string; id: string; gateway: string };
  /** The image the nodes run. */
  readonly image: string;
  /** Labels every container of this provider carries. */
  readonly labels: Readonly<Record<string, string>>;
  /** Container id of a started node, by node name. */
  containerId(node: string): string | undefined;
  /**
   * Starts a streaming standby of `plan.primary` (a node of this provider):
   * the primary's data volume is copied into a new container between
   * `pg_backup_start()` and `pg_backup_stop()` (Docker's archive API), with
   * `backup_label`, `standby.signal` and the standby settings added. Used by
   * `addReplica()` through the standby starter registered for "docker".
   */
  startStandby(plan: StandbyPlan, spec: NodeStartSpec): Promise<ProvidedNode>;
}

/** Server settings every container gets (as the embedded template has them). */
const SERVER_DEFAULTS: Record<string, string | number> = {
  max_connections: 60,
  shared_buffers: "32MB",
  fsync: "off",
  jit: "off",
  timezone: "UTC",
  log_timezone: "UTC",
  max_wal_size: "256MB",
  wal_keep_size: "64MB",
};

const READY_LINE = /database system is ready to accept connections/;

/**
 * Creates the docker provider for one cluster: checks the engine and the
 * image, removes what crashed runs left, and creates the cluster's network.
 *
 * @throws {WorkshopError} `DOCKER_UNAVAILABLE` (no engine, bad DOCKER_HOST),
 *   `IMAGE_UNAVAILABLE` (image neither present nor pullable).
 * @example
 * ```ts
 * const provider = await dockerProvider({ clusterName: "demo", image: "postgres:16" });
 * await using cluster = await startCluster({ name: "demo", provider, nodes: [{ name: "eu_db_1" }] });
 * ```
 */
export async function dockerProvider(options: DockerProviderOptions = {}): Promise<DockerProvider> {
  const clusterName = options.clusterName ?? "workshop";
  const image = options.image ?? settings().dockerImage;
  const [tc, client] = await Promise.all([loadTestcontainers(), dockerClient()]);
  await ensureImage(image, options.image ? "the image option" : "WORKSHOP_DOCKER_IMAGE");
  await sweepStaleDockerRuns();
  const run = await acquireRunLabel();
  let network: LabelledNetwork;
  try {
    const suffix = crypto.randomUUID().slice(0, 8);
    network = await createNetwork(`pgsw-${dockerName(clusterName)}-${suffix}`, {
      ...run.labels,
      "io.pgsw.cluster": clusterName,
    });
  } catch (error) {
    await releaseRunLabel();
    throw error;
  }
  // initdb once per image; a failure only means every node runs initdb itself.
  const template = await dockerTemplate(client, image, run.labels).catch(() => undefined);
  const containers = new Map<string, string>(); // node name -> container id
  let disposed = false;
  const labels = { ...run.labels, "io.pgsw.cluster": clusterName };
  return {
    kind: "docker",
    image,
    labels,
    network: { name: network.name, id: network.id, gateway: network.gateway },
    startConcurrency: options.startConcurrency ?? 6,
    containerId: (node) => containers.get(node),
    start: async (spec) => {
      if (disposed) {
        throw new WorkshopError("CLUSTER_STOPPED", `Cluster "${clusterName}" is stopped`, {
          fix: "Start a new cluster with startCluster()",
        });
      }
      return await startContainer(tc, client, {
        spec,
        image,
        network,
        run,
        labels,
        containers,
        template,
      });
    },
    startStandby: async (plan, spec) => {
      const primaryId = containers.get(plan.primary.name);
      if (!primaryId) {
        throw new WorkshopError(
          "REPLICA_FAILED",
          `Cannot copy "${plan.primary.name}": it is not a container of cluster "${clusterName}"`,
          { fix: "Make the primary with the same docker cluster" },
        );
      }
      return await startContainer(tc, client, {
        spec,
        image,
        network,
        run,
        labels: { ...labels, "io.pgsw.role": "replica" },
        containers,
        prepare: (id) => copyForStandby(client, primaryId, id, plan),
        // A copy of a running server: drop its lock file and slots before each start.
        preStart: 'rm -f "$PGDATA/postmaster.pid" "$PGDATA/postmaster.opts"; ' +
          'rm -rf "$PGDATA"/pg_replslot/*',
        ready: { line: /ready to accept read-only connections/, times: 1 },
      });
    },
    proxyEndpoint: () => proxyEndpointFor(client, network.gateway),
    dispose: async () => {
      if (disposed) return;
      disposed = true;
      const docker = client.container.dockerode;
      await Promise.all(
        [...containers.values()].map((id) =>
          docker.getContainer(id).remove({ force: true, v: true }).catch(() => {})
        ),
      );
      containers.clear();
      await network.remove().catch(() => {});
      await releaseRunLabel();
    },
  };
}

interface StartContext {
  spec: NodeStartSpec;
  image: string;
  network: LabelledNetwork;
  run: RunLabels;
  labels: Record<string, string>;
  containers: Map<string, string>;
  /** Fills the created container before it starts (a standby's base copy). */
  prepare?: (containerId: string) => Promise<void>;
  /** Runs before the image's entrypoint at every start (shell code). */
  preStart?: string;
  /** Log line that says the server is ready, and how many times it appears on first start. */
  ready?: { line: RegExp; times: number };
  /** An initialised data directory to start from instead of running initdb. */
  template?: DockerTemplate;
}

async function startContainer(
  tc: TestcontainersModule,
  client: RuntimeClient,
  ctx: StartContext,
): Promise<ProvidedNode> {
  const { spec } = ctx;
  const template = ctx.prepare ? undefined : ctx.template;
  const prepare = ctx.prepare ??
    (template
      ? (id: string) =>
        client.container.dockerode.getContainer(id).putArchive(template.tar, {
          path: PGDATA.slice(0, PGDATA.lastIndexOf("/")),
        })
      : undefined);
  const local = engineIsLocal(client);
  if (spec.port !== undefined) await assertPortFree(spec.port, `Cannot start node "${spec.name}"`);
  const port = spec.port ?? await freePort();
  const flags = Object.entries({ ...SERVER_DEFAULTS, cluster_name: spec.name, ...spec.settings })
    .flatMap(([key, value]) => ["-c", `${key}=${value}`]);
  const Container = containerClass(tc);
  const name = `pgsw-${dockerName(spec.clusterName)}-${dockerName(spec.name)}-${
    crypto.randomUUID().slice(0, 6)
  }`;
  const timeoutMs = settings().startupTimeoutMs;
  const definition = new Container(ctx.image, {
    network: ctx.network.name,
    aliases: [spec.name],
    hostIp: local ? "127.0.0.1" : undefined,
  })
    .withName(name)
    .withLabels({ ...ctx.labels, "io.pgsw.node": spec.name, "io.pgsw.region": spec.region })
    .withEnvironment({
      POSTGRES_PASSWORD: spec.password,
      POSTGRES_INITDB_ARGS: "--no-sync -E UTF8 --no-locale --wal-segsize=1",
    })
    .withCommand(["postgres", ...flags])
    .withExposedPorts({ container: 5432, host: port })
    .withNetworkMode(ctx.network.name)
    .withAutoCleanup(false)
    .withStartupTimeout(timeoutMs)
    .withWaitStrategy(
      tc.Wait.forLogMessage(ctx.ready?.line ?? READY_LINE, ctx.ready?.times ?? (template ? 1 : 2)),
    );
  if (ctx.preStart) {
    definition.withEntrypoint([
      "bash",
      "-c",
      `${ctx.preStart}\nexec docker-entrypoint.sh "$@"`,
      "pgsw-entrypoint",
    ]);
  }
  let id: string | undefined;
  definition.onCreated = async (containerId) => {
    id = containerId;
    ctx.containers.set(spec.name, containerId);
    await prepare?.(containerId);
  };
  const docker = client.container.dockerode;
  const host = local ? "127.0.0.1" : client.info.containerRuntime.host;
  try {
    await definition.start();
    await waitConnectable(spec.name, host, port, template?.password ?? spec.password, timeoutMs);
    if (template) await setPassword(host, port, template.password, spec.password);
  } catch (error) {
    const log = id ? await containerLogTail(client, id, 15) : "";
    if (id) {
      await docker.getContainer(id).remove({ force: true, v: true }).catch(() => {});
      ctx.containers.delete(spec.name);
    }
    throw startError(spec, port, timeoutMs, error, log);
  }
  const containerId = id!;
  const container = docker.getContainer(containerId);
  const mounts = (await container.inspect()).Mounts ?? [];
  const volume = mounts.find((m: { Destination: string }) =>
    m.Destination === "/var/lib/postgresql/data"
  ) as { Name?: string } | undefined;
  let stopped = false;
  let removed = false;
  return {
    address: { host, port },
    peerAddress: { host: spec.name, port: 5432 },
    user: "postgres",
    database: "postgres",
    storage: `docker volume ${volume?.Name?.slice(0, 12) ?? "?"} of container ${name}`,
    logTail: (lines = 20) => containerLogTail(client, containerId, lines),
    stop: async ({ mode = "fast", remove = false } = {}) => {
      if (removed) return;
      if (!stopped) {
        stopped = true;
        if (mode === "immediate") {
          await container.kill({ signal: "SIGQUIT" }).catch(() => {});
          await container.wait({ condition: "not-running" }).catch(() => {});
        } else {
          await container.stop({ t: 10 }).catch(ignoreNotModified);
        }
      }
      if (remove) {
        removed = true;
        await container.remove({ force: true, v: true }).catch(() => {});
        ctx.containers.delete(spec.name);
      }
    },
    restart: async () => {
      if (removed) throw new Error(`Node "${spec.name}" was removed and cannot restart`);
      if (!stopped) return;
      await container.start();
      await waitConnectable(spec.name, host, port, spec.password, timeoutMs).catch(async (e) => {
        throw startError(spec, port, timeoutMs, e, await containerLogTail(client, containerId, 15));
      });
      stopped = false;
    },
  };
}

function ignoreNotModified(error: { statusCode?: number }): void {
  if (error?.statusCode !== 304 && error?.statusCode !== 404) throw error;
}

function startError(
  spec: NodeStartSpec,
  port: number,
  timeoutMs: number,
  error: unknown,
  log: string,
): WorkshopError {
  if (error instanceof WorkshopError) return error;
  const message = String((error as Error)?.message ?? error);
  if (/port is already allocated|address already in use/i.test(message)) {
    return new WorkshopError(
      "PORT_IN_USE",
      `Cannot start node "${spec.name}": port ${port} is already in use`,
      { fix: "Choose another port, or leave the port unset so a free one is picked", cause: error },
    );
  }
  if (/timed out|timeout/i.test(message)) {
    return new WorkshopError(
      "NODE_NOT_READY",
      `Node "${spec.name}" not ready after ${timeoutMs} ms (container port 5432 on 127.0.0.1:${port})`,
      {
        fix:
          "The machine may be overloaded; raise WORKSHOP_STARTUP_TIMEOUT_MS or read the log below",
        cause: error,
        details: log || message,
      },
    );
  }
  return new WorkshopError(
    "NODE_START_FAILED",
    `Container for node "${spec.name}" failed to start: ${message.split("\n")[0]}`,
    {
      fix:
        "Read the container log below; check the image (WORKSHOP_DOCKER_IMAGE) and `docker info`",
      cause: error,
      details: log || message,
    },
  );
}

/** Changes the superuser's password (a node made from the template gets the cluster's). */
async function setPassword(host: string, port: number, current: string, next: string) {
  const sql = postgres({
    host,
    port,
    user: "postgres",
    password: current,
    max: 1,
    onnotice: () => {},
  });
  try {
    await sql.unsafe(`ALTER ROLE postgres PASSWORD '${next.replaceAll("'", "''")}'`);
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** Polls until the server accepts a password login over the published port. */
async function waitConnectable(
  name: string,
  host: string,
  port: number,
  password: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const sql = postgres({
      host,
      port,
      user: "postgres",
      password,
      database: "postgres",
      max: 1,
      connect_timeout: 2,
      onnotice: () => {},
    });
    try {
      await sql`SELECT 1`;
      return;
    } catch (error) {
      last = error;
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {});
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new WorkshopError(
    "NODE_NOT_READY",
    `Node "${name}" not ready after ${timeoutMs} ms (port ${port})`,
    {
      fix: "The machine may be overloaded; raise WORKSHOP_STARTUP_TIMEOUT_MS or read the log below",
      details: String((last as Error)?.message ?? last),
    },
  );
}

interface ContainerExtras {
  network: string;
  aliases: string[];
  hostIp?: string;
}

type PgswContainer = InstanceType<TestcontainersModule["GenericContainer"]> & {
  onCreated?: (id: string) => Promise<void>;
};
type PgswContainerClass = new (image: string, extras: ContainerExtras) => PgswContainer;

let containerClassCache: PgswContainerClass | undefined;

/**
 * A GenericContainer that publishes its ports on one host address
 * (127.0.0.1) and joins its network with aliases at creation, so it is on
 * that network only (testcontainers would also attach it to the default bridge).
 */
function containerClass(tc: TestcontainersModule): PgswContainerClass {
  if (containerClassCache) return containerClassCache;
  class Container extends tc.GenericContainer {
    onCreated?: (id: string) => Promise<void>;
    #extras: ContainerExtras;
    constructor(image: string, extras: ContainerExtras) {
      super(image);
      this.#extras = extras;
    }
    protected override beforeContainerCreated(): Promise<void> {
      const bindings = this.hostConfig.PortBindings as
        | Record<string, { HostIp?: string; HostPort?: string }[]>
        | undefined;
      if (this.#extras.hostIp && bindings) {
        for (const list of Object.values(bindings)) {
          for (const binding of list) binding.HostIp = this.#extras.hostIp;
        }
      }
      this.createOpts.NetworkingConfig = {
        EndpointsConfig: { [this.#extras.network]: { Aliases: this.#extras.aliases } },
      };
      return Promise.resolve();
    }
    protected override async containerCreated(id: string): Promise<void> {
      await this.onCreated?.(id);
    }
  }
  containerClassCache = Container as unknown as PgswContainerClass;
  return containerClassCache;
}

/**
 * Copies the primary's data directory into a created (not started) container
 * inside an online backup, then adds backup_label, standby.signal and the
 * standby settings (appended to the primary's postgresql.auto.conf).
 */
async function copyForStandby(
  client: RuntimeClient,
  primaryId: string,
  targetId: string,
  plan: StandbyPlan,
): Promise<void> {
  const docker = client.container.dockerode;
  const primary = docker.getContainer(primaryId);
  const target = docker.getContainer(targetId);
  const label = await plan.withBackup(async () => {
    const archive = await primary.getArchive({ path: PGDATA });
    await target.putArchive(archive, { path: PGDATA.slice(0, PGDATA.lastIndexOf("/")) });
  });
  const autoConf = await readFileFromContainer(client, primaryId, `${PGDATA}/postgresql.auto.conf`);
  const lines = Object.entries(plan.autoConf).map(([k, v]) => `${k} = ${v}`).join("\n");
  const files = [
    { name: "data/backup_label", content: label },
    { name: "data/standby.signal", content: "" },
    {
      name: "data/postgresql.auto.conf",
      content: `${autoConf}\n# standby of ${plan.primary.name} (pg-scaleout-workshop)\n${lines}\n`,
    },
  ];
  await target.putArchive(Buffer.from(tarArchive(files, 999)), {
    path: PGDATA.slice(0, PGDATA.lastIndexOf("/")),
  });
}

/** Reads one file out of a container (Docker's archive API returns a tar). */
async function readFileFromContainer(
  client: RuntimeClient,
  id: string,
  path: string,
): Promise<string> {
  const stream = await client.container.dockerode.getContainer(id).getArchive({ path });
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream as AsyncIterable<Uint8Array>) chunks.push(chunk);
  const tar = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    tar.set(chunk, offset);
    offset += chunk.length;
  }
  const size = parseInt(
    new TextDecoder().decode(tar.subarray(124, 136)).replace(/\0.*$/, "").trim(),
    8,
  );
  return new TextDecoder().decode(tar.subarray(512, 512 + size));
}

/** A minimal ustar archive of regular files (mode 0600, owned by `uid`). */
function tarArchive(files: { name: string; content: string }[], uid: number): Uint8Array {
  const encoder = new TextEncoder();
  const blocks: Uint8Array[] = [];
  const octal = (value: number, length: number) =>
    value.toString(8).padStart(length - 1, "0") + "\0";
  for (const file of files) {
    const body = encoder.encode(file.content);
    const header = new Uint8Array(512);
    const put = (text: string, at: number) => header.set(encoder.encode(text), at);
    put(file.name, 0);
    put(octal(0o600, 8), 100);
    put(octal(uid, 8), 108);
    put(octal(uid, 8), 116);
    put(octal(body.length, 12), 124);
    put(octal(Math.floor(Date.now() / 1000), 12), 136);
    put("        ", 148); // checksum placeholder: spaces
    put("0", 156);
    put("ustar\0", 257);
    put("00", 263);
    const sum = header.reduce((a, b) => a + b, 0);
    put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    blocks.push(header, body, new Uint8Array((512 - (body.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}
