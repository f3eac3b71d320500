/**
 * The error codes not covered next to their features: each is provoked for
 * real and must name the thing and the fix, and lose nothing.
 */

import assert from "node:assert/strict";
import {
  configure,
  ERROR_CODES,
  hashPartition,
  isWorkshopError,
  settings,
  startCluster,
} from "../lib/mod.ts";
import { runDirectories, waitFor } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A child program that starts one node and prints the error's code, message and fix. */
const START_ONE_NODE = `import { startCluster } from "./lib/mod.ts";
  try { await startCluster({ name: "x", nodes: [{ name: "eu_db_1" }] }); }
  catch (e) { console.log(e.code + " | " + e.message + " | " + e.fix); }`;

/** Runs a deno command from the project root and returns its exit code and output. */
async function denoRun(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

Deno.test("every error code is documented in the README with a cause and a fix", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  for (const code of Object.keys(ERROR_CODES)) {
    assert.match(
      readme,
      new RegExp(`\\| \`${code}\` \\| [^|]+ \\| [^|]+ \\|`),
      `README row for ${code}`,
    );
  }
});

Deno.test("addNode() reports NODE_NOT_READY with the port when a node misses the startup timeout", async () => {
  const previous = settings().startupTimeoutMs;
  await using cluster = await startCluster({ name: "t-not-ready" });
  configure({ startupTimeoutMs: 1 });
  try {
    await assert.rejects(
      () => cluster.addNode({ name: "slow_db" }),
      (e) =>
        isWorkshopError(e, "NODE_NOT_READY") &&
        /Node "slow_db" not ready after 1 ms \(port \d+\)/.test(e.message) &&
        /WORKSHOP_STARTUP_TIMEOUT_MS/.test(e.fix),
    );
  } finally {
    configure({ startupTimeoutMs: previous });
  }
  assert.equal(cluster.has("slow_db"), false);
  const node = await cluster.addNode({ name: "slow_db" }); // nothing was left holding the name
  assert.equal((await node.sql`SELECT 1 AS one`)[0].one, 1);
});

Deno.test("hashPartition() reports FDW_LINK_FAILED when an older table with another layout is in the way", async () => {
  await using cluster = await startCluster({
    name: "t-layout",
    nodes: [{ name: "eu_db_1" }, { name: "eu_db_2" }],
  });
  const [eu1, eu2] = cluster.nodes;
  await eu1.exec(
    `CREATE TABLE customer (id uuid NOT NULL, email text NOT NULL) PARTITION BY HASH (id);
    CREATE TABLE customer_0 PARTITION OF customer FOR VALUES WITH (MODULUS 2, REMAINDER 0);
    CREATE TABLE customer_1 PARTITION OF customer FOR VALUES WITH (MODULUS 2, REMAINDER 1);
    INSERT INTO customer SELECT gen_random_uuid(), 'kept' FROM generate_series(1, 10);`,
  );
  await assert.rejects(
    () =>
      hashPartition(eu1, "customer", {
        column: "id",
        columns: { id: "UUID NOT NULL", email: "TEXT NOT NULL" },
        shards: [eu1, eu2],
      }),
    (e) =>
      isWorkshopError(e, "FDW_LINK_FAILED") &&
      /customer_1 should be a foreign table on server eu_db_2/.test(e.message) &&
      /drop it/.test(e.fix),
  );
  const [{ n }] = await eu1.sql`SELECT count(*) AS n FROM customer`;
  assert.equal(n, 10, "the existing rows are untouched");
});

Deno.test("WORKSHOP_PG_BIN_DIR pointing at no PostgreSQL gives BINARIES_MISSING, in preflight too", async () => {
  const env = {
    WORKSHOP_PG_BIN_DIR: "/nonexistent/pg16/bin",
    WORKSHOP_CACHE_DIR: await Deno.makeTempDir(),
  };
  const before = new Set(await runDirectories());
  try {
    const start = await denoRun(["eval", "--ext=ts", START_ONE_NODE], env);
    assert.match(
      start.text,
      /^BINARIES_MISSING \| The PostgreSQL binary at \/nonexistent\/pg16\/bin\/postgres does not run/m,
    );
    assert.match(
      start.text,
      /Point WORKSHOP_PG_BIN_DIR at the bin directory of a PostgreSQL 16 install/,
    );
    const preflight = await denoRun(["run", "-A", "lib/preflight.ts"], env);
    assert.notEqual(preflight.code, 0);
    assert.match(
      preflight.text,
      /Preflight failed: PostgreSQL binaries: The PostgreSQL binary .* does not run \[BINARIES_MISSING\]\n/,
    );
    assert.match(preflight.text, /fix: Point WORKSHOP_PG_BIN_DIR/);
  } finally {
    await Deno.remove(env.WORKSHOP_CACHE_DIR, { recursive: true });
  }
  assert.ok(
    await waitFor(async () => (await runDirectories()).every((d) => before.has(d))),
    "nothing left behind",
  );
});

Deno.test({
  name: "running as root with an OS user that cannot exist gives POSTGRES_USER_MISSING",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const start = await denoRun(["eval", "--ext=ts", START_ONE_NODE], {
      WORKSHOP_OS_USER: "no such user!",
    });
    assert.match(
      start.text,
      /^POSTGRES_USER_MISSING \| Cannot run PostgreSQL as root and no OS user "no such user!" exists/m,
    );
    assert.match(start.text, /WORKSHOP_OS_USER/);
  },
});

Deno.test("report.ts says JUPYTER_MISSING with install commands when no Python with nbclient is found", async () => {
  const report = await denoRun(["run", "-A", "tools/report.ts", "--no-preflight", "00"], {
    WORKSHOP_PYTHON: "/nonexistent/python3",
  });
  assert.notEqual(report.code, 0);
  assert.match(report.text, /\[JUPYTER_MISSING\]/);
  assert.match(
    report.text,
    /apt-get install -y jupyter-nbconvert python3-nbclient jupyter-notebook/,
  );
});

Deno.test("preflight says PREFLIGHT_FAILED naming the check when scratch space cannot be used", async () => {
  const preflight = await denoRun(["run", "-A", "lib/preflight.ts"], {
    WORKSHOP_TMPDIR: "/dev/null/not-a-directory",
  });
  assert.notEqual(preflight.code, 0);
  assert.match(preflight.text, /Preflight failed: scratch space for nodes: .*\[PREFLIGHT_FAILED\]/);
});
