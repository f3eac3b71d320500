/**
 * Charts with Observable Plot, rendered on the server into SVG (jsdom as the
 * document), so they show in notebooks and survive into the HTML reports.
 *
 * jsdom takes most of a second to load, so it loads on first use; the chart
 * functions are async. `show()` accepts their promises directly:
 * `await show(distributionPlot(shards))`.
 *
 * @module
 */

import type * as PlotTypes from "@observablehq/plot";
import type { Displayable } from "./display.ts";
import type { ShardRow } from "./inspect.ts";

/** A rendered chart: HTML (an SVG, or a figure with title and legend around it). */
export interface Figure extends Displayable {
  /** The chart's markup. */
  readonly html: string;
}

/** Options of Observable Plot's `plot()`, without `document`. */
export type PlotOptions = PlotTypes.PlotOptions;

interface Renderer {
  Plot: typeof PlotTypes;
  document: Document;
}

let renderer: Promise<Renderer> | undefined;

/** Loads Observable Plot and a jsdom document once. */
export function plotLibrary(): Promise<Renderer> {
  renderer ??= (async () => {
    const [Plot, { JSDOM }] = await Promise.all([import("@observablehq/plot"), import("jsdom")]);
    return { Plot, document: new JSDOM("").window.document as unknown as Document };
  })();
  return renderer;
}

/** Defaults every chart shares. */
export const PLOT_DEFAULTS: Partial<PlotOptions> = {
  width: 760,
  style: { fontSize: "12px", background: "white", overflow: "visible" },
};

/**
 * Renders Plot options into a displayable figure.
 *
 * @param build Receives the Plot module and returns the options (marks etc.).
 * @example
 * ```ts
 * const fig = await renderPlot((Plot) => ({ marks: [Plot.barY([{ x: "a", y: 3 }], { x: "x", y: "y" })] }));
 * fig.html; // "<svg …"
 * ```
 */
export async function renderPlot(build: (Plot: typeof PlotTypes) => PlotOptions): Promise<Figure> {
  const { Plot, document } = await plotLibrary();
  const options = build(Plot);
  const element = Plot.plot({
    ...PLOT_DEFAULTS,
    ...options,
    style: { ...(PLOT_DEFAULTS.style as object), ...(options.style as object ?? {}) },
    document,
  });
  const html = (element as unknown as Element).outerHTML;
  return {
    html,
    [Symbol.for("Jupyter.display")]: () => ({ "text/html": html, "text/plain": "[chart]" }),
  };
}

/** A labelled moment on a time axis, in seconds. */
export interface TimeMark {
  seconds: number;
  label: string;
}

/**
 * Dashed vertical rules with their labels above the plot area: step
 * boundaries and events ("burst starts", "replica stopped") on a time axis.
 *
 * @param Plot The Observable Plot module (from {@link renderPlot}'s callback).
 * @param marks Where and what.
 * @param dy How far above the frame the labels sit. @default -12
 * @example
 * ```ts
 * renderPlot((Plot) => ({ marks: [...timeMarks(Plot, [{ seconds: 1.5, label: "swap" }]), Plot.dot(...)] }));
 * ```
 */
export function timeMarks(
  Plot: typeof PlotTypes,
  marks: readonly TimeMark[],
  dy = -12,
): PlotTypes.Markish[] {
  return [
    Plot.ruleX(marks, { x: "seconds", stroke: "#888", strokeDasharray: "4,3" }),
    Plot.text(marks, {
      x: "seconds",
      text: "label",
      frameAnchor: "top",
      textAnchor: "start",
      dx: 3,
      dy,
      fill: "#555",
    }),
  ];
}

/** Options for {@link distributionPlot}. */
export interface DistributionPlotOptions {
  /** Title above the chart. */
  title?: string;
  /** Line under the title. */
  subtitle?: string;
  /** Measure to show. @default "rows" */
  measure?: "rows" | "bytes";
}

