/**
 * CockroachDB for notebook 01's "After" section: a URL from `COCKROACH_URL`,
 * or a cluster of `cockroachdb/cockroach` containers started through the
 * Docker engine with the source's localities, or a reason why neither is
 * possible (the notebook then shows the reason instead of running the section).
 *
 * @module
 */

import postgres from "postgres";
import type { Cluster } from "../cluster.ts";
import { settings } from "../config.ts";
import { isWorkshopError } from "../errors.ts";
import { freePort } from "../ports.ts";
import type { RegionId } from "../regions.ts";
import {
  acquireRunLabel,
  containerLogTail,
  createNetwork,
  dockerClient,
  ensureImage,
  releaseRunLabel,
  sweepStaleDockerRuns,
} from "./_docker.ts";

/** Options for {@link cockroachEndpoint}. */
export interface CockroachOptions {
  /** Nodes to start per region (Docker only). @default { "eu-west-2": 3 } */
  nodes?: Partial<Record<RegionId, number>>;
  /** A cluster that stops the CockroachDB nodes with its own (as service "cockroach"). */
  cluster?: Cluster;
  /** Image. @default settings().cockroachImage (WORKSHOP_COCKROACH_IMAGE) */
  image?: string;
}

/** One CockroachDB node. */
export interface CockroachNode {
  name: string;
  region: RegionId;
}

/** A CockroachDB cluster to connect to. */
export interface CockroachAvailable {
  available: true;
  /** `postgres://root@127.0.0.1:<port>/defaultdb?sslmode=disable` (or COCKROACH_URL). */
  url: string;
  /** Where it came from. */
  source: "COCKROACH_URL" | "docker";
  /** Nodes started (empty for COCKROACH_URL). */
  nodes: CockroachNode[];
  /** Starts one more node in `region` (Docker only; the source's "Year 5" scale-up). */
  addNode(region: RegionId): Promise<CockroachNode>;
  /** Removes the containers (nothing for COCKROACH_URL). Idempotent. */
  stop(): Promise<void>;
}

/** Why no CockroachDB is available. */
export interface CockroachUnavailable {
  available: false;
  url: undefined;
  /** What is missing, in a sentence. */
  reason: string;
  /** How to get one. */
  fix: string;
}

/** The outcome of {@link cockroachEndpoint}. */
export type CockroachEndpoint = CockroachAvailable | CockroachUnavailable;

/**
 * A CockroachDB to run notebook 01's "After" section on: `COCKROACH_URL`
 * when set; else containers of `WORKSHOP_COCKROACH_IMAGE` started with
 * `--locality=region=<region>`; else `{ available: false, reason }`. Never
 * throws for a missing engine or image.
 *
 * @example
 * ```ts
 * const roach = await cockroachEndpoint({ cluster, nodes: { "eu-west-2": 3 } });
 * if (roach.available) {
 *   const sql = postgres(roach.url);
 * } else {
 *   await show(callout("note", `Skipped: ${roach.reason}`));
 * }
 * ```
 */
export async function cockroachEndpoint(
  options: CockroachOptions = {},
): Promise<CockroachEndpoint> {
  const fromEnv = Deno.env.get("COCKROACH_URL")?.trim();
  if (fromEnv) {
    return {
      available: true,
      url: fromEnv,
      source: "COCKROACH_URL",
      nodes: [],
      addNode: () =>
        Promise.reject(new Error("COCKROACH_URL is set: add nodes to that cluster yourself")),
      stop: () => Promise.resolve(),
    };
  }
  const image = options.image ?? settings().cockroachImage;
  try {
    await dockerClient();
    await ensureImage(image, "WORKSHOP_COCKROACH_IMAGE");
  } catch (error) {
    const reason = isWorkshopError(error, "IMAGE_UNAVAILABLE")
      ? `the CockroachDB image ${image} is not present and cannot be pulled`
      : "no Docker engine answers, so no CockroachDB containers can start";
    return {
      available: false,
      url: undefined,
      reason,
      fix:
        `Set COCKROACH_URL to a CockroachDB you run (postgres://root@host:26257/defaultdb?sslmode=disable), ` +
        `or make ${image} available to Docker (docker pull ${image}; or docker-compose --profile cockroach up -d ` +
        `and COCKROACH_URL=postgres://root@127.0.0.1:26257/defaultdb?sslmode=disable)`,
    };
  }
  const started = await startCockroach(image, options.nodes ?? { "eu-west-2": 3 });
  if (options.cluster) {
    options.cluster.addService({
      name: "cockroach",
      region: started.nodes[0]?.region ?? "eu-west-2",
      address: started.address,
      stop: () => started.stop(),
    });
  }
  return started;
}

