/**
 * Private Docker helpers shared by the docker and compose providers, the
 * CockroachDB endpoint and the preflight: the engine client (through
 * testcontainers, loaded on demand), image checks, the run's label and the
 * label-scoped clean-up.
 *
 * Labels on everything this kit creates:
 *
 * | label           | value                                                  |
 * |-----------------|--------------------------------------------------------|
 * | `io.pgsw.kit`   | `pg-scaleout-workshop`                                 |
 * | `io.pgsw.run`   | `<hostname>-<run directory name>`: one process's run   |
 * | `io.pgsw.host`  | the hostname (stale sweep only looks at its own host)  |
 * | `io.pgsw.rundir`| the run directory's path                               |
 *
 * `<runDir>/docker-label` holds `io.pgsw.run=<value>`; the reaper in
 * `_runs.ts` removes the containers and networks carrying exactly that label
 * when the process ends, however it ends. Nothing unlabelled is ever removed.
 *
 * @module
 */

import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { currentRun } from "../_runs.ts";

// Types only: the module itself loads on demand (see loadTestcontainers).
import type * as Testcontainers from "testcontainers";

/** The testcontainers module. */
export type TestcontainersModule = typeof Testcontainers;
/** The container runtime client of testcontainers (dockerode inside). */
export type RuntimeClient = Awaited<ReturnType<TestcontainersModule["getContainerRuntimeClient"]>>;

/** Label keys and the kit's label value. */
export const LABEL_KIT = "io.pgsw.kit";
export const LABEL_RUN = "io.pgsw.run";
export const LABEL_HOST = "io.pgsw.host";
export const LABEL_RUNDIR = "io.pgsw.rundir";
export const KIT = "pg-scaleout-workshop";

let tcModule: Promise<TestcontainersModule> | undefined;

/** Imports testcontainers once (it takes ~0.5 s, so only when Docker is used). */
export function loadTestcontainers(): Promise<TestcontainersModule> {
  tcModule ??= import("testcontainers").catch((error) => {
    tcModule = undefined;
    throw new WorkshopError("DOCKER_UNAVAILABLE", "Cannot load npm:testcontainers", {
      fix: "Run `deno install` in the project folder (it fetches testcontainers from npm)",
      cause: error,
      details: String((error as Error)?.message ?? error),
    });
  });
  return tcModule;
}

/**
 * The Docker engine client, or `DOCKER_UNAVAILABLE` saying what was tried
 * and how to fix it (DOCKER_HOST, the engine not running).
 */
export async function dockerClient(): Promise<RuntimeClient> {
  const tc = await loadTestcontainers();
  try {
    return await tc.getContainerRuntimeClient();
  } catch (error) {
    const host = Deno.env.get("DOCKER_HOST");
    const message = String((error as Error)?.message ?? error);
    throw new WorkshopError(
      "DOCKER_UNAVAILABLE",
      host
        ? `No Docker engine answers at DOCKER_HOST=${host}`
        : "No Docker engine answers (tried /var/run/docker.sock and the usual places)",
      {
        fix: host
          ? `Check DOCKER_HOST (\`docker info\` must work with it), or unset it to use the local socket; ` +
            `or use WORKSHOP_PROVIDER=embedded`
          : "Install Docker and start its engine (`docker info` must work; on this kit's CI: .ci/docker.sh), " +
            "or use WORKSHOP_PROVIDER=embedded",
        cause: error,
        details: message,
      },
    );
  }
}

/**
 * Whether the engine shares this machine's network (ports are then published
 * on its loopback only). True for a loopback host, and also for an address
 * of one of this machine's own interfaces: testcontainers answers with the
 * bridge gateway (172.17.0.1) whenever it runs inside a container
 * (/.dockerenv), even when the engine runs in that same container.
 */
export function engineIsLocal(client: RuntimeClient): boolean {
  const host = client.info.containerRuntime.host;
  if (host === "localhost" || host === "127.0.0.1" || host === "::1") return true;
  try {
    return Deno.networkInterfaces().some((nic) => nic.address === host);
  } catch {
    return false; // no --allow-sys: keep testcontainers' answer
  }
}

const checkedImages = new Map<string, Promise<void>>();

/**
 * Makes sure `image` is present on the engine, pulling it when missing.
 *
 * @throws {WorkshopError} `IMAGE_UNAVAILABLE` when it is neither present nor pullable.
 */
export function ensureImage(image: string, setting = "WORKSHOP_DOCKER_IMAGE"): Promise<void> {
  let pending = checkedImages.get(image);
  if (!pending) {
    pending = checkImage(image, setting).catch((error) => {
      checkedImages.delete(image);
      throw error;
    });
    checkedImages.set(image, pending);
  }
  return pending;
}

