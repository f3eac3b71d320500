/**
 * Tests of docker-compose.yml and the compose provider. They need a Docker
 * engine, `docker-compose` (v1.27+) or `docker compose`, and the images
 * (PGSW_DOCKER_IMAGE / PGSW_REDIS_IMAGE, CI: the stand-ins). Without them the
 * tests are skipped with the reason printed, unless PGSW_REQUIRE_DOCKER=1.
 */

import assert from "node:assert/strict";
import { configure, isWorkshopError, linkNodes, settings, startCluster } from "../lib/mod.ts";
import { composeServices } from "../lib/providers/compose.ts";
import type { ExternalProvider } from "../lib/providers/external.ts";
import { portableNotebookCopy, runReport } from "./_provider_helpers.ts";

const PG_IMAGE = Deno.env.get("PGSW_DOCKER_IMAGE") ?? "postgres:16";
const REDIS_IMAGE = Deno.env.get("PGSW_REDIS_IMAGE") ?? "redis:7";
const REQUIRE = Deno.env.get("PGSW_REQUIRE_DOCKER") === "1";
const ROOT = new URL("..", import.meta.url).pathname;
const compose = await findCompose();
const skipReason = await composeSkipReason();
const ignore = skipReason !== undefined && !REQUIRE;
if (ignore) console.log(`Skipping the compose tests: ${skipReason}`);

/** The stand-in images, and every published port picked by Docker (no clashes). */
const ENV: Record<string, string> = {
  PGSW_POSTGRES_IMAGE: PG_IMAGE,
  PGSW_REDIS_IMAGE: REDIS_IMAGE,
  ...Object.fromEntries(
    ["EU_DB_1", "EU_DB_2", "EU_DB_3", "US_DB_1", "US_DB_2", "US_DB_3", "DB", "REPLICA", "REDIS"]
      .map((v) => [`PGSW_${v}_PORT`, "0"]),
  ),
};

async function findCompose(): Promise<string[] | undefined> {
  for (const cmd of [["docker-compose"], ["docker", "compose"]]) {
    const ok = await new Deno.Command(cmd[0], {
      args: [...cmd.slice(1), "version"],
      stdout: "null",
      stderr: "null",
    }).output().then((o) => o.success, () => false);
    if (ok) return cmd;
  }
  return undefined;
}

async function composeSkipReason(): Promise<string | undefined> {
  if (!compose) {
    return "neither docker-compose nor `docker compose` is installed (PGSW_WITH_COMPOSE=1 .ci/docker.sh)";
  }
  const info = await run(["docker", "info", "--format", "{{.ServerVersion}}"]);
  if (!info.ok) return "no Docker engine answers; run .ci/docker.sh";
  for (const image of [PG_IMAGE, REDIS_IMAGE]) {
    if (!(await run(["docker", "image", "inspect", image])).ok) {
      return `image ${image} is not present (set PGSW_DOCKER_IMAGE / PGSW_REDIS_IMAGE to the stand-ins)`;
    }
  }
  return undefined;
}

async function run(
  cmd: string[],
  env: Record<string, string> = {},
): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output().catch((error) => ({
    success: false,
    stdout: new Uint8Array(),
    stderr: new TextEncoder().encode(String(error)),
  }));
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, out: text.trim() };
}

function composeRun(project: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return run([...compose!, "-p", project, ...args], ENV);
}

/** The id of the (first) container of a compose service. */
async function serviceContainer(project: string, service: string): Promise<string> {
  const { out } = await run([
    "docker",
    "ps",
    "-q",
    "--filter",
    `label=com.docker.compose.project=${project}`,
    "--filter",
    `label=com.docker.compose.service=${service}`,
  ]);
  return out.split("\n")[0];
}

