/**
 * Tests of the docker provider against a real Docker engine. Without an
 * engine (or without the image) they are skipped with the reason printed,
 * unless PGSW_REQUIRE_DOCKER=1 (CI), where they run and fail.
 *
 * Image: PGSW_DOCKER_IMAGE (CI: pgsw-standin/postgres:16), default postgres:16.
 */

import assert from "node:assert/strict";
import {
  type Cluster,
  configure,
  isWorkshopError,
  linkNodes,
  type NodeOptions,
  settings,
  startCluster,
} from "../lib/mod.ts";
import { type DockerProvider, dockerProvider } from "../lib/providers/docker.ts";
import { ensureImage, removeStaleDockerRuns } from "../lib/providers/_docker.ts";
import { preflight } from "../lib/preflight.ts";
import { addReplica, cockroachEndpoint, waitForReplay } from "../lib/mod.ts";
import { readLineUntil, spawnDeno, waitFor, withLatencyScale } from "./_helpers.ts";

const IMAGE = Deno.env.get("PGSW_DOCKER_IMAGE") ?? "postgres:16";
const REQUIRE = Deno.env.get("PGSW_REQUIRE_DOCKER") === "1";
const skipReason = await dockerSkipReason();
const ignore = skipReason !== undefined && !REQUIRE;
if (ignore) console.log(`Skipping the Docker provider tests: ${skipReason}`);

/** Why the Docker tests cannot run here, or undefined when they can. */
async function dockerSkipReason(): Promise<string | undefined> {
  const info = await docker(["info", "--format", "{{.ServerVersion}}"]).catch((e) => ({
    ok: false,
    out: String(e),
  }));
  if (!info.ok) {
    return `no Docker engine answers (docker info: ${info.out.split("\n")[0]}); run .ci/docker.sh`;
  }
  const image = await docker(["image", "inspect", IMAGE]);
  if (!image.ok) {
    return `image ${IMAGE} is not present (no registry here: set PGSW_DOCKER_IMAGE=pgsw-standin/postgres:16 ` +
      `after docker/standin/build.sh)`;
  }
  return undefined;
}

async function docker(args: string[]): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command("docker", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, out: text.trim() };
}

async function containersWithLabel(label: string): Promise<string[]> {
  const { out } = await docker(["ps", "-aq", "--filter", `label=${label}`]);
  return out.split("\n").filter(Boolean);
}

async function dockerCluster(name: string, nodes: NodeOptions[]): Promise<Cluster> {
  const provider = await dockerProvider({ clusterName: name, image: IMAGE });
  return await startCluster({ name, provider, nodes });
}

Deno.test({
  name: "dockerProvider() starts PostgreSQL 16 containers, adds and removes nodes, cleans up",
  ignore,
  fn: async () => {
    const cluster = await dockerCluster("t-docker-basic", [
      { name: "eu_db_1", region: "eu-west-2" },
      { name: "eu_db_2", region: "eu-west-2" },
    ]);
    const provider = cluster.provider as DockerProvider;
    try {
      assert.equal(provider.kind, "docker");
      const eu1 = cluster.node("eu_db_1");
      const [row] = await eu1.sql`SELECT current_setting('server_version_num')::int AS v,
        current_setting('cluster_name') AS name, current_setting('fsync') AS fsync`;
      assert.ok((row.v as number) >= 160000 && (row.v as number) < 170000, `got ${row.v}`);
      assert.equal(row.name, "eu_db_1");
      assert.equal(row.fsync, "off");
      assert.equal(eu1.host, "127.0.0.1");
      assert.deepEqual(eu1.peerAddress, { host: "eu_db_1", port: 5432 });

      // Published on loopback only, on the cluster's network only, with the alias.
      const id = provider.containerId("eu_db_1")!;
      const inspect = JSON.parse((await docker(["inspect", id])).out)[0];
      assert.deepEqual(
        inspect.HostConfig.PortBindings["5432/tcp"].map((b: { HostIp: string }) => b.HostIp),
        ["127.0.0.1"],
      );
      assert.deepEqual(Object.keys(inspect.NetworkSettings.Networks), [provider.network.name]);
      assert.ok(
        inspect.NetworkSettings.Networks[provider.network.name].Aliases.includes("eu_db_1"),
      );
      assert.equal(inspect.Config.Labels["io.pgsw.node"], "eu_db_1");
      assert.equal(inspect.Config.Labels["io.pgsw.kit"], "pg-scaleout-workshop");

      // Grow and shrink while running.
      const us1 = await cluster.addNode({ name: "us_db_1", region: "us-east-1" });
      assert.equal((await us1.sql`SELECT 1 AS one`)[0].one, 1);
      assert.deepEqual(cluster.nodes.map((n) => n.name), ["eu_db_1", "eu_db_2", "us_db_1"]);
      const usId = provider.containerId("us_db_1")!;
      await cluster.removeNode("us_db_1");
      assert.equal((await docker(["inspect", usId])).ok, false, "removed node's container is gone");

      // Stop keeps the data; restart brings it back on the same address.
      const eu2 = cluster.node("eu_db_2");
      await eu2.exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)");
      const port = eu2.port;
      await eu2.stop();
      await eu2.restart();
      assert.equal(eu2.port, port);
      assert.equal((await eu2.sql`SELECT count(*) AS n FROM kept`)[0].n, 2);
      assert.match(await eu2.logTail(5), /ready to accept connections/);
    } finally {
      await cluster.stop();
    }
    const run = provider.labels["io.pgsw.run"];
    assert.deepEqual(await containersWithLabel(`io.pgsw.run=${run}`), []);
    assert.equal(
      (await docker(["network", "inspect", provider.network.name])).ok,
      false,
      "network removed",
    );
  },
});