async function checkImage(image: string, setting: string): Promise<void> {
  const [tc, client] = await Promise.all([loadTestcontainers(), dockerClient()]);
  const name = tc.ImageName.fromString(image);
  if (await client.image.exists(name)) return;
  try {
    await client.image.pull(name, { force: false, platform: undefined });
  } catch (error) {
    throw new WorkshopError(
      "IMAGE_UNAVAILABLE",
      `Docker image "${image}" is not present and cannot be pulled`,
      {
        fix: `Pull it where a registry is reachable (docker pull ${image}), or point ${setting} ` +
          `at an image you have (without a registry: docker/standin/build.sh builds ` +
          `pgsw-standin/postgres:16; then ${setting}=pgsw-standin/postgres:16)`,
        cause: error,
        details: String((error as Error)?.message ?? error).split("\n")[0],
      },
    );
  }
  if (!await client.image.exists(name)) {
    throw new WorkshopError(
      "IMAGE_UNAVAILABLE",
      `Docker image "${image}" is still missing after a pull`,
      {
        fix: `Check \`docker image ls ${image}\` and ${setting}`,
      },
    );
  }
}

/** The labels that mark what this process creates, and the run's label filter. */
export interface RunLabels {
  /** Labels to put on containers and networks. */
  labels: Record<string, string>;
  /** `io.pgsw.run=<value>`, as written to `<runDir>/docker-label`. */
  filter: string;
}

let live = 0;

/**
 * The labels of this process's run. Writes `<runDir>/docker-label` so that
 * the reaper removes what carries the label if this process dies. Each call
 * must be paired with {@link releaseRunLabel} once the labelled things are gone.
 */
export async function acquireRunLabel(): Promise<RunLabels> {
  const run = await currentRun();
  const value = `${Deno.hostname()}-${run.path.split("/").pop()}`;
  const filter = `${LABEL_RUN}=${value}`;
  live++;
  await Deno.writeTextFile(`${run.path}/docker-label`, filter + "\n");
  return {
    labels: {
      [LABEL_KIT]: KIT,
      [LABEL_RUN]: value,
      [LABEL_HOST]: Deno.hostname(),
      [LABEL_RUNDIR]: run.path,
    },
    filter,
  };
}

/** Releases one {@link acquireRunLabel}; the last release removes `<runDir>/docker-label`. */
export async function releaseRunLabel(): Promise<void> {
  live = Math.max(0, live - 1);
  if (live > 0) return;
  const run = await currentRun();
  await Deno.remove(`${run.path}/docker-label`).catch(() => {});
}

let swept: Promise<number> | undefined;

/**
 * Removes, once per process, what crashed runs of this machine left (see
 * {@link removeStaleDockerRuns}); later calls return the first result.
 */
export function sweepStaleDockerRuns(): Promise<number> {
  swept ??= removeStaleDockerRuns().catch((error) => {
    swept = undefined;
    throw error;
  });
  return swept;
}

/**
 * Removes containers and networks of this kit, made on this host, whose run
 * directory no longer exists (their process died and its reaper could not
 * clean up, or the run directory was wiped). Returns how many containers
 * were removed. Touches nothing without the kit's label, nothing made on
 * another host, and nothing of a run whose directory exists.
 */
export async function removeStaleDockerRuns(): Promise<number> {
  await currentRun(); // reclaims stale run directories first (their reaper removes their containers)
  const client = await dockerClient();
  const docker = client.container.dockerode;
  const filters = { label: [`${LABEL_KIT}=${KIT}`, `${LABEL_HOST}=${Deno.hostname()}`] };
  const stale = async (labels: Record<string, string> | undefined) => {
    const dir = labels?.[LABEL_RUNDIR];
    return !!dir && !await Deno.stat(dir).then(() => true, () => false);
  };
  let removed = 0;
  for (const info of await docker.listContainers({ all: true, filters })) {
    if (!await stale(info.Labels)) continue;
    await docker.getContainer(info.Id).remove({ force: true, v: true }).catch(() => {});
    removed++;
  }
  for (const net of await docker.listNetworks({ filters })) {
    if (!await stale(net.Labels)) continue;
    await docker.getNetwork(net.Id).remove().catch(() => {});
  }
  if (removed > 0) {
    console.log(`Removed ${removed} stale container(s) left by crashed workshop runs`);
  }
  return removed;
}

