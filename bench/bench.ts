/**
 * `deno task bench [--quick] [--only SECTION,...] [--notebooks PREFIX,...] [--no-docker] [--out DIR]`
 *
 * Measures the kit's performance goals, each as a ratio to a baseline
 * measured side by side in the same run, and prints a table (goal,
 * measured, ratio, met?). Writes `bench/results/<timestamp>.json` and
 * `bench/results/latest.json` (or into `--out DIR`).
 *
 * Sections (`--only` picks some, in this order):
 *
 * | section | what                                                                     | baseline            |
 * |---------|--------------------------------------------------------------------------|---------------------|
 * | bringup | 6-node cluster with notebook 01's FDW links, embedded (and docker)      | one bare initdb+start (embedded); embedded (docker) |
 * | client  | p50 of the workload client per statement                                 | pgbench, 1 client, same node and statement |
 * | proxy   | delay proxy: measured vs configured round trip; throughput at delay 0    | direct connection   |
 * | kit     | `deno task report` of every notebook at LATENCY_SCALE=0.1; peak node memory | goals in seconds  |
 * | fdw     | postgres_fdw batch_size 1 vs 100, fetch_size 100 vs 10000, with and without region latency | the other setting |
 *
 * Every figure is a median over several runs after a warm-up (the whole-kit
 * run is one run: it takes minutes). `--quick` takes fewer runs and smaller
 * sizes, and runs only the first notebook in the kit section; it exists
 * for the bench's own test and says nothing about the goals.
 *
 * Exits 1 only when a figure could not be measured; a missing optional
 * piece (no Docker engine) is reported as skipped with the reason; a goal
 * that is missed is reported, not failed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runningClusters } from "../lib/mod.ts";
import { machine, versions, watchBusy } from "./_machine.ts";
import { errorRow, renderTable, type Row } from "./_measure.ts";
import { bringup } from "./bringup.ts";
import { clientLatency } from "./client_latency.ts";
import { delayProxy } from "./delay_proxy.ts";
import { wholeKit } from "./whole_kit.ts";
import { fdwCosts } from "./fdw_costs.ts";

/** What a section gets. */
export interface SectionContext {
  /** Fewer runs and smaller sizes (for the bench's test). */
  quick: boolean;
  /** Progress output. */
  log(text: string): void;
  /** Notebook name prefixes for the kit section; empty for all. */
  notebooks: string[];
  /** Whether the bringup section may measure the Docker provider. */
  docker: boolean;
  /** Aborted on Ctrl-C; long sections stop their child processes. */
  signal: AbortSignal;
}

/** What a section returns: table rows and raw figures for the JSON. */
export interface SectionResult {
  rows: Row[];
  data: Record<string, unknown>;
}

/** The sections, in run order. */
export const SECTIONS: Record<string, (ctx: SectionContext) => Promise<SectionResult>> = {
  bringup,
  client: clientLatency,
  proxy: delayProxy,
  kit: wholeKit,
  fdw: fdwCosts,
};

/** Options of {@link runBench}. */
export interface BenchOptions {
  /** Sections to run. @default every section */
  only?: string[];
  /** Fewer repetitions. @default false */
  quick?: boolean;
  /** Notebook prefixes for the kit section. @default [] (all; the first one with `quick`) */
  notebooks?: string[];
  /** Measure the Docker provider when an engine answers. @default true */
  docker?: boolean;
  /** Folder for the JSON results. @default "<project>/bench/results" */
  outDir?: string;
  /** Progress output. @default stdout */
  log?: (text: string) => void;
  /** Aborts long sections. */
  signal?: AbortSignal;
}

/** The JSON written to `bench/results/`. */
export interface BenchReport {
  date: string;
  quick: boolean;
  sections: string[];
  machine: Awaited<ReturnType<typeof machine>>;
  versions: Awaited<ReturnType<typeof versions>>;
  /** Seconds the whole bench took. */
  seconds: number;
  rows: Row[];
  /** Raw figures and the machine's busy-ness per section. */
  data: Record<string, unknown>;
  /** Paths of the files written. */
  files: string[];
}

