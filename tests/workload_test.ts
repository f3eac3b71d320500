import assert from "node:assert/strict";
import { startCluster } from "../lib/mod.ts";
import { percentile, type Sample, startWorkload, summarize } from "../lib/workload.ts";
import { latencyPercentiles, latencyTimeline, stackLabels } from "../lib/plot_latency.ts";

const CUSTOMER_DDL =
  `CREATE TABLE customer (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL)`;

Deno.test("summarize() gives nearest-rank percentiles per step and operation, in step order", () => {
  const samples: Sample[] = [
    ...Array.from(
      { length: 100 },
      (_, i) => ({ t: i, op: "count", ms: i + 1, ok: true, step: "b" }),
    ),
    { t: 200, op: "count", ms: 5, ok: true, step: "a" },
    { t: 201, op: "count", ms: 999, ok: false, step: "a", error: "boom" },
  ];
  const rows = summarize(samples, ["a", "b"]);
  assert.deepEqual(rows.map((r) => [r.step, r.count, r.failed, r.p50, r.p95, r.p99, r.max]), [
    ["a", 2, 1, 5, 5, 5, 5],
    ["b", 100, 0, 50, 95, 99, 100],
  ]);
  assert.ok(Number.isNaN(percentile([], 50)));
});

Deno.test("startWorkload() samples reads and writes, tags them with marked steps, and stops cleanly", async () => {
  await using cluster = await startCluster({ name: "t-workload", nodes: [{ name: "eu_db_1" }] });
  const eu1 = cluster.node("eu_db_1");
  await eu1.exec(CUSTOMER_DDL);
  const load = await startWorkload(eu1, { mix: { count: 1, point: 1, insert: 2 }, intervalMs: 5 });
  await load.waitForSamples(20);
  load.mark("second step");
  await load.waitForSamples(20);
  await load.stop();
  const steps = new Set(load.samples.map((s) => s.step));
  assert.deepEqual([...steps], ["start", "second step"]);
  assert.deepEqual(load.marks.map((m) => m.step), ["start", "second step"]);
  assert.ok(load.samples.every((s) => s.ok), JSON.stringify(load.samples.find((s) => !s.ok)));
  assert.deepEqual(new Set(load.samples.map((s) => s.op)), new Set(["count", "point", "insert"]));
  const [{ n }] = await eu1.sql`SELECT count(*) AS n FROM customer`;
  assert.equal(
    n,
    load.acknowledged.length,
    "every acknowledged insert is in the table, nothing else",
  );
  assert.deepEqual(await load.lostWrites(), []);
  const count = load.samples.length;
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(load.samples.length, count, "no samples after stop()");
  const summary = load.summary();
  assert.ok(summary.some((r) => r.step === "second step" && r.op === "insert" && r.p50 > 0));
});

Deno.test("Workload.lostWrites() reports acknowledged writes that disappeared", async () => {
  await using cluster = await startCluster({
    name: "t-workload-lost",
    nodes: [{ name: "eu_db_1" }],
  });
  const eu1 = cluster.node("eu_db_1");
  await eu1.exec(CUSTOMER_DDL);
  const load = await startWorkload(eu1, { mix: { insert: 1 }, intervalMs: 1 });
  await load.waitForSamples(10);
  await load.stop();
  const victim = load.acknowledged[3];
  await eu1.sql`DELETE FROM customer WHERE id = ${victim}::uuid`;
  assert.deepEqual(await load.lostWrites(), [victim]);
});

Deno.test("Workload records failed operations with their errors and the longest gap without a write", async () => {
  await using cluster = await startCluster({
    name: "t-workload-fail",
    nodes: [{ name: "eu_db_1" }],
  });
  const eu1 = cluster.node("eu_db_1");
  await eu1.exec(CUSTOMER_DDL);
  const load = await startWorkload(eu1, { mix: { insert: 1 }, intervalMs: 2 });
  await load.waitForSamples(5);
  await eu1.exec("ALTER TABLE customer RENAME TO customer_gone");
  await load.waitForSamples(5);
  await eu1.exec("ALTER TABLE customer_gone RENAME TO customer");
  await load.waitForSamples(5);
  await load.stop();
  const failures = load.samples.filter((s) => !s.ok);
  assert.ok(failures.length >= 1);
  assert.match(failures[0].error ?? "", /relation "customer" does not exist/);
  assert.ok(load.longestGap("insert") > 0);
  const figure = await latencyTimeline(load);
  assert.match(figure.html, /aria-label="dot"/);
  const bars = await latencyPercentiles(load);
  assert.match(bars.html, /aria-label="bar"/);
});

Deno.test("stackLabels() puts each label on the lowest line where it does not overlap", () => {
  assert.deepEqual(stackLabels([0, 50, 60, 200], [40, 40, 40, 40]), {
    line: [0, 0, 1, 0],
    lines: 2,
  });
  assert.deepEqual(stackLabels([0, 1, 2], [10, 10, 10]), { line: [0, 1, 2], lines: 3 });
  assert.deepEqual(stackLabels([], []), { line: [], lines: 1 });
});

Deno.test("latencyTimeline() spreads steps that crowd the start of a long run on a square-root axis", async () => {
  const steps = ["1 node", "2 nodes", "rename window", "after rename", "3 nodes", "6 nodes"];
  const marks = steps.map((step, i) => ({ step, t: i * 900 }));
  const sample = (t: number): Sample => ({ t, op: "count", ms: 1, ok: true, step: "" });
  const labels = (html: string) => steps.filter((step) => html.includes(`>${step}<`));

  const long = await latencyTimeline({ marks, samples: [sample(0), sample(86_000)] });
  assert.match(long.html, /square-root scale/);
  assert.deepEqual(labels(long.html), steps, "every step is labelled");

  const even = steps.map((step, i) => ({ step, t: i * 15_000 }));
  const spread = await latencyTimeline({ marks: even, samples: [sample(0), sample(86_000)] });
  assert.doesNotMatch(spread.html, /square-root/, "evenly spread steps keep a linear axis");
  assert.ok(spread.html.includes('viewBox="0 0 760 340"'), "one line of labels");
});