async function startCockroach(
  image: string,
  perRegion: Partial<Record<RegionId, number>>,
): Promise<CockroachAvailable & { address: { host: string; port: number } }> {
  const client = await dockerClient();
  const docker = client.container.dockerode;
  await sweepStaleDockerRuns();
  const run = await acquireRunLabel();
  const network = await createNetwork(
    `pgsw-cockroach-${crypto.randomUUID().slice(0, 8)}`,
    run.labels,
  )
    .catch(async (error) => {
      await releaseRunLabel();
      throw error;
    });
  const ids: string[] = [];
  const nodes: CockroachNode[] = [];
  const regions = Object.entries(perRegion).flatMap(([region, n]) =>
    Array.from({ length: n ?? 0 }, () => region as RegionId)
  );
  const join = regions.slice(0, 3).map((_, i) => `roach_${i + 1}`).join(",");
  const port = await freePort();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(
      ids.map((id) => docker.getContainer(id).remove({ force: true, v: true }).catch(() => {})),
    );
    await network.remove().catch(() => {});
    await releaseRunLabel();
  };
  const startNode = async (region: RegionId, publish: boolean): Promise<CockroachNode> => {
    const name = `roach_${nodes.length + 1}`;
    nodes.push({ name, region });
    const container = await docker.createContainer({
      Image: image,
      name: `pgsw-${name}-${crypto.randomUUID().slice(0, 6)}`,
      Labels: { ...run.labels, "io.pgsw.node": name, "io.pgsw.region": region },
      Cmd: [
        "start",
        "--insecure",
        `--locality=region=${region}`,
        `--join=${join || name}`,
        `--advertise-addr=${name}`,
        "--store=path=/cockroach/cockroach-data,size=1GB",
        "--cache=128MiB",
      ],
      ExposedPorts: { "26257/tcp": {} },
      HostConfig: {
        NetworkMode: network.name,
        PortBindings: publish
          ? { "26257/tcp": [{ HostIp: "127.0.0.1", HostPort: String(port) }] }
          : {},
      },
      NetworkingConfig: { EndpointsConfig: { [network.name]: { Aliases: [name] } } },
    });
    ids.push(container.id);
    await container.start();
    return { name, region };
  };
  try {
    await Promise.all(regions.map((region, i) => startNode(region, i === 0)));
    const first = docker.getContainer(ids[0]);
    const deadline = Date.now() + settings().startupTimeoutMs * 2;
    // `cockroach init` once; it fails until the nodes listen, and says so when already done.
    while (true) {
      const exec = await first.exec({
        Cmd: ["/cockroach/cockroach", "init", "--insecure", "--host=roach_1"],
        AttachStdout: true,
        AttachStderr: true,
      });
      const stream = await exec.start({});
      const output = await new Promise<string>((resolve) => {
        let text = "";
        stream.on("data", (chunk: Uint8Array) => text += new TextDecoder().decode(chunk));
        stream.on("end", () => resolve(text));
      });
      if (/initialized|already been initialized/.test(output)) break;
      if (Date.now() > deadline) throw new Error(`cockroach init did not succeed: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const url = `postgres://root@127.0.0.1:${port}/defaultdb?sslmode=disable`;
    while (true) {
      const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
      try {
        await sql`SELECT 1`;
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500));
      } finally {
        await sql.end({ timeout: 1 }).catch(() => {});
      }
    }
    return {
      available: true,
      url,
      source: "docker",
      nodes,
      address: { host: "127.0.0.1", port },
      addNode: (region) => startNode(region, false),
      stop,
    };
  } catch (error) {
    const log = ids[0] ? await containerLogTail(client, ids[0], 20) : "";
    await stop();
    throw Object.assign(
      new Error(`CockroachDB did not start: ${(error as Error).message}\n${log}`),
      {
        cause: error,
      },
    );
  }
}