Deno.test({
  name: "dockerProvider() nodes reach each other by node name through postgres_fdw",
  ignore,
  fn: async () => {
    await using cluster = await dockerCluster("t-docker-fdw", [
      { name: "eu_db_1", region: "eu-west-2" },
      { name: "eu_db_2", region: "eu-west-2" },
    ]);
    const [eu1, eu2] = cluster.nodes;
    await eu2.exec(`CREATE TABLE customer (id int, email text);
      INSERT INTO customer SELECT g, g || '@example.com' FROM generate_series(1, 100) g;`);
    const link = await withLatencyScale(1, () => linkNodes(eu1, eu2));
    assert.deepEqual([link.host, link.port], ["eu_db_2", 5432], "same region: the alias, no proxy");
    await eu1.exec(`CREATE FOREIGN TABLE customer_remote (id int, email text)
      SERVER eu_db_2 OPTIONS (table_name 'customer');`);
    const [r] = await eu1.sql`SELECT count(*) AS n, max(email) AS last FROM customer_remote`;
    assert.equal(r.n, 100);
    assert.equal(r.last, "9@example.com");
    // The remote side sees the connection coming from eu_db_1's container.
    const [{ app }] = await eu2.sql`
      SELECT count(*) AS app FROM pg_stat_activity WHERE application_name = 'postgres_fdw'`;
    assert.equal(app, 1);
  },
});

Deno.test({
  name: "dockerProvider() links across regions carry the simulated delay",
  ignore,
  fn: async () => {
    await withLatencyScale(1, async () => {
      await using cluster = await dockerCluster("t-docker-latency", [
        { name: "eu_db_1", region: "eu-west-2" },
        { name: "eu_db_2", region: "eu-west-2" },
        { name: "us_db_1", region: "us-east-1" },
      ]);
      const [eu1, eu2, us1] = cluster.nodes;
      for (const node of [eu2, us1]) {
        await node.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
      }
      const near = await linkNodes(eu1, eu2);
      const far = await linkNodes(eu1, us1);
      const provider = cluster.provider as DockerProvider;
      assert.equal(far.host, provider.network.gateway, "far link leads to the delay proxy");
      assert.equal((await cluster.nodeAt(far.host, far.port))?.name, "us_db_1");
      await eu1.exec(`
        CREATE FOREIGN TABLE t_near (x int) SERVER ${near.server} OPTIONS (table_name 't');
        CREATE FOREIGN TABLE t_far (x int) SERVER ${far.server} OPTIONS (table_name 't');`);
      const timed = async (table: string) => {
        await eu1.sql.unsafe(`SELECT count(*) FROM ${table}`); // opens the FDW connection
        const t0 = performance.now();
        await eu1.sql.unsafe(`SELECT count(*) FROM ${table}`);
        return performance.now() - t0;
      };
      const nearMs = await timed("t_near");
      const farMs = await timed("t_far");
      // A foreign scan takes 5 round trips; London <-> N. Virginia is 76 ms.
      assert.ok(farMs >= 4 * 76 * 0.9, `far query took ${farMs.toFixed(0)} ms`);
      assert.ok(nearMs < farMs / 4, `near ${nearMs.toFixed(0)} ms vs far ${farMs.toFixed(0)} ms`);
    });
  },
});

