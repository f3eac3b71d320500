/**
 * Section "bringup": time until a 6-node cluster answers queries, with the
 * postgres_fdw links of notebook 01 (eu_db_1 linked to eu_db_2, eu_db_3 and
 * us_db_1..3 in us-east-1), as a ratio to one bare node (initdb into tmpfs,
 * start, first query) timed in the same run; and the same cluster on the
 * Docker provider as a ratio to the embedded one, when an engine answers.
 *
 * @module
 */

import postgres from "postgres";
import { configure, linkNodes, settings, startCluster } from "../lib/mod.ts";
import type { Cluster, NodeOptions, NodeProvider } from "../lib/mod.ts";
import { currentRun } from "../lib/_runs.ts";
import { freePort } from "../lib/ports.ts";
import { asUser, pgBinaries, pgRunAs } from "../lib/providers/_pg_binaries.ts";
import { initdbArgs } from "../lib/providers/embedded.ts";
import {
  atMost,
  firstLine,
  formatMs,
  interleave,
  median,
  ratio,
  type Row,
  spread,
  timed,
} from "./_measure.ts";
import type { SectionContext, SectionResult } from "./bench.ts";

/** The nodes of notebook 01's full topology. */
export const SIX_NODES: NodeOptions[] = [
  { name: "eu_db_1", region: "eu-west-2", role: "coordinator" },
  { name: "eu_db_2", region: "eu-west-2", role: "shard" },
  { name: "eu_db_3", region: "eu-west-2", role: "shard" },
  { name: "us_db_1", region: "us-east-1", role: "shard" },
  { name: "us_db_2", region: "us-east-1", role: "shard" },
  { name: "us_db_3", region: "us-east-1", role: "shard" },
];

/** Goal: the 6-node cluster within this many bare single-node bring-ups. */
const GOAL_EMBEDDED = 2.0;

/**
 * Starts the 6-node cluster, links eu_db_1 to the five others, and waits
 * until every node answers `SELECT 1`. Returns the cluster (running).
 */
