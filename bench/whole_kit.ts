/**
 * Section "kit": `deno task report` over every notebook with
 * `LATENCY_SCALE=0.1`, as CI and an instructor run it: the time per
 * notebook (from the report's summary.json), the wall time of the whole
 * command (prefetch and preflight included), and the peak memory of the
 * nodes, sampled every 200 ms over every `postgres` process that descends
 * from the report (see _procs.ts). The reports go to a temporary folder,
 * not to `reports/`.
 *
 * Goals: the whole kit under 2 minutes on a 2-core machine, no notebook
 * over 40 s. One run (it takes minutes); dependencies are cached by the
 * report's own prefetch.
 *
 * @module
 */

import { descendants, listProcesses, type MemorySample, peakOf, sampleMemory } from "./_procs.ts";
import { atMost, firstLine, type Row } from "./_measure.ts";
import type { SectionContext, SectionResult } from "./bench.ts";

const GOAL_TOTAL_S = 120;
const GOAL_NOTEBOOK_S = 40;
const PROJECT_DIR = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The notebooks the kit has now, by file name without extension, in name order. */
export async function notebookNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(`${PROJECT_DIR}/notebooks`)) {
    if (entry.isFile && /^\d\d_.*\.ipynb$/.test(entry.name)) {
      names.push(entry.name.replace(/\.ipynb$/, ""));
    }
  }
  return names.sort();
}

interface SummaryNotebook {
  notebook: string;
  status: "ok" | "failed";
  seconds: number;
  failedCell: number | null;
  error: { ename: string; evalue: string } | null;
}

/** Runs the section. */
export async function wholeKit(ctx: SectionContext): Promise<SectionResult> {
  const all = await notebookNames();
  const names = ctx.notebooks.length ? ctx.notebooks : ctx.quick ? all.slice(0, 1) : [];
  const outDir = await Deno.makeTempDir({ prefix: "pgsw-bench-report-" });
  const env = { LATENCY_SCALE: "0.1", NO_COLOR: "1" };
  ctx.log(
    `  deno task report ${names.length ? names.join(" ") : `(all ${all.length} notebooks)`}` +
      ` with LATENCY_SCALE=0.1`,
  );
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "report", "--out", outDir, ...names],
    cwd: PROJECT_DIR,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const sampler = sampleMemory(child.pid, { intervalMs: 200 });
  const onAbort = () => stopTree(child.pid);
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  let stdout = "";
  let stderr = "";
  try {
    const readOut = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        stdout += chunk;
        // report.ts prints "<name> ... " before a notebook and "ok 12.3 s\n" after it.
        const running = /(\d\d_\w+) \.\.\. $/.exec(stdout);
        sampler.label(running ? running[1] : "");
        for (const line of chunk.split("\n")) if (line.trim()) ctx.log(`    ${line.trim()}`);
      }
    })();
    const readErr = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
    })();
    const [status] = await Promise.all([child.status, readOut, readErr]);
    const wallSeconds = (performance.now() - started) / 1000;
    const samples = sampler.stop();
    const summary = await Deno.readTextFile(`${outDir}/summary.json`).then(JSON.parse).catch(
      () => undefined,
    ) as { totalSeconds: number; notebooks: SummaryNotebook[] } | undefined;
    if (!summary) {
      throw new Error(
        `deno task report exited ${status.code} without a summary: ${
          firstLine(stderr.trim() || stdout.trim())
        }`,
      );
    }
    return result(summary, wallSeconds, samples, names.length === 0, stderr);
  } finally {
    sampler.stop();
    ctx.signal.removeEventListener("abort", onAbort);
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
  }
}