Deno.test({
  name: "dockerProvider() clean-up removes only what carries its run's label",
  ignore,
  fn: async () => {
    const marker = crypto.randomUUID().slice(0, 8);
    // An unlabelled container from the same image, and one of the kit from another host.
    const bystander = await docker([
      "run",
      "-d",
      "--name",
      `pgsw-test-bystander-${marker}`,
      IMAGE,
      "sleep",
      "300",
    ]);
    const foreign = await docker([
      "create",
      "--name",
      `pgsw-test-foreign-${marker}`,
      "--label",
      "io.pgsw.kit=pg-scaleout-workshop",
      "--label",
      "io.pgsw.host=some-other-machine",
      "--label",
      "io.pgsw.rundir=/nonexistent/run-foreign",
      IMAGE,
      "sleep",
      "300",
    ]);
    assert.ok(bystander.ok && foreign.ok, bystander.out + foreign.out);
    try {
      // 1. A process that dies without cleaning up: its reaper removes its containers.
      const child = spawnDeno(
        `
        import { startCluster } from "./lib/mod.ts";
        import { dockerProvider } from "./lib/providers/docker.ts";
        const provider = await dockerProvider({ clusterName: "t-docker-killed", image: ${
          JSON.stringify(IMAGE)
        } });
        await startCluster({ name: "t-docker-killed", provider, nodes: [{ name: "eu_db_1" }] });
        console.log("READY " + provider.labels["io.pgsw.run"]);
        await new Promise(() => {});
        `,
        { TESTCONTAINERS_RYUK_DISABLED: "true" },
      );
      const line = await readLineUntil(child, (l) => l.startsWith("READY "));
      const run = line.slice("READY ".length).trim();
      assert.equal((await containersWithLabel(`io.pgsw.run=${run}`)).length, 1);
      child.kill("SIGKILL");
      await child.status;
      await child.stderr.cancel();
      assert.ok(
        await waitFor(
          async () => (await containersWithLabel(`io.pgsw.run=${run}`)).length === 0,
          30_000,
        ),
        "the killed run's container was removed by its reaper",
      );

      // 2. The next start's sweep removes the stale container of this host only.
      // A stale one of this host: its run directory does not exist.
      const stale = await docker([
        "create",
        "--name",
        `pgsw-test-stale-${marker}`,
        "--label",
        "io.pgsw.kit=pg-scaleout-workshop",
        "--label",
        `io.pgsw.host=${Deno.hostname()}`,
        "--label",
        `io.pgsw.rundir=/nonexistent/run-stale-${marker}`,
        IMAGE,
        "sleep",
        "300",
      ]);
      assert.ok(stale.ok, stale.out);
      const removed = await removeStaleDockerRuns();
      assert.ok(removed >= 1);
      assert.equal((await docker(["inspect", `pgsw-test-stale-${marker}`])).ok, false);
      assert.equal((await docker(["inspect", `pgsw-test-foreign-${marker}`])).ok, true);

      // 3. A cluster's own stop leaves the bystanders alone too.
      const cluster = await dockerCluster("t-docker-bystander", [{ name: "eu_db_1" }]);
      await cluster.stop();
      const state = await docker([
        "inspect",
        "--format",
        "{{.State.Running}}",
        `pgsw-test-bystander-${marker}`,
      ]);
      assert.equal(state.out, "true", "the unlabelled container still runs");
    } finally {
      for (const kind of ["bystander", "foreign", "stale"]) {
        await docker(["rm", "-f", "-v", `pgsw-test-${kind}-${marker}`]);
      }
    }
  },
});

Deno.test({
  name: "ensureImage() and dockerProvider() fail with IMAGE_UNAVAILABLE for a missing image",
  ignore,
  fn: async () => {
    const missing = "pgsw-test/does-not-exist:0";
    await assert.rejects(
      () => ensureImage(missing),
      (e) =>
        isWorkshopError(e, "IMAGE_UNAVAILABLE") && /does-not-exist/.test(e.message) &&
        /standin/.test(e.fix),
    );
    await assert.rejects(
      () => dockerProvider({ clusterName: "t-missing", image: missing }),
      (e) => isWorkshopError(e, "IMAGE_UNAVAILABLE"),
    );
    const before = settings();
    configure({ provider: "docker", dockerImage: missing });
    try {
      await assert.rejects(() => preflight(), (e) => isWorkshopError(e, "IMAGE_UNAVAILABLE"));
    } finally {
      configure({ provider: before.provider, dockerImage: before.dockerImage });
    }
  },
});

Deno.test({
  name: "preflight() and startCluster() fail with DOCKER_UNAVAILABLE when DOCKER_HOST is wrong",
  // Needs no engine: runs everywhere.
  fn: async () => {
    // In a child process: testcontainers keeps the engine it found for the process.
    const child = spawnDeno(
      `
      import { isWorkshopError, startCluster } from "./lib/mod.ts";
      import { preflight } from "./lib/preflight.ts";
      for (const [what, run] of [["preflight", () => preflight()], ["startCluster", () => startCluster({ name: "t-bad-host", nodes: [{ name: "eu_db_1" }] })]]) {
        try { await run(); console.log(what + " OK?!"); }
        catch (e) { console.log(what + " " + (isWorkshopError(e) ? e.code : "other") + " " + JSON.stringify(e.message.split("\\n")[0]) + " " + JSON.stringify(e.fix ?? "")); }
      }
      `,
      {
        DOCKER_HOST: "tcp://127.0.0.1:1",
        WORKSHOP_PROVIDER: "docker",
        WORKSHOP_DOCKER_IMAGE: IMAGE,
        TESTCONTAINERS_RYUK_DISABLED: "true",
      },
    );
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout);
    assert.match(
      text,
      /^preflight DOCKER_UNAVAILABLE .*DOCKER_HOST=tcp:\/\/127\.0\.0\.1:1.*unset it/m,
      text,
    );
    assert.match(text, /^startCluster DOCKER_UNAVAILABLE /m, text);
  },
});