/** Waits until every container of the project reports healthy; returns their names. */
async function waitHealthy(project: string, count: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const ids =
      (await run(["docker", "ps", "-q", "--filter", `label=com.docker.compose.project=${project}`]))
        .out.split("\n").filter(Boolean);
    if (ids.length === count) {
      last =
        (await run(["docker", "inspect", "--format", "{{.Name}} {{.State.Health.Status}}", ...ids]))
          .out;
      if (last.split("\n").every((l) => l.endsWith(" healthy"))) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`Stack ${project} not healthy after ${timeoutMs} ms:\n${last}`);
}

Deno.test({
  name: "docker-compose.yml validates with the stand-in images, profiles and one volume per node",
  ignore: ignore && !compose,
  fn: async () => {
    const project = "pgswconfig";
    const valid = await composeRun(project, ["config", "-q"]);
    assert.ok(valid.ok, valid.out);
    const services = (await composeRun(project, ["config", "--services"])).out.split("\n");
    for (
      const s of [
        "eu_db_1",
        "eu_db_2",
        "eu_db_3",
        "us_db_1",
        "us_db_2",
        "us_db_3",
        "db",
        "replica",
        "redis",
      ]
    ) {
      assert.ok(services.includes(s), `${s} in ${services.join(", ")}`);
    }
    // The resolved file: stand-in images in, pinned defaults otherwise, no shared volume.
    const resolved = (await composeRun(project, ["config"])).out + "\n";
    const roach = ["eu_1", "eu_2", "eu_3", "us_1", "us_2", "us_3", "init"].map((n) => `roach_${n}`);
    for (const name of roach) {
      const block = new RegExp(`\\n  ${name}:\\n((?:    .*\\n)+)`).exec(resolved)?.[1] ?? "";
      assert.match(block, /profiles:\n {4}- cockroach\n/, `${name} only behind its profile`);
    }
    assert.equal([...resolved.matchAll(/- cockroach\n/g)].length, roach.length);
    assert.equal([...resolved.matchAll(/--locality=region=eu-west-2/g)].length, 3);
    assert.equal([...resolved.matchAll(/--locality=region=us-east-1/g)].length, 3);
    assert.match(resolved, new RegExp(`image: ${PG_IMAGE.replace(/[/.]/g, "\\$&")}`));
    const defaults = await Deno.readTextFile(`${ROOT}/docker-compose.yml`);
    assert.match(defaults, /\$\{PGSW_POSTGRES_IMAGE:-postgres:16\.\d+\}/);
    assert.match(defaults, /\$\{PGSW_REDIS_IMAGE:-redis:7\.\d+\.\d+\}/);
    assert.match(defaults, /\$\{PGSW_COCKROACH_IMAGE:-cockroachdb\/cockroach:v\d+\.\d+\.\d+\}/);
    const mounts = [...resolved.matchAll(/- (\w+):\/var\/lib\/postgresql\/data:rw/g)].map((m) =>
      m[1]
    );
    assert.equal(mounts.length, 8, resolved);
    assert.equal(new Set(mounts).size, mounts.length, `a data volume is shared: ${mounts}`);
  },
});

