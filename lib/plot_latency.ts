/**
 * Latency charts: a workload's timeline with step boundaries, its
 * percentiles per step, and latency by user region. Every chart says that
 * the region latency is simulated, and by what scale.
 *
 * @module
 */

import { settings } from "./config.ts";
import { type Figure, renderPlot } from "./plot.ts";
import type { RegionLatencyRow } from "./region_latency.ts";
import type { Sample, StepMark, StepSummary } from "./workload.ts";
import { summarize } from "./workload.ts";

/** A line saying how region latency was produced, for chart subtitles. */
export function simulatedLatencyNote(scale = settings().latencyScale): string {
  if (scale === 0) return "region latency simulation off (LATENCY_SCALE=0)";
  const real = scale === 1 ? "real-world" : `${scale}× real-world`;
  return `simulated region latency: ${real} round trips (cloudping.co medians)`;
}

/** What the timeline needs: a workload, or its samples and marks. */
export interface TimelineSource {
  samples: readonly Sample[];
  marks: readonly StepMark[];
}

/** Options for {@link latencyTimeline}. */
export interface TimelineOptions {
  title?: string;
  subtitle?: string;
  /** Log scale for the y axis (latencies spanning 1 ms to seconds). @default true */
  log?: boolean;
  /**
   * At least this many lines of step labels above the chart. More are added
   * when labels would overlap: each label takes the lowest line where it fits.
   * @default 1
   */
  labelRows?: number;
}

/** Chart width and the plot area's side margins, in px (Plot's defaults for this chart). */
const CHART = { width: 760, marginLeft: 40, marginRight: 20 };

/** Estimated width of a step label (12 px sans-serif), with its gap, in px. */
function labelWidth(text: string): number {
  return 6.6 * text.length + 10;
}

/**
 * Stacks labels that start at `positions` (px, ascending) into lines: each
 * goes on the lowest line whose last label ends before it starts.
 *
 * @returns The line of each label (0 is nearest the plot) and how many lines.
 */
export function stackLabels(
  positions: readonly number[],
  widths: readonly number[],
): { line: number[]; lines: number } {
  const ends: number[] = [];
  const line = positions.map((x, i) => {
    let free = ends.findIndex((end) => end <= x);
    if (free === -1) free = ends.push(0) - 1;
    ends[free] = x + widths[i];
    return free;
  });
  return { line, lines: Math.max(1, ends.length) };
}

/**
 * Lays out step labels on a linear time axis, or on a square-root one when
 * the steps crowd the start of a long run (a quick scale-up followed by a
 * long last step) and the root spreads them onto fewer lines.
 */
function stepLayout(marks: readonly { seconds: number; step: string }[], span: number) {
  const plotWidth = CHART.width - CHART.marginLeft - CHART.marginRight;
  const widths = marks.map((m) => labelWidth(m.step));
  const place = (f: (s: number) => number) =>
    stackLabels(marks.map((m) => (f(m.seconds) / f(span)) * plotWidth), widths);
  const linear = place((s) => s);
  if (linear.lines <= 2) return { type: "linear" as const, ...linear };
  const root = place(Math.sqrt);
  return root.lines < linear.lines
    ? { type: "sqrt" as const, ...root }
    : { type: "linear" as const, ...linear };
}

/**
 * Latency over time: one dot per operation (failures as red crosses), with
 * a labelled rule at each step boundary.
 *
 * @example
 * ```ts
 * await show(latencyTimeline(load, { title: "SELECT count(*) through the re-partitioning" }));
 * ```
 */
export function latencyTimeline(
  source: TimelineSource,
  options: TimelineOptions = {},
): Promise<Figure> {
  const points = source.samples.map((s) => ({
    ...s,
    seconds: s.t / 1000,
    shown: Math.max(s.ms, 0.05),
  }));
  const ok = points.filter((p) => p.ok);
  const failed = points.filter((p) => !p.ok);
  const stepMarks = source.marks.map((m) => ({ ...m, seconds: m.t / 1000 }));
  const span = [...points, ...stepMarks].reduce((max, p) => Math.max(max, p.seconds), 1e-3);
  const layout = stepLayout(stepMarks, span);
  const labelRows = Math.max(layout.lines, Math.floor(options.labelRows ?? 1));
  const marks = stepMarks.map((m, i) => ({ ...m, line: layout.line[i] }));
  const log = options.log ?? true;
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(),
    ...CHART,
    height: 340 + 14 * (labelRows - 1),
    marginTop: 30 + 14 * (labelRows - 1),
    marginBottom: 44,
    x: {
      type: layout.type,
      domain: [0, span],
      label: layout.type === "sqrt"
        ? "time since the workload started (s, square-root scale: the early steps spread out)"
        : "time since the workload started (s)",
      grid: true,
      labelAnchor: "center",
      labelOffset: 36,
    },
    y: {
      label: "latency (ms)",
      type: log ? "log" : "linear",
      grid: true,
      tickFormat: log ? "~g" : undefined,
    },
    color: { legend: true, label: "operation" },
    marks: [
      Plot.ruleX(marks, { x: "seconds", stroke: "#888", strokeDasharray: "4,3" }),
      ...Array.from(
        { length: labelRows },
        (_, line) =>
          Plot.text(marks.filter((m) => m.line === line), {
            x: "seconds",
            frameAnchor: "top",
            text: "step",
            textAnchor: "start",
            dx: 3,
            dy: -12 - 14 * line,
            fill: "#555",
          }),
      ),
      Plot.dot(ok, { x: "seconds", y: "shown", fill: "op", r: 2.5, tip: true }),
      Plot.dot(failed, { x: "seconds", y: "shown", symbol: "times", stroke: "#d62728", r: 4 }),
    ],
  }));
}

