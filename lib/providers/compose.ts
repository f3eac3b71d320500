/**
 * The compose provider (`WORKSHOP_PROVIDER=compose`): the notebooks use a
 * running stack of the project's `docker-compose.yml` (eu_db_1..3,
 * us_db_1..3, the `db`/`replica` pair, Redis). Start it first:
 *
 * ```sh
 * docker-compose up -d        # or: docker compose up -d --wait
 * ```
 *
 * The provider finds the stack's PostgreSQL services by their labels
 * (`io.pgsw.region`, `io.pgsw.role`), reads each one's published port and
 * password from Docker, and places nodes like the external provider does:
 * each notebook node is a database `pgsw_<cluster>_<node>` on the service
 * named like the node (else one in the node's region), created at start and
 * dropped at stop, so the stack's own data is never touched and notebooks
 * can be re-run. Foreign servers reach each other by service name on the
 * stack's network; links between regions go through the cluster's delay
 * proxies, which listen on that network's gateway address.
 *
 * @module
 */

import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { getRegion, type RegionId } from "../regions.ts";
import { dockerClient, networkGateway, proxyEndpointFor } from "./_docker.ts";
import { type ExternalProvider, externalProvider, type ExternalServer } from "./external.ts";

/** Options for {@link composeProvider}. */
export interface ComposeProviderOptions {
  /** Cluster name, part of each database name. @default "workshop" */
  clusterName?: string;
  /** docker-compose project. @default settings().composeProject (WORKSHOP_COMPOSE_PROJECT), or the only one running */
  project?: string;
}

/** One PostgreSQL service of a running stack. */
export interface ComposeService {
  /** Service name, e.g. "eu_db_1". */
  name: string;
  /** Compose project. */
  project: string;
  /** Region from the `io.pgsw.region` label. */
  region: RegionId;
  /** Role from the `io.pgsw.role` label ("node", "primary", "replica"). */
  role: string;
  /** Published address on this machine. */
  host: string;
  port: number;
  /** Superuser and password from the container's environment. */
  user: string;
  password: string;
  /** Network shared by the stack's PostgreSQL services. */
  network: string;
}

/**
 * The PostgreSQL services of the running stack.
 *
 * @throws {WorkshopError} `DOCKER_UNAVAILABLE` when no engine answers or no stack runs;
 *   `INVALID_SETTING` when several stacks run and no project is chosen.
 */
export async function composeServices(
  project = settings().composeProject,
): Promise<ComposeService[]> {
  const client = await dockerClient();
  const docker = client.container.dockerode;
  const labels = ["io.pgsw.region", "com.docker.compose.service"];
  if (project) labels.push(`com.docker.compose.project=${project}`);
  const running = await docker.listContainers({ filters: { label: labels, status: ["running"] } });
  const projects = [...new Set(running.map((c) => c.Labels["com.docker.compose.project"]))];
  if (projects.length === 0) {
    throw new WorkshopError(
      "DOCKER_UNAVAILABLE",
      project
        ? `No running docker-compose stack "${project}" of this kit`
        : "No running docker-compose stack of this kit",
      {
        fix:
          "Start it in the project folder with `docker-compose up -d` (or `docker compose up -d`)" +
          (project ? ", or check WORKSHOP_COMPOSE_PROJECT" : ""),
      },
    );
  }
  if (projects.length > 1) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Several docker-compose stacks of this kit run: ${projects.join(", ")}`,
      { fix: `Choose one with WORKSHOP_COMPOSE_PROJECT (one of: ${projects.join(", ")})` },
    );
  }
  const services: ComposeService[] = [];
  for (const info of running) {
    const inspect = await docker.getContainer(info.Id).inspect();
    const env = Object.fromEntries(
      (inspect.Config.Env ?? []).map((
        e: string,
      ) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]),
    );
    const published = (inspect.NetworkSettings.Ports?.["5432/tcp"] ?? [])
      .find((p: { HostIp: string }) =>
        p.HostIp === "127.0.0.1" || p.HostIp === "0.0.0.0" || p.HostIp === ""
      );
    const name = info.Labels["com.docker.compose.service"];
    if (!published) {
      throw new WorkshopError(
        "INVALID_SETTING",
        `Compose service "${name}" does not publish port 5432`,
        { fix: 'Publish it in docker-compose.yml (ports: ["127.0.0.1::5432"])' },
      );
    }
    services.push({
      name,
      project: info.Labels["com.docker.compose.project"],
      region: getRegion(info.Labels["io.pgsw.region"]).id,
      role: info.Labels["io.pgsw.role"] ?? "node",
      host: "127.0.0.1",
      port: Number(published.HostPort),
      user: env.POSTGRES_USER || "postgres",
      password: env.POSTGRES_PASSWORD ?? "",
      network: Object.keys(inspect.NetworkSettings.Networks ?? {})[0] ?? "",
    });
  }
  return services.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Creates the compose provider for one cluster.
 *
 * @example
 * ```ts
 * // after `docker-compose up -d`
 * await using cluster = await startCluster({ name: "demo", provider: "compose", nodes: [{ name: "eu_db_1" }] });
 * ```
 */
export async function composeProvider(
  options: ComposeProviderOptions = {},
): Promise<ExternalProvider> {
  const [client, services] = await Promise.all([
    dockerClient(),
    composeServices(options.project ?? settings().composeProject),
  ]);
  const writable = services.filter((s) => s.role !== "replica");
  const servers: ExternalServer[] = writable.map((s) => ({
    name: s.name,
    url: `postgres://${encodeURIComponent(s.user)}:${
      encodeURIComponent(s.password)
    }@${s.host}:${s.port}/postgres`,
    region: s.region,
    peerHost: s.name,
    peerPort: 5432,
  }));
  const gateway = await networkGateway(writable[0].network);
  return await externalProvider({
    clusterName: options.clusterName,
    servers,
    kind: "compose",
    simulatesLatency: true,
    proxyEndpoint: () => proxyEndpointFor(client, gateway),
  });
}