/**
 * Shard distribution: one bar per leaf partition, coloured by the node that
 * holds it, labelled with its value.
 *
 * @example
 * ```ts
 * await show(distributionPlot(await distribution(eu1, "customer"), { title: "Year 1: 2 nodes" }));
 * ```
 */
export function distributionPlot(
  shards: readonly ShardRow[],
  options: DistributionPlotOptions = {},
): Promise<Figure> {
  const measure = options.measure ?? "rows";
  const data = shards.map((s) => ({
    partition: s.partition,
    node: s.node ? `${s.node}${s.region ? ` (${s.region})` : ""}` : "outside the cluster",
    value: measure === "rows" ? s.rows : (s.bytes ?? 0) / 1024,
  }));
  const longest = Math.max(8, ...data.map((d) => d.partition.length));
  const label = measure === "rows" ? "rows stored on the node" : "size on disk (KiB)";
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle,
    height: 54 + 34 * data.length,
    marginLeft: Math.min(300, 20 + longest * 7.5),
    marginRight: 60,
    marginBottom: 44,
    x: { label, grid: true, nice: true, labelAnchor: "center", labelOffset: 36 },
    y: { label: null, domain: data.map((d) => d.partition) },
    // A node keeps its colour from one chart to the next, also when a node
    // that sorts before it joins later (see nodeColours).
    color: { legend: true, label: "node", ...nodeColours(Plot, shards, data.map((d) => d.node)) },
    marks: [
      Plot.barX(data, { y: "partition", x: "value", fill: "node", inset: 2 }),
      Plot.text(data, {
        y: "partition",
        x: "value",
        text: (d: { value: number }) => measure === "rows" ? String(d.value) : d.value.toFixed(0),
        textAnchor: "start",
        dx: 4,
      }),
      Plot.ruleX([0]),
    ],
  }));
}

/** Palette index of each node name charted so far in this process. */
const chartedNodes = new Map<string, number>();

/**
 * The colour scale of a chart whose marks are coloured by node: legend
 * labels in natural order, and each node the colour it got the first time
 * any chart showed it, so a notebook's charts agree however nodes come and
 * go. Two nodes in one chart never share a colour (up to the palette's ten):
 * when they would, the later one moves to a colour free in this chart.
 *
 * @param Plot The Observable Plot module.
 * @param shards The rows charted (their `node` names key the colours).
 * @param labels The legend label of each row (the node with its region).
 * @returns `domain` and `range` for Plot's `color` scale.
 */
export function nodeColours(
  Plot: typeof PlotTypes,
  shards: readonly { node?: string | null }[],
  labels: readonly string[],
): { domain: string[]; range: string[] } {
  const palette = Plot.scale({
    color: { type: "ordinal", scheme: "observable10", domain: [...Array(10).keys()] },
  }).range as string[];
  const nameOf = new Map(labels.map((label, i) => [label, shards[i].node ?? label]));
  const domain = naturalSort([...nameOf.keys()]);
  const index = new Map<string, number>(); // label -> palette index in this chart
  const used = new Set<number>();
  // Nodes charted before keep their colour; then newcomers take a colour no
  // node has had yet, else one free in this chart.
  for (const label of domain) {
    const known = chartedNodes.get(nameOf.get(label)!);
    if (known === undefined || used.has(known)) continue;
    index.set(label, known);
    used.add(known);
  }
  const taken = new Set(chartedNodes.values());
  for (const label of domain.filter((l) => !index.has(l))) {
    const free = [...palette.keys()].filter((i) => !used.has(i));
    const next = free.find((i) => !taken.has(i)) ?? free[0] ?? 0;
    chartedNodes.set(nameOf.get(label)!, next);
    index.set(label, next);
    used.add(next);
    taken.add(next);
  }
  const range = domain.map((label) => palette[index.get(label)!]);
  return { domain, range };
}

/** Sorts labels with numbers in numeric order ("eu_db_2" before "eu_db_10"). */
export function naturalSort(labels: string[]): string[] {
  return labels.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}