export async function sixNodeCluster(
  name: string,
  provider?: NodeProvider,
): Promise<Cluster> {
  const cluster = await startCluster({ name, nodes: SIX_NODES, provider });
  try {
    const eu1 = cluster.node("eu_db_1");
    for (const node of cluster.nodes.slice(1)) await linkNodes(eu1, node);
    await Promise.all(cluster.nodes.map((node) => node.sql`SELECT 1`));
    return cluster;
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}

/**
 * One bare node the way PostgreSQL's own tools make it, with the kit's
 * binaries and without its template: `initdb` into a fresh directory on
 * tmpfs (the run directory, so the reaper covers it), start `postgres`,
 * wait until it accepts a connection and answers `SELECT 1`. Resolves with
 * a function that stops the node and removes its directory (not timed).
 */
export async function bareNode(): Promise<{ ms: number; stop: () => Promise<void> }> {
  const [bins, user, run] = await Promise.all([pgBinaries(), pgRunAs(), currentRun()]);
  const dir = await Deno.makeTempDir({ dir: run.nodesDir, prefix: "bare-" });
  const password = crypto.randomUUID();
  await Deno.writeTextFile(`${dir}/pwfile`, password + "\n");
  if (user.uid !== undefined) {
    for (const path of [dir, `${dir}/pwfile`]) await Deno.chown(path, user.uid, user.gid ?? null);
  }
  const port = await freePort();
  let child: Deno.ChildProcess | undefined;
  const stop = async () => {
    if (child) {
      try {
        child.kill("SIGQUIT");
      } catch { /* gone */ }
      await child.status;
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const ms = await timed(async () => {
      // The same initdb flags as the embedded provider's template.
      const init = await new Deno.Command(bins.initdb, {
        args: initdbArgs(`${dir}/data`, `${dir}/pwfile`),
        ...asUser(user),
        env: { LC_ALL: "C" },
        stdout: "null",
        stderr: "piped",
      }).output();
      if (!init.success) throw new Error(`initdb failed: ${new TextDecoder().decode(init.stderr)}`);
      child = new Deno.Command("sh", {
        args: [
          "-c",
          'exec "$0" "$@" >>"$LOG" 2>&1',
          bins.postgres,
          "-D",
          `${dir}/data`,
          "-c",
          `port=${port}`,
          "-c",
          "listen_addresses=127.0.0.1",
          "-c",
          "unix_socket_directories=",
        ],
        env: { LOG: `${dir}/postgres.log`, LC_ALL: "C" },
        ...asUser(user),
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      await untilReady(`${dir}/data/postmaster.pid`, child, `${dir}/postgres.log`);
      const sql = postgres({
        host: "127.0.0.1",
        port,
        user: "postgres",
        password,
        database: "postgres",
        max: 1,
        onnotice: () => {},
      });
      try {
        await sql`SELECT 1`;
      } finally {
        await sql.end({ timeout: 1 });
      }
    });
    return { ms, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Polls postmaster.pid every 5 ms until the server says "ready" (pg_ctl -w polls every 100 ms). */
async function untilReady(pidFile: string, child: Deno.ChildProcess, log: string): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(pidFile).catch(() => "");
    if (text.split("\n")[7]?.trim() === "ready") return;
    if (exited) {
      throw new Error(`postgres exited while starting: ${await Deno.readTextFile(log)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`Bare node not ready after 30000 ms (${pidFile})`);
}

/** The Docker image for the docker row: PGSW_DOCKER_IMAGE, else the kit's setting. */
export function benchDockerImage(): string {
  return Deno.env.get("PGSW_DOCKER_IMAGE")?.trim() || settings().dockerImage;
}

/** Runs the section. */
export async function bringup(ctx: SectionContext): Promise<SectionResult> {
  const runs = ctx.quick ? 2 : 5;
  const before = settings().latencyScale;
  configure({ latencyScale: 1 }); // the learner's default: the us nodes get delay proxies
  const teardown: Record<string, number[]> = { embedded: [], docker: [] };
  const image = benchDockerImage();
  try {
    // Docker: one warm-up cluster decides whether the row is measured at all
    // (it also creates the provider's data-directory template for the image).
    const docker = ctx.docker
      ? await dockerProviderFor(image)
      : { skip: "--no-docker was given", make: undefined };
    let dockerSkip = docker.skip;
    if (!dockerSkip) {
      ctx.log(`  docker: warm-up cluster on ${image}`);
      try {
        const cluster = await sixNodeCluster("bench-bringup-docker", await docker.make!());
        await cluster.stop();
      } catch (error) {
        dockerSkip = `the docker provider failed: ${firstLine(error)}`;
      }
    }
    const measure: Record<string, () => Promise<number>> = {
      bare: async () => {
        const node = await bareNode();
        await node.stop();
        return node.ms;
      },
      embedded: async () => {
        let cluster: Cluster | undefined;
        const ms = await timed(async () => cluster = await sixNodeCluster("bench-bringup"));
        teardown.embedded.push(await timed(() => cluster!.stop()));
        return ms;
      },
    };
    if (!dockerSkip) {
      measure.docker = async () => {
        if (dockerSkip) return NaN;
        try {
          let cluster: Cluster | undefined;
          const ms = await timed(async () =>
            cluster = await sixNodeCluster("bench-bringup-docker", await docker.make!())
          );
          teardown.docker.push(await timed(() => cluster!.stop()));
          return ms;
        } catch (error) {
          dockerSkip = `the docker provider failed: ${firstLine(error)}`;
          return NaN;
        }
      };
    }
    const values = await interleave(measure, { warmup: 1, runs });
    for (const [key, list] of Object.entries(values)) {
      ctx.log(`  ${key}: ${list.map(formatMs).join(", ")}`);
    }
    const bare = median(values.bare);
    const embedded = median(values.embedded);
    const embeddedRatio = ratio(embedded, bare);
    const rows: Row[] = [{
      section: "bringup",
      figure: "6-node cluster + 5 FDW links, embedded / one bare initdb+start",
      goal: `<= ${GOAL_EMBEDDED.toFixed(1)}x`,
      measured: `${formatMs(embedded)} vs ${formatMs(bare)}`,
      ratio: embeddedRatio,
      status: atMost(embeddedRatio, GOAL_EMBEDDED),
    }];
    const data: Record<string, unknown> = {
      latencyScale: 1,
      runs,
      bareMs: spread(values.bare),
      embeddedMs: spread(values.embedded),
      embeddedTeardownMs: spread(teardown.embedded),
      embeddedOverBare: embeddedRatio,
    };
    if (dockerSkip) {
      rows.push({
        section: "bringup",
        figure: "6-node cluster + 5 FDW links, docker / embedded",
        goal: "",
        measured: "not measured",
        ratio: null,
        status: "skipped",
        note: dockerSkip,
      });
      data.docker = { skipped: dockerSkip, image };
    } else {
      const dockerMs = median(values.docker);
      const dockerRatio = ratio(dockerMs, embedded);
      rows.push({
        section: "bringup",
        figure: "6-node cluster + 5 FDW links, docker / embedded",
        goal: "",
        measured: `${formatMs(dockerMs)} vs ${formatMs(embedded)}`,
        ratio: dockerRatio,
        status: "info",
        note: `image ${image}`,
      });
      data.docker = {
        image,
        ms: spread(values.docker),
        teardownMs: spread(teardown.docker),
        overEmbedded: dockerRatio,
      };
    }
    return { rows, data };
  } finally {
    configure({ latencyScale: before });
  }
}

/** A fresh docker provider per cluster, or why there is none. */
async function dockerProviderFor(
  image: string,
): Promise<{ skip?: string; make?: () => Promise<NodeProvider> }> {
  const engine = await new Deno.Command("docker", {
    args: ["version", "--format", "{{.Server.Version}}"],
    stdout: "null",
    stderr: "piped",
  }).output().catch((error) => ({
    success: false,
    stderr: new TextEncoder().encode(String(error)),
  }));
  if (!engine.success) {
    return {
      skip: `no Docker engine answers (${
        new TextDecoder().decode(engine.stderr).trim().split("\n")[0] || "docker not found"
      })`,
    };
  }
  try {
    const { dockerProvider } = await import("../lib/providers/docker.ts");
    return { make: () => dockerProvider({ clusterName: "bench-bringup-docker", image }) };
  } catch (error) {
    return { skip: `lib/providers/docker.ts does not load: ${firstLine(error)}` };
  }
}