/**
 * Runs the bench and writes the results.
 *
 * @example
 * ```ts
 * const report = await runBench({ only: ["proxy"], quick: true });
 * report.rows.filter((r) => r.status === "missed");
 * ```
 */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const log = options.log ?? ((text: string) => console.log(text));
  const only = options.only?.length ? options.only : Object.keys(SECTIONS);
  const unknown = only.filter((name) => !(name in SECTIONS));
  if (unknown.length) {
    throw new Error(
      `Unknown bench section "${unknown[0]}": use one of ${Object.keys(SECTIONS).join(", ")}`,
    );
  }
  const started = performance.now();
  const date = new Date();
  const [host, tools] = await Promise.all([machine(), versions()]);
  log(
    `machine: ${host.cores} cores (${host.cpuModel}), ${host.memoryGiB} GiB, ${host.os}, ` +
      `load ${host.loadAtStart.join(" ")}`,
  );
  log(
    `versions: Deno ${tools.deno}; ${tools.postgres}; ${tools.pgbench}; Docker ${tools.docker}`,
  );
  const rows: Row[] = [];
  const data: Record<string, unknown> = {};
  const ctx: SectionContext = {
    quick: options.quick ?? false,
    log,
    notebooks: options.notebooks ?? [],
    docker: options.docker ?? true,
    signal: options.signal ?? new AbortController().signal,
  };
  for (const name of Object.keys(SECTIONS).filter((n) => only.includes(n))) {
    log(`\n== ${name} ==`);
    const busy = watchBusy();
    try {
      const result = await SECTIONS[name](ctx);
      rows.push(...result.rows);
      data[name] = { ...result.data, busy: busy() };
    } catch (error) {
      log(`  ${name} failed: ${error instanceof Error ? error.stack ?? error.message : error}`);
      rows.push(errorRow(name, "section", error));
      data[name] = { error: String((error as Error)?.message ?? error), busy: busy() };
    } finally {
      for (const cluster of runningClusters()) await cluster.stop().catch(() => {});
    }
    const b = data[name] as { busy: ReturnType<ReturnType<typeof watchBusy>> };
    log(
      `  (${b.busy.seconds} s; load ${b.busy.load1.join(" -> ")}; ` +
        `CPU busy ${percent(b.busy.cpuBusy)}, of which others ${percent(b.busy.othersBusy)})`,
    );
  }
  const report: BenchReport = {
    date: date.toISOString(),
    quick: ctx.quick,
    sections: only,
    machine: host,
    versions: tools,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    rows,
    data,
    files: [],
  };
  const outDir = options.outDir ?? new URL("./results", import.meta.url).pathname;
  await Deno.mkdir(outDir, { recursive: true });
  const stamp = report.date.replace(/[:.]/g, "-");
  const suffix = ctx.quick ? "-quick" : "";
  report.files = [`${outDir}/${stamp}${suffix}.json`, `${outDir}/latest${suffix}.json`];
  const text = JSON.stringify(report, null, 2) + "\n";
  for (const file of report.files) await Deno.writeTextFile(file, text);
  return report;
}

function percent(share: number | null): string {
  return share === null ? "n/a" : `${Math.round(share * 100)}%`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string", multiple: true },
      notebooks: { type: "string", multiple: true },
      out: { type: "string" },
      "no-docker": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno task bench [--quick] [--only bringup,client,proxy,kit,fdw] [--notebooks 01,02] " +
        "[--no-docker] [--out DIR]",
    );
    Deno.exit(0);
  }
  const split = (list?: string[]) => (list ?? []).flatMap((v) => v.split(",")).filter(Boolean);
  const abort = new AbortController();
  const onSignal = () => {
    console.log("\ninterrupted: stopping what the bench started");
    abort.abort();
    Promise.allSettled(runningClusters().map((c) => c.stop())).then(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const report = await runBench({
      quick: values.quick,
      only: split(values.only),
      notebooks: split(values.notebooks),
      outDir: values.out,
      docker: !values["no-docker"],
      signal: abort.signal,
    });
    console.log(`\n${renderTable(report.rows)}\n`);
    console.log(
      `${report.seconds} s in all; load ${report.machine.loadAtStart[0]} at start, ` +
        `${Deno.loadavg()[0].toFixed(2)} at end. Written: ${report.files.join(", ")}`,
    );
    const failed = report.rows.filter((r) => r.status === "error");
    if (failed.length) {
      console.log(`${failed.length} figure(s) could not be measured (see "ERROR" rows)`);
    }
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.exit(failed.length ? 1 : 0);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(2);
  }
}