/** Removes every container and network carrying `filter` (`key=value`); returns the container count. */
export async function removeLabelled(filter: string): Promise<number> {
  const client = await dockerClient();
  const docker = client.container.dockerode;
  const filters = { label: [filter] };
  const containers = await docker.listContainers({ all: true, filters });
  await Promise.all(
    containers.map((c) =>
      docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})
    ),
  );
  for (const net of await docker.listNetworks({ filters })) {
    await docker.getNetwork(net.Id).remove().catch(() => {});
  }
  return containers.length;
}

/** A user-defined bridge network with the run's labels. */
export interface LabelledNetwork {
  /** Network name. */
  name: string;
  /** Network id. */
  id: string;
  /** The gateway IP: this machine's address on the network (where containers reach it). */
  gateway: string;
  /** Removes the network (after its containers). */
  remove(): Promise<void>;
}

/** Creates a labelled bridge network named `name`. */
export async function createNetwork(
  name: string,
  labels: Record<string, string>,
): Promise<LabelledNetwork> {
  const client = await dockerClient();
  const network = await client.network.create({
    Name: name,
    CheckDuplicate: true,
    Driver: "bridge",
    Labels: labels,
  });
  const info = await network.inspect();
  const gateway = info.IPAM?.Config?.[0]?.Gateway as string | undefined;
  return {
    name,
    id: network.id,
    gateway: gateway ?? "",
    remove: async () => {
      await network.remove().catch((error: { statusCode?: number }) => {
        if (error?.statusCode !== 404) throw error;
      });
    },
  };
}

/** The gateway IP of an existing network (by name or id), or "". */
export async function networkGateway(nameOrId: string): Promise<string> {
  const client = await dockerClient();
  const info = await client.container.dockerode.getNetwork(nameOrId).inspect();
  return (info.IPAM?.Config?.[0]?.Gateway as string | undefined) ?? "";
}

/**
 * Where a delay proxy for traffic from containers must listen, and the
 * host containers use to reach it. On Linux engines: the network's gateway
 * IP (this machine's address on that bridge), so nothing listens beyond it.
 * On Docker Desktop: loopback, reached as `host.docker.internal`.
 */
export function proxyEndpointFor(
  client: RuntimeClient,
  gateway: string,
): { listenHost: string; reachableHost: string } {
  if (/docker desktop/i.test(client.info.containerRuntime.operatingSystem ?? "")) {
    return { listenHost: "127.0.0.1", reachableHost: "host.docker.internal" };
  }
  if (!gateway) {
    throw new WorkshopError(
      "DOCKER_UNAVAILABLE",
      "Cannot simulate latency between containers: the network has no gateway address",
      { fix: "Set LATENCY_SCALE=0, or use a local Docker engine with bridge networks" },
    );
  }
  return { listenHost: gateway, reachableHost: gateway };
}

/** The last `lines` lines of a container's log (stdout and stderr). */
export async function containerLogTail(
  client: RuntimeClient,
  id: string,
  lines: number,
): Promise<string> {
  try {
    const buffer = await client.container.dockerode.getContainer(id).logs({
      stdout: true,
      stderr: true,
      tail: lines,
      follow: false,
    }) as unknown as Uint8Array;
    return demuxLogs(buffer).trimEnd();
  } catch (error) {
    return `(no log: ${(error as Error).message})`;
  }
}

/** Docker's multiplexed log stream (8-byte frame headers) as text. */
function demuxLogs(buffer: Uint8Array): string {
  const decoder = new TextDecoder();
  let out = "";
  let i = 0;
  const framed = buffer.length >= 8 && buffer[0] <= 2 && buffer[1] === 0 && buffer[2] === 0 &&
    buffer[3] === 0;
  if (!framed) return decoder.decode(buffer);
  while (i + 8 <= buffer.length) {
    const size = (buffer[i + 4] << 24) | (buffer[i + 5] << 16) | (buffer[i + 6] << 8) |
      buffer[i + 7];
    out += decoder.decode(buffer.subarray(i + 8, i + 8 + size));
    i += 8 + size;
  }
  return out;
}

/** A docker-safe name part: lower case letters, digits, `-` and `_`. */
export function dockerName(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").replace(/^[^a-z0-9]+/, "")
    .slice(0, 40) || "x";
}

/** The image setting, for messages. */
export function dockerImage(): string {
  return settings().dockerImage;
}

/** One line about the engine: version, API, where it answers. */
export async function describeEngine(): Promise<string> {
  const client = await dockerClient();
  const rt = client.info.containerRuntime;
  const where = Deno.env.get("DOCKER_HOST") ?? rt.remoteSocketPath ?? rt.host;
  return `Docker ${rt.serverVersion} (${rt.operatingSystem}) at ${where}`;
}
