import assert from "node:assert/strict";
import {
  atMost,
  formatRatio,
  interleave,
  median,
  quantile,
  renderTable,
  type Row,
} from "../bench/_measure.ts";
import { descendants, listProcesses, sampleMemory } from "../bench/_procs.ts";
import { parsePgbenchLog } from "../bench/client_latency.ts";
import { allowedError } from "../bench/delay_proxy.ts";
import type { BenchReport } from "../bench/bench.ts";

Deno.test("median() and quantile() take the middle and the nearest rank of unsorted values", () => {
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  const values = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(quantile(values, 50), 50);
  assert.equal(quantile(values, 95), 95);
  assert.equal(quantile(values, 100), 100);
});

Deno.test("interleave() rotates which measurement goes first and drops the warm-up rounds", async () => {
  const calls: string[] = [];
  const make = (name: string, value: number) => () => {
    calls.push(name);
    return Promise.resolve(value + calls.length);
  };
  const result = await interleave({ a: make("a", 0), b: make("b", 100), c: make("c", 1000) }, {
    warmup: 1,
    runs: 2,
  });
  assert.deepEqual(calls, ["a", "b", "c", "b", "c", "a", "c", "a", "b"]);
  assert.deepEqual(result, { a: [6, 8], b: [104, 109], c: [1005, 1007] });
});

Deno.test("atMost() and renderTable() mark met, missed and unmeasured goals", () => {
  assert.equal(atMost(1.9, 2), "met");
  assert.equal(atMost(2.1, 2), "missed");
  assert.equal(atMost(NaN, 2), "error");
  assert.equal(formatRatio(1.234), "1.23x");
  const rows: Row[] = [
    { section: "s", figure: "f1", goal: "<= 2x", measured: "1 s", ratio: 1.5, status: "met" },
    {
      section: "s",
      figure: "f2",
      goal: "",
      measured: "n/a",
      ratio: null,
      status: "skipped",
      note: "no engine",
    },
  ];
  const lines = renderTable(rows).split("\n");
  assert.equal(lines.length, 4);
  assert.match(lines[0], /^section\s+figure\s+goal\s+measured\s+ratio\s+met\?$/);
  assert.match(lines[2], /f1\s+<= 2x\s+1 s\s+1\.50x\s+yes$/);
  assert.match(lines[3], /skipped: no engine$/);
});

Deno.test("parsePgbenchLog() reads latencies and intervals between transaction ends in ms", () => {
  const log =
    "0 1 412 0 1715150000 999800\n0 2 0 0 1715150001 000200\n0 3 50 0 1715150001 000260\n";
  const times = parsePgbenchLog(log);
  assert.deepEqual(times.reported, [0.412, 0, 0.05]);
  assert.deepEqual(times.intervals.map((x) => Math.round(x * 1000) / 1000), [0.4, 0.06]);
  assert.throws(() => parsePgbenchLog("progress: 1.0 s\n"), /Unexpected pgbench log line/);
});

Deno.test("allowedError() is 10% of the configured round trip plus 2 ms", () => {
  assert.equal(allowedError(0), 2);
  assert.equal(allowedError(210), 23);
});

Deno.test("sampleMemory() sums the resident memory of named processes under a root", async () => {
  const child = new Deno.Command("sh", {
    args: ["-c", "sleep 30 & sleep 30 & wait"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let tree = descendants(listProcesses(), child.pid);
    for (let i = 0; i < 100 && tree.filter((p) => p.name === "sleep").length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      tree = descendants(listProcesses(), child.pid);
    }
    assert.deepEqual(tree.map((p) => p.name).sort(), ["sh", "sleep", "sleep"]);
    const sampler = sampleMemory(child.pid, { intervalMs: 20, name: "sleep" });
    await new Promise((resolve) => setTimeout(resolve, 100));
    sampler.label("later");
    await new Promise((resolve) => setTimeout(resolve, 60));
    const samples = sampler.stop();
    assert.ok(samples.length >= 3, `${samples.length} samples`);
    assert.ok(samples.every((s) => s.postgresProcesses === 2 && s.postgresRssKiB > 0));
    assert.ok(samples.every((s) => s.treeRssKiB > s.postgresRssKiB));
    assert.equal(samples[0].label, "");
    assert.equal(samples.at(-1)!.label, "later");
  } finally {
    for (const p of descendants(listProcesses(), child.pid).reverse()) {
      try {
        Deno.kill(p.pid, "SIGTERM");
      } catch { /* gone */ }
    }
    await child.status;
  }
});

Deno.test("deno task bench --quick measures every figure of the database sections and writes the JSON", async () => {
  const outDir = await Deno.makeTempDir({ prefix: "pgsw-bench-test-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "bench/bench.ts",
        "--quick",
        "--only",
        "bringup,client,proxy,fdw",
        "--no-docker",
        "--out",
        outDir,
      ],
      cwd: new URL("..", import.meta.url).pathname,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    const report: BenchReport = JSON.parse(await Deno.readTextFile(`${outDir}/latest-quick.json`));
    assert.deepEqual(report.sections, ["bringup", "client", "proxy", "fdw"]);
    assert.ok(report.machine.cores > 0 && report.machine.memoryGiB > 0);
    assert.match(report.versions.postgres, /PostgreSQL\) 16\./);
    const bySection = (s: string) => report.rows.filter((r) => r.section === s);
    assert.equal(bySection("bringup").length, 2);
    assert.equal(bySection("bringup")[1].status, "skipped");
    assert.equal(bySection("client").length, 4);
    assert.equal(bySection("proxy").length, 6);
    assert.equal(bySection("fdw").length, 4);
    for (const row of report.rows.filter((r) => r.status !== "skipped")) {
      assert.notEqual(row.status, "error", JSON.stringify(row));
      assert.ok(
        row.ratio !== null && Number.isFinite(row.ratio) && row.ratio > 0,
        JSON.stringify(row),
      );
    }
    assert.match(text, /section\s+figure\s+goal\s+measured\s+ratio\s+met\?/);
    assert.equal(report.files.length, 2);
  } finally {
    await Deno.remove(outDir, { recursive: true });
  }
});

Deno.test("deno task bench rejects an unknown section before measuring anything", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/bench.ts", "--only", "bringpu"],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /Unknown bench section "bringpu"/);
});
