/**
 * Which OS user runs PostgreSQL. The rest of the suite runs as whoever runs
 * it; under root (CI) the embedded provider then runs PostgreSQL as the
 * `postgres` OS user. These tests cover the edges of that:
 *
 * - a normal user (`nobody`) brings up nodes that run as that user itself,
 *   partitions a table across them, and leaves nothing behind;
 * - root working in a private (mode 700) directory, as a fresh clone under
 *   `mktemp -d` is: the servers, which run as `postgres`, must not need to
 *   enter it.
 *
 * Both run only as root (they need to switch user); as a normal user the
 * whole suite already is the first one.
 */

import assert from "node:assert/strict";
import { tryOutput } from "../lib/_process.ts";
import { settings } from "../lib/config.ts";
import { pathExists, spawnDeno, waitFor } from "./_helpers.ts";

const PROJECT = new URL("..", import.meta.url).pathname;
const NOBODY = { uid: 65534, gid: 65534 };

const skipReason = await normalUserSkipReason();
if (skipReason) console.log(`Skipping the normal-user test: ${skipReason}`);

async function normalUserSkipReason(): Promise<string | undefined> {
  if (Deno.uid() !== 0) return "the suite already runs as a normal user";
  const passwd = await Deno.readTextFile("/etc/passwd").catch(() => "");
  if (!/^nobody:x:65534:/m.test(passwd)) return "no `nobody` user (uid 65534)";
  const probe = await asNobody(["test", "-r", `${PROJECT}deno.json`], Deno.cwd());
  if (!probe?.success) {
    return `${PROJECT} is not readable by nobody (a parent directory is private)`;
  }
  return undefined;
}

/** Runs a command as nobody (setpriv, util-linux), or undefined when setpriv is missing. */
function asNobody(command: string[], home: string, env: Record<string, string> = {}) {
  return tryOutput("setpriv", {
    args: [
      `--reuid=${NOBODY.uid}`,
      `--regid=${NOBODY.gid}`,
      "--clear-groups",
      "env",
      `HOME=${home}`,
      `DENO_DIR=${home}/deno`,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...command,
    ],
    cwd: PROJECT,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    stdout: "piped",
    stderr: "piped",
  });
}

/** What the child does: two nodes, a hash-partitioned table over FDW, and who runs the servers. */
const CHILD = `
import { distribution, hashPartition, startCluster, totalRows } from "./lib/mod.ts";
await using cluster = await startCluster({
  name: "as-nobody",
  nodes: [{ name: "eu_db_1", region: "eu-west-2" }, { name: "us_db_1", region: "us-east-1" }],
});
const [eu, us] = cluster.nodes;
await hashPartition(eu, "customer", {
  column: "id",
  shards: [eu, us],
  columns: { id: "int NOT NULL", email: "text NOT NULL" },
  primaryKey: ["id"],
});
await eu.exec("INSERT INTO customer SELECT i, 'c' || i || '@example.com' FROM generate_series(1, 200) i");
const shards = await distribution(eu, "customer");
// The uid of each server process: the backends serving our connections.
const uids = [];
for (const node of cluster.nodes) {
  const [{ pid }] = await node.sql\`SELECT pg_backend_pid() AS pid\`;
  const status = await Deno.readTextFile(\`/proc/\${pid}/status\`);
  uids.push(Number(/^Uid:\\s+(\\d+)/m.exec(status)[1]));
}
console.log(JSON.stringify({
  uid: Deno.uid(),
  serverUids: uids,
  total: totalRows(shards),
  nodesWithRows: shards.filter((s) => s.rows > 0).map((s) => s.node).sort(),
  dataDirs: cluster.nodes.map((n) => n.dataDir),
}));
`;

Deno.test({
  name:
    "a normal user (nobody) runs nodes as itself, partitions across them, and leaves nothing behind",
  ignore: skipReason !== undefined,
  fn: async () => {
    const home = await Deno.makeTempDir({ prefix: "pgsw-nobody-home-" });
    await Deno.chown(home, NOBODY.uid, NOBODY.gid);
    try {
      const result = await asNobody(
        [Deno.execPath(), "eval", "--ext=ts", CHILD],
        home,
        { LATENCY_SCALE: "0", NO_COLOR: "1" },
      );
      assert.ok(result, "setpriv is installed (util-linux)");
      const out = new TextDecoder().decode(result.stdout);
      const err = new TextDecoder().decode(result.stderr);
      assert.ok(result.success, `the child failed:\n${out}\n${err}`);
      const report = JSON.parse(out.trim().split("\n").at(-1)!);
      assert.equal(report.uid, NOBODY.uid);
      assert.deepEqual(
        report.serverUids,
        [NOBODY.uid, NOBODY.uid],
        "PostgreSQL runs as the user itself",
      );
      assert.equal(report.total, 200);
      assert.deepEqual(report.nodesWithRows, ["eu_db_1", "us_db_1"]);

      // Nothing left: no server of nobody's, no data directory, no run directory.
      assert.ok(
        await waitFor(async () => {
          const ps = await tryOutput("pgrep", {
            args: ["-u", String(NOBODY.uid), "postgres"],
            stdout: "piped",
          });
          return ps !== undefined && !ps.success;
        }, 5_000),
        "no postgres process of nobody's is left",
      );
      for (const dir of report.dataDirs as string[]) {
        assert.equal(await pathExists(dir), false, dir);
      }
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "root in a private working directory still starts nodes (run as postgres, from /)",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const privateDir = await Deno.makeTempDir({ prefix: "pgsw-private-cwd-" });
    try {
      await Deno.chmod(privateDir, 0o700);
      const code = `
        import { startCluster } from "${PROJECT}lib/mod.ts";
        await using cluster = await startCluster({ name: "private-cwd", nodes: [{ name: "eu_db_1" }] });
        const [{ one }] = await cluster.node("eu_db_1").sql\`SELECT 1 AS one\`;
        console.log("one=" + one);
      `;
      const out = await spawnDeno(code, { LATENCY_SCALE: "0" }, privateDir).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `the child failed:\n${text}`);
      assert.match(text, /one=1/);
    } finally {
      await Deno.remove(privateDir, { recursive: true });
    }
  },
});