/**
 * p50 / p95 / p99 latency per step, one panel per operation.
 *
 * @param source A workload, its samples and marks, or a ready summary.
 * @example
 * ```ts
 * await show(latencyPercentiles(load));
 * ```
 */
export function latencyPercentiles(
  source: TimelineSource | readonly StepSummary[],
  options: { title?: string; subtitle?: string } = {},
): Promise<Figure> {
  const summary = Array.isArray(source) ? source as StepSummary[] : summarize(
    (source as TimelineSource).samples,
    (source as TimelineSource).marks.map((m) => m.step),
  );
  const steps = [...new Set(summary.map((s) => s.step))];
  const data = summary.flatMap((s) =>
    (["p50", "p95", "p99"] as const).filter((p) => Number.isFinite(s[p])).map((p) => ({
      step: s.step,
      op: s.op,
      percentile: p,
      ms: s[p],
    }))
  );
  const ops = [...new Set(summary.map((s) => s.op))];
  // Latencies span a millisecond to seconds: a log axis keeps the fast steps
  // readable next to the slow ones. Bars start at a floor below the smallest value.
  const smallest = Math.min(...data.map((d) => d.ms).filter((ms) => ms > 0));
  const floor = Number.isFinite(smallest) ? 10 ** Math.floor(Math.log10(smallest)) : 0.1;
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(),
    height: 60 + 170 * ops.length,
    marginBottom: 40,
    marginRight: 70,
    fx: { domain: steps, label: null, padding: 0.15 },
    fy: { label: "operation" },
    x: { domain: ["p50", "p95", "p99"], axis: null },
    y: { label: "latency (ms), log scale", type: "log", grid: true, tickFormat: "~g" },
    color: {
      legend: true,
      label: "percentile",
      domain: ["p50", "p95", "p99"],
      range: ["#9ecae1", "#3182bd", "#08519c"],
    },
    marks: [
      Plot.barY(data, {
        fx: "step",
        fy: "op",
        x: "percentile",
        y1: floor,
        y2: (d: { ms: number }) => Math.max(d.ms, floor),
        fill: "percentile",
        tip: true,
      }),
    ],
  }));
}

/**
 * Latency by user region, one bar per region and step: who is close to the
 * data and who is not.
 *
 * @example
 * ```ts
 * await show(regionLatencyPlot([...before, ...after], { title: "count(*) as seen from each region" }));
 * ```
 */
export function regionLatencyPlot(
  rows: readonly RegionLatencyRow[],
  options: { title?: string; subtitle?: string } = {},
): Promise<Figure> {
  const steps = [...new Set(rows.map((r) => r.step))];
  const regions = [...new Set(rows.map((r) => r.region))];
  const scale = rows[0]?.latencyScale ?? settings().latencyScale;
  // One group per user region (labels on the left), one bar per step inside it, so
  // "before" and "after" for the same users sit side by side.
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(scale),
    height: 64 + regions.length * (steps.length * 20 + 16),
    marginLeft: 120,
    marginRight: 70,
    fy: { domain: regions, label: "user region", axis: "left", padding: 0.15 },
    y: { domain: steps, axis: null },
    marginBottom: 44,
    x: { label: "median latency (ms)", grid: true, labelAnchor: "center", labelOffset: 36 },
    color: { legend: steps.length > 1, domain: steps, label: "step" },
    marks: [
      Plot.barX(rows, { fy: "region", y: "step", x: "ms", fill: "step", tip: true }),
      Plot.text(rows, {
        fy: "region",
        y: "step",
        x: "ms",
        text: (r: RegionLatencyRow) => `${r.ms.toFixed(1)} ms`,
        textAnchor: "start",
        dx: 4,
      }),
      Plot.ruleX([0]),
    ],
  }));
}