Deno.test({
  name: "deno task report 01 renders notebook 01 on the docker provider",
  ignore,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "pgsw-docker-report-" });
    try {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "tools/report.ts", "--out", out, "01"],
        cwd: new URL("..", import.meta.url).pathname,
        env: {
          WORKSHOP_PROVIDER: "docker",
          WORKSHOP_DOCKER_IMAGE: IMAGE,
          TESTCONTAINERS_RYUK_DISABLED: "true",
          LATENCY_SCALE: "0.1",
          NO_COLOR: "1",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(result.stdout) +
        new TextDecoder().decode(result.stderr);
      assert.ok(result.success, text);
      const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
      assert.equal(summary.notebooks.length, 1);
      assert.equal(summary.notebooks[0].status, "ok", JSON.stringify(summary.notebooks[0].error));
      assert.equal(summary.settings.provider, "docker");
      const html = await Deno.readTextFile(`${out}/${summary.notebooks[0].notebook}.html`);
      assert.match(html, /docker provider/);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test("cockroachEndpoint() returns COCKROACH_URL when it is set", async () => {
  const before = Deno.env.get("COCKROACH_URL");
  Deno.env.set("COCKROACH_URL", "postgres://root@db.example:26257/defaultdb?sslmode=disable");
  try {
    const roach = await cockroachEndpoint();
    assert.equal(roach.available, true);
    assert.equal(roach.url, "postgres://root@db.example:26257/defaultdb?sslmode=disable");
    assert.equal(roach.available && roach.source, "COCKROACH_URL");
  } finally {
    if (before === undefined) Deno.env.delete("COCKROACH_URL");
    else Deno.env.set("COCKROACH_URL", before);
  }
});

Deno.test({
  name: "cockroachEndpoint() gives the reason and the fix when the image cannot be had",
  ignore: ignore || Deno.env.get("COCKROACH_URL") !== undefined,
  fn: async () => {
    const roach = await cockroachEndpoint({ image: "pgsw-test/no-cockroach:0" });
    assert.equal(roach.available, false);
    assert.equal(roach.url, undefined);
    if (!roach.available) {
      assert.match(roach.reason, /pgsw-test\/no-cockroach:0 is not present and cannot be pulled/);
      assert.match(roach.fix, /COCKROACH_URL/);
    }
  },
});

Deno.test({
  name: "addReplica() on the docker provider copies the primary's volume and streams",
  ignore,
  fn: async () => {
    await withLatencyScale(0.1, async () => {
      await using cluster = await dockerCluster("t-docker-replica", [
        { name: "eu_db_1", region: "eu-west-2" },
      ]);
      const primary = cluster.node("eu_db_1");
      await primary.exec("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)");
      const near = await addReplica(cluster, { name: "eu_replica_1", primary });
      const far = await addReplica(cluster, {
        name: "us_replica_1",
        primary,
        region: "us-east-1",
      });
      for (const replica of [near, far]) {
        const [r] = await replica.sql`SELECT pg_is_in_recovery() AS standby, count(*) AS n FROM t`;
        assert.deepEqual({ ...r }, { standby: true, n: 100 });
      }
      await primary.exec("INSERT INTO t SELECT generate_series(1, 50)");
      const [{ lsn }] = await primary.sql`SELECT pg_current_wal_lsn()::text AS lsn`;
      for (const replica of [near, far]) {
        await waitForReplay(replica, lsn);
        assert.equal((await replica.sql`SELECT count(*) AS n FROM t`)[0].n, 150);
      }
      const senders = await primary.sql`
        SELECT application_name AS name, state, host(client_addr) AS addr
        FROM pg_stat_replication ORDER BY 1`;
      const provider = cluster.provider as DockerProvider;
      assert.deepEqual(senders.map((s) => [s.name, s.state]), [
        ["eu_replica_1", "streaming"],
        ["us_replica_1", "streaming"],
      ]);
      // The far replica streams through the delay proxy on the network's gateway.
      assert.equal(senders[1].addr, provider.network.gateway);
      assert.notEqual(senders[0].addr, provider.network.gateway);
      await assert.rejects(() => near.exec("INSERT INTO t VALUES (0)"), /read-only transaction/);
    });
  },
});