Deno.test({
  name: "composeProvider() runs clusters and notebook 01 on a running stack; the replica streams",
  ignore,
  sanitizeResources: false,
  fn: async () => {
    const project = `pgswtest${crypto.randomUUID().slice(0, 6)}`;
    const services = ["eu_db_1", "eu_db_2", "us_db_1", "db", "replica", "redis"];
    try {
      const up = await composeRun(project, ["up", "-d", ...services]);
      assert.ok(up.ok, up.out);
      await waitHealthy(project, services.length);

      // The replica pair: a streaming hot standby of db.
      const db = await serviceContainer(project, "db");
      const streaming = await run([
        "docker",
        "exec",
        db,
        "psql",
        "-U",
        "postgres",
        "-Atc",
        "SELECT application_name || ' ' || state FROM pg_stat_replication",
      ]);
      assert.equal(streaming.out, "replica streaming");

      // The provider sees the stack's PostgreSQL services (not the replica or Redis as nodes).
      const found = await composeServices(project);
      assert.deepEqual(found.map((s) => [s.name, s.region, s.role]), [
        ["db", "eu-west-2", "primary"],
        ["eu_db_1", "eu-west-2", "node"],
        ["eu_db_2", "eu-west-2", "node"],
        ["replica", "eu-west-2", "replica"],
        ["us_db_1", "us-east-1", "node"],
      ]);

      const before = settings();
      configure({ provider: "compose", composeProject: project, latencyScale: 1 });
      try {
        await using cluster = await startCluster({
          name: "t-compose",
          nodes: [
            { name: "eu_db_1", region: "eu-west-2" },
            { name: "eu_db_2", region: "eu-west-2" },
            { name: "us_db_1", region: "us-east-1" },
          ],
        });
        assert.equal(cluster.provider.kind, "compose");
        assert.deepEqual(
          (cluster.provider as ExternalProvider).placements.map((p) => [p.node, p.server]).sort(),
          [["eu_db_1", "eu_db_1"], ["eu_db_2", "eu_db_2"], ["us_db_1", "us_db_1"]],
        );
        const [eu1, eu2, us1] = cluster.nodes;
        for (const node of [eu2, us1]) {
          await node.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)");
        }
        const near = await linkNodes(eu1, eu2);
        const far = await linkNodes(eu1, us1);
        assert.deepEqual(
          [near.host, near.port],
          ["eu_db_2", 5432],
          "by service name on the stack's network",
        );
        assert.notEqual(far.host, "us_db_1", "across regions: through the delay proxy");
        await eu1.exec(`
          CREATE FOREIGN TABLE t_near (x int) SERVER eu_db_2 OPTIONS (table_name 't');
          CREATE FOREIGN TABLE t_far (x int) SERVER us_db_1 OPTIONS (table_name 't');`);
        await eu1.sql`SELECT count(*) FROM t_far`;
        const t0 = performance.now();
        const [r] = await eu1.sql`SELECT count(*) AS n FROM t_far`;
        const farMs = performance.now() - t0;
        assert.equal(r.n, 2);
        assert.equal((await eu1.sql`SELECT count(*) AS n FROM t_near`)[0].n, 2);
        assert.ok(farMs >= 4 * 76 * 0.9, `far query took ${farMs.toFixed(0)} ms`);
      } finally {
        configure({
          provider: before.provider,
          composeProject: before.composeProject,
          latencyScale: before.latencyScale,
        });
      }
      // The stack's own databases are untouched; the notebook's are gone.
      const eu1c = await serviceContainer(project, "eu_db_1");
      const dbs = await run([
        "docker",
        "exec",
        eu1c,
        "psql",
        "-U",
        "postgres",
        "-Atc",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
      ]);
      assert.equal(dbs.out, "postgres,template0,template1");

      // Notebook 01 on the stack.
      const notebooks = await portableNotebookCopy("01");
      const report = await runReport(["01"], {
        WORKSHOP_PROVIDER: "compose",
        WORKSHOP_COMPOSE_PROJECT: project,
      }, { notebooksDir: notebooks });
      await Deno.remove(notebooks, { recursive: true });
      await Deno.remove(report.outDir, { recursive: true });
      assert.equal(report.summary.notebooks[0].status, "ok", report.text);
      assert.ok(report.ok, report.text);
    } finally {
      const down = await composeRun(project, ["down", "-v", "--remove-orphans"]);
      assert.ok(down.ok, down.out);
    }
  },
});

Deno.test({
  name: "composeServices() says how to start the stack when none runs",
  ignore,
  fn: async () => {
    await assert.rejects(
      () => composeServices("pgsw-no-such-project"),
      (e) => isWorkshopError(e, "DOCKER_UNAVAILABLE") && /docker-compose up -d/.test(e.fix),
    );
  },
});
