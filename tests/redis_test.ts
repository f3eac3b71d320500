import assert from "node:assert/strict";
import { isWorkshopError, startCluster, startRedis } from "../lib/mod.ts";
import { currentRun } from "../lib/_runs.ts";
import { pathExists, processExists, readLineUntil, spawnDeno, waitFor } from "./_helpers.ts";

// These tests start their own servers; a REDIS_URL from the environment would replace them.
Deno.env.delete("REDIS_URL");

async function pidFiles(): Promise<string[]> {
  const run = await currentRun();
  return (await Array.fromAsync(Deno.readDir(run.pidsDir))).map((e) => `${run.pidsDir}/${e.name}`)
    .filter((path) => path.includes("redis"));
}

Deno.test("startRedis() starts a private redis-server without persistence, with a pid file, and stops it with the cluster", async () => {
  let pid = 0;
  let pidFile = "";
  {
    await using cluster = await startCluster({ name: "t-redis-start" });
    const redis = await startRedis(cluster);
    assert.equal(redis.owned, true);
    assert.equal(redis.address.host, "127.0.0.1");
    assert.equal(cluster.service("redis"), redis);
    assert.match(await redis.version(), /^\d+\.\d+/);
    const client = await redis.client();
    assert.deepEqual(await client.configGet("save"), { save: "" });
    assert.deepEqual(await client.configGet("appendonly"), { appendonly: "no" });
    assert.deepEqual(await client.configGet("bind"), { bind: "127.0.0.1" });
    await client.set(`${redis.keyPrefix}k`, "v");
    assert.equal(await client.get(`${redis.keyPrefix}k`), "v");
    [pidFile] = await pidFiles();
    const [pidText, name] = (await Deno.readTextFile(pidFile)).trim().split(" ");
    pid = Number(pidText);
    assert.equal(name, "redis-server", "the reaper checks the command name");
    assert.ok(processExists(pid));
    assert.equal(await startRedis(cluster), redis, "a second call returns the running service");
  }
  assert.ok(
    await waitFor(() => !processExists(pid), 5000),
    "redis-server stopped with the cluster",
  );
  assert.equal(await pathExists(pidFile), false, "pid file removed");
});

Deno.test("startRedis() without a redis-server binary throws REDIS_UNAVAILABLE naming the fix, and leaves nothing", async () => {
  await using cluster = await startCluster({ name: "t-redis-missing" });
  await assert.rejects(
    () => startRedis(cluster, { binary: "/nonexistent/redis-server" }),
    (error) =>
      isWorkshopError(error, "REDIS_UNAVAILABLE") &&
      /"\/nonexistent\/redis-server" was not found/.test(error.message) &&
      /apt-get install redis-server/.test(error.fix) && /brew install redis/.test(error.fix) &&
      /REDIS_URL/.test(error.fix),
  );
  assert.deepEqual(cluster.services, []);
  assert.deepEqual(await pidFiles(), []);
  const run = await currentRun();
  const leftovers = (await Array.fromAsync(Deno.readDir(run.path))).filter((e) =>
    e.name.startsWith("redis-")
  );
  assert.deepEqual(leftovers, []);
});

Deno.test("startRedis() uses the server at REDIS_URL, deletes only its own keys, and leaves the server running", async () => {
  await using owner = await startCluster({ name: "t-redis-owner" });
  const server = await startRedis(owner);
  const ownerClient = await server.client();
  await ownerClient.set("someone-else", "keep me");

  const previous = Deno.env.get("REDIS_URL");
  Deno.env.set("REDIS_URL", server.url);
  try {
    const borrower = await startCluster({ name: "t-redis-borrower" });
    const borrowed = await startRedis(borrower);
    assert.equal(borrowed.owned, false);
    assert.equal(borrowed.address.port, server.address.port);
    const client = await borrowed.client();
    await client.set(`${borrowed.keyPrefix}lsn:alice`, "0/16B3748", { EX: 60 });
    await borrower.stop();
    assert.equal(
      await ownerClient.get(`${borrowed.keyPrefix}lsn:alice`),
      null,
      "its keys are gone",
    );
    assert.equal(await ownerClient.get("someone-else"), "keep me", "other keys stay");
    assert.equal(await ownerClient.ping(), "PONG", "the server still runs");
  } finally {
    if (previous === undefined) Deno.env.delete("REDIS_URL");
    else Deno.env.set("REDIS_URL", previous);
  }
});

Deno.test("startRedis() with a REDIS_URL where nothing answers throws REDIS_UNAVAILABLE; a bad URL INVALID_SETTING", async () => {
  await using cluster = await startCluster({ name: "t-redis-url" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(
    () => startRedis(cluster, { url: `redis://127.0.0.1:${port}`, timeoutMs: 2000 }),
    (error) =>
      isWorkshopError(error, "REDIS_UNAVAILABLE") && error.message.includes(`127.0.0.1:${port}`) &&
      /unset it/.test(error.fix),
  );
  await assert.rejects(
    () => startRedis(cluster, { url: "http://example.test" }),
    (error) => isWorkshopError(error, "INVALID_SETTING") && /redis:\/\/host:port/.test(error.fix),
  );
  assert.deepEqual(cluster.services, []);
});

Deno.test("startRedis() leaves no redis-server behind when its process is killed", async () => {
  const child = spawnDeno(`
    import { startCluster, startRedis } from "./lib/mod.ts";
    const cluster = await startCluster({ name: "t-redis-orphan" });
    await startRedis(cluster);
    const { currentRun } = await import("./lib/_runs.ts");
    const run = await currentRun();
    for await (const e of Deno.readDir(run.pidsDir)) {
      console.log("PID " + (await Deno.readTextFile(run.pidsDir + "/" + e.name)).trim());
    }
    await new Promise(() => {});
  `);
  try {
    const line = await readLineUntil(child, (l) => l.startsWith("PID "));
    const pid = Number(line.split(" ")[1]);
    assert.ok(processExists(pid), "redis-server runs");
    child.kill("SIGKILL");
    await child.status;
    assert.ok(await waitFor(() => !processExists(pid), 15_000), "the reaper stopped redis-server");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.stderr.cancel().catch(() => {});
    await child.stdout.cancel().catch(() => {});
  }
});