function result(
  summary: { totalSeconds: number; notebooks: SummaryNotebook[] },
  wallSeconds: number,
  samples: MemorySample[],
  everyNotebook: boolean,
  stderr: string,
): SectionResult {
  const rows: Row[] = [];
  const failed = summary.notebooks.filter((n) => n.status !== "ok");
  rows.push({
    section: "kit",
    figure: `whole kit at LATENCY_SCALE=0.1 (${summary.notebooks.length} notebook${
      summary.notebooks.length === 1 ? "" : "s"
    }${everyNotebook ? "" : ", a selection"}), wall time`,
    goal: everyNotebook ? `< ${GOAL_TOTAL_S} s` : "",
    measured: `${wallSeconds.toFixed(1)} s (notebooks ${summary.totalSeconds.toFixed(1)} s)`,
    ratio: everyNotebook ? wallSeconds / GOAL_TOTAL_S : null,
    status: failed.length
      ? "error"
      : everyNotebook
      ? atMost(wallSeconds, GOAL_TOTAL_S - 1e-9)
      : "info",
    note: failed.length ? `${failed.length} notebook(s) failed, see below` : undefined,
  });
  for (const nb of summary.notebooks) {
    const ok = nb.status === "ok";
    rows.push({
      section: "kit",
      figure: `notebook ${nb.notebook}`,
      goal: `< ${GOAL_NOTEBOOK_S} s`,
      measured: `${nb.seconds.toFixed(1)} s`,
      ratio: nb.seconds / GOAL_NOTEBOOK_S,
      status: ok ? atMost(nb.seconds, GOAL_NOTEBOOK_S - 1e-9) : "error",
      note: ok
        ? undefined
        : `failed in cell ${nb.failedCell}: ${
          nb.error ? `${nb.error.ename}: ${firstLine(nb.error.evalue)}` : "no error text"
        }`,
    });
  }
  const rss = peakOf(samples, "postgresRssKiB");
  const pss = peakOf(samples, "postgresPssKiB");
  const tree = peakOf(samples, "treeRssKiB");
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  rows.push({
    section: "kit",
    figure: "peak memory of the node processes (sum over postgres processes)",
    goal: "",
    measured: rss
      ? `RSS ${mib(rss.postgresRssKiB)} (${rss.postgresProcesses} processes, in ${
        rss.label || "between notebooks"
      }); PSS ${mib(pss?.postgresPssKiB ?? 0)}`
      : "no samples",
    ratio: null,
    status: rss && rss.postgresProcesses > 0 ? "info" : "error",
    note: rss && rss.postgresProcesses > 0 ? undefined : "no postgres process was seen",
  });
  const perNotebook: Record<string, unknown> = {};
  for (const nb of summary.notebooks) {
    const own = samples.filter((s) => s.label === nb.notebook);
    perNotebook[nb.notebook] = {
      seconds: nb.seconds,
      status: nb.status,
      peakPostgresRssKiB: Math.max(0, ...own.map((s) => s.postgresRssKiB)),
      peakPostgresPssKiB: Math.max(0, ...own.map((s) => s.postgresPssKiB)),
      peakPostgresProcesses: Math.max(0, ...own.map((s) => s.postgresProcesses)),
      error: nb.error,
    };
  }
  return {
    rows,
    data: {
      latencyScale: 0.1,
      wallSeconds: Math.round(wallSeconds * 10) / 10,
      notebooksSeconds: summary.totalSeconds,
      notebooks: perNotebook,
      samples: samples.length,
      peak: { postgresRss: rss, postgresPss: pss, treeRss: tree },
      stderrTail: stderr.trim().split("\n").slice(-10).join("\n"),
    },
  };
}

/**
 * Ends the report, its notebook runner and kernels (deepest first). Nodes
 * and reapers are left alone: each kernel's reaper sees its kernel gone and
 * removes that kernel's nodes and run directory.
 */
function stopTree(root: number): void {
  const tree = descendants(listProcesses(), root)
    .filter((p) => /^(deno|python)/.test(p.name))
    .reverse();
  for (const p of tree) {
    try {
      Deno.kill(p.pid, "SIGTERM");
    } catch { /* gone */ }
  }
}
