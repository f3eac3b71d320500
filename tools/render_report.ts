/**
 * Executed notebooks as self-contained HTML reports: one file per notebook
 * with no external resources and no script, plus an index page.
 *
 * @module
 */

import { Marked, type Tokens } from "marked";
import { type Notebook, type NotebookCell, type NotebookOutput, sourceOf } from "./nbtext.ts";

/** The error a notebook run stopped on. */
export interface RunError {
  ename: string;
  evalue: string;
  traceback: string[];
}

/** The settings a run used, shown in every header. */
export interface RunSettings {
  /** `WORKSHOP_PROVIDER`. */
  provider: string;
  /** `LATENCY_SCALE`. */
  latencyScale: string;
}

/** What the report says about one notebook run. */
export interface ReportMeta {
  /** The notebook's file name without `.ipynb`. */
  name: string;
  status: "ok" | "failed";
  /** Wall-clock seconds of the run. */
  seconds: number;
  /** When the run started, ISO 8601. */
  date: string;
  settings: RunSettings;
  /** Index of the cell that failed, among all cells. @default null */
  failedCell?: number | null;
  /** The error of the failed cell. @default null */
  error?: RunError | null;
  /** Link back to the index page; empty for none. @default "index.html" */
  indexHref?: string;
}

/** One row of the index page. */
export interface IndexEntry {
  name: string;
  /** The notebook's title (its first H1). @default the name */
  title?: string;
  status: "ok" | "failed";
  seconds: number;
  failedCell?: number | null;
  error?: RunError | null;
  /** Link to the HTML report. */
  href: string;
  /** Link to the executed `.ipynb`. */
  ipynbHref?: string;
  /** The notebook's goal, from its `**Goal.**` paragraph (first sentence). */
  goal?: string;
  /** The teaching time estimate, from its `**Time:**` line (e.g. "about 25 minutes"). */
  teachingTime?: string;
}

/** Options for {@link renderIndexHtml}. */
export interface IndexOptions {
  /** When the run started, ISO 8601. @default now */
  date?: string;
  settings?: RunSettings;
  /** Wall-clock seconds of the whole run. @default the sum of the entries */
  totalSeconds?: number;
}

const MIME_ORDER = [
  "text/html",
  "image/svg+xml",
  "image/png",
  "image/jpeg",
  "text/markdown",
  "application/json",
  "text/plain",
];

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

/**
 * Removes ANSI colour and control sequences.
 *
 * @param text Text from a terminal or a kernel.
 * @returns The text without escape sequences.
 *
 * @example
 * ```ts
 * stripAnsi("\x1b[31mError\x1b[39m: boom"); // "Error: boom"
 * ```
 */
export function stripAnsi(text: string): string {
  return text.replace(ANSI, "");
}

/**
 * The notebook's title: the text of its first markdown H1.
 *
 * @param notebook The notebook.
 * @returns The title, or undefined when there is no H1.
 *
 * @example
 * ```ts
 * notebookTitle(notebook); // "Horizontal scaling"
 * ```
 */
export function notebookTitle(notebook: Notebook): string | undefined {
  for (const cell of notebook.cells) {
    if (cell.cell_type !== "markdown") continue;
    const match = /^#\s+(.+?)\s*#*\s*$/m.exec(sourceOf(cell));
    if (match) return plainText(match[1]);
  }
  return undefined;
}

/**
 * The goal (first sentence of the `**Goal.**` paragraph) and the teaching
 * time (`**Time:** about N minutes`) a notebook states at its top.
 *
 * @example
 * ```ts
 * notebookIntro(notebook); // { goal: "Start with one PostgreSQL node…", teachingTime: "about 25 minutes" }
 * ```
 */
export function notebookIntro(notebook: Notebook): { goal?: string; teachingTime?: string } {
  const text = notebook.cells.filter((c) => c.cell_type === "markdown").map(sourceOf).join("\n\n");
  const goal = /\*\*Goal\.?\*\*\.?\s*([\s\S]+?)(?:\n\s*\n|$)/.exec(text)?.[1];
  const time = /\*\*Time:?\*\*:?\s*([^.*\n]+)/.exec(text)?.[1];
  const firstSentence = goal
    ? plainText(goal.replace(/\s+/g, " ")).match(/^.+?[.!?](?=\s|$)/)?.[0]
    : undefined;
  return {
    goal: firstSentence ?? (goal ? plainText(goal) : undefined),
    teachingTime: time?.trim(),
  };
}

/**
 * Renders an executed notebook as one self-contained HTML page: title,
 * run header, table of contents, markdown, code and outputs. A failed cell
 * is highlighted with its error; cells after it are marked as not run.
 *
 * @param notebook The executed (possibly partially executed) notebook.
 * @param meta The run: status, time, settings, the failing cell.
 * @returns The HTML document.
 *
 * @example
 * ```ts
 * const html = renderNotebookHtml(notebook, {
 *   name: "01_horizontal_scaling", status: "ok", seconds: 23.4,
 *   date: new Date().toISOString(), settings: { provider: "embedded", latencyScale: "1" },
 * });
 * ```
 */
export function renderNotebookHtml(notebook: Notebook, meta: ReportMeta): string {
  const title = notebookTitle(notebook) ?? meta.name;
  const markdown = markdownRenderer();
  const failedCell = meta.failedCell ?? null;
  const cells = notebook.cells.map((cell, index) =>
    renderCell(cell, index, markdown, {
      failed: index === failedCell,
      notRun: failedCell !== null && index > failedCell,
      error: index === failedCell ? meta.error ?? null : null,
    })
  ).join("\n");
  const indexHref = meta.indexHref ?? "index.html";
  const body = `<header class="report-header">
${indexHref ? `<a class="back" href="${escapeHtml(indexHref)}">All notebooks</a>` : ""}
<h1>${escapeHtml(title)}</h1>
<p class="run-line">${statusBadge(meta.status)}
<span>${formatSeconds(meta.seconds)}</span>
<span>${formatDate(meta.date)}</span>
<span>provider <b>${escapeHtml(meta.settings.provider)}</b></span>
<span>latency scale <b>${escapeHtml(meta.settings.latencyScale)}</b></span>
<span class="file">${escapeHtml(meta.name)}.ipynb</span></p>
${failureBanner(notebook, meta)}
</header>
${tableOfContents(markdown.headings)}
<main>
${cells}
</main>`;
  return page(title, body);
}

/**
 * Renders the index page: every notebook in order with status, run time
 * and links, and the total.
 *
 * @param entries One row per notebook, in order.
 * @param options Date, settings and total time of the run.
 * @returns The HTML document.
 *
 * @example
 * ```ts
 * renderIndexHtml([{ name: "01_x", status: "ok", seconds: 2.1, href: "01_x.html" }]);
 * ```
 */
export function renderIndexHtml(entries: IndexEntry[], options: IndexOptions = {}): string {
  const total = options.totalSeconds ?? entries.reduce((sum, entry) => sum + entry.seconds, 0);
  const failed = entries.filter((entry) => entry.status === "failed").length;
  const rows = entries.map((entry) => {
    const failure = entry.status === "failed"
      ? `<div class="index-error">${
        entry.failedCell !== null && entry.failedCell !== undefined
          ? `cell ${entry.failedCell + 1}: `
          : ""
      }${escapeHtml(firstLine(entry.error))}</div>`
      : "";
    return `<tr class="${entry.status}">
<td><a href="${escapeHtml(entry.href)}">${escapeHtml(entry.title ?? entry.name)}</a>
${entry.goal ? `<div class="index-goal">${escapeHtml(entry.goal)}</div>` : ""}
<div class="file">${escapeHtml(entry.name)}.ipynb</div>${failure}</td>
<td>${escapeHtml(entry.teachingTime ?? "")}</td>
<td>${statusBadge(entry.status)}</td>
<td class="num">${formatSeconds(entry.seconds)}</td>
<td>${entry.ipynbHref ? `<a href="${escapeHtml(entry.ipynbHref)}">.ipynb</a>` : ""}</td>
</tr>`;
  }).join("\n");
  const settings = options.settings
    ? `<span>provider <b>${escapeHtml(options.settings.provider)}</b></span>
<span>latency scale <b>${escapeHtml(options.settings.latencyScale)}</b></span>`
    : "";
  const summary = failed === 0
    ? `${statusBadge("ok")} all ${entries.length} notebooks ran`
    : `${statusBadge("failed")} ${failed} of ${entries.length} notebooks failed`;
  const body = `<header class="report-header">
<h1>Workshop notebooks</h1>
<p class="run-line">${summary}
<span>${formatSeconds(total)} in total</span>
<span>${formatDate(options.date ?? new Date().toISOString())}</span>
${settings}</p>
</header>
<main>
<table class="index">
<thead><tr><th>Notebook</th><th>Teaching time</th><th>Status</th><th class="num">Run time</th><th>Executed</th></tr></thead>
<tbody>
${rows}
</tbody>
<tfoot><tr><td>Total</td><td></td><td></td><td class="num">${
    formatSeconds(total)
  }</td><td></td></tr></tfoot>
</table>
</main>`;
  return page("Workshop notebooks", body);
}

interface Heading {
  depth: number;
  text: string;
  id: string;
}

interface MarkdownRenderer {
  render(markdown: string): string;
  /** Every H2/H3 rendered so far, in order. */
  headings: Heading[];
}

/** A marked instance that gives headings ids, collects H2/H3, drops the title H1 and styles notes. */
function markdownRenderer(): MarkdownRenderer {
  const headings: Heading[] = [];
  const used = new Set<string>();
  let titleDropped = false;
  const marked = new Marked({
    gfm: true,
    renderer: {
      heading({ tokens, depth, text }: Tokens.Heading) {
        const inner = this.parser.parseInline(tokens);
        if (depth === 1 && !titleDropped) {
          titleDropped = true; // it is the page title, shown in the header
          return "";
        }
        const id = uniqueSlug(plainText(text), used);
        if (depth === 2 || depth === 3) headings.push({ depth, text: plainText(text), id });
        return `<h${depth} id="${id}"><a class="anchor" href="#${id}">${inner}</a></h${depth}>\n`;
      },
      blockquote({ tokens, text }: Tokens.Blockquote) {
        const inner = this.parser.parse(tokens);
        // The sources' presenter notes: "> **Presenter:** ...", "> Mention ...", "MENTION PAUSE",
        // "Draw attention to ...". Other blockquotes (quotations) stay quotations.
        const labelled = /^\s*(\*\*|__)?presenter\b/i.test(text);
        const presenter = labelled ||
          /^\s*(\*\*|__)?(mention|draw attention|notice how)\b/i.test(text);
        if (!presenter) return `<blockquote>\n${inner}</blockquote>\n`;
        const label = labelled ? "" : `<div class="note-label">Presenter note</div>\n`;
        return `<aside class="presenter-note">\n${label}${inner}</aside>\n`;
      },
      code({ text, lang }: Tokens.Code) {
        const language = (lang ?? "").split(/\s/)[0];
        const code = /^(ts|typescript|js|javascript|tsx|jsx)$/i.test(language)
          ? highlightTypeScript(text)
          : escapeHtml(text);
        return `<pre class="source"><code>${code}</code></pre>\n`;
      },
    },
  });
  return { render: (markdown) => marked.parse(markdown, { async: false }) as string, headings };
}

interface CellState {
  failed: boolean;
  notRun: boolean;
  error: RunError | null;
}

function renderCell(
  cell: NotebookCell,
  index: number,
  markdown: MarkdownRenderer,
  state: CellState,
): string {
  const source = sourceOf(cell);
  if (cell.cell_type === "markdown") {
    return `<section class="cell markdown" id="cell-${index + 1}">\n${
      markdown.render(source)
    }</section>`;
  }
  if (cell.cell_type === "raw") {
    return `<section class="cell raw" id="cell-${index + 1}"><pre>${
      escapeHtml(source)
    }</pre></section>`;
  }
  const classes = ["cell", "code", state.failed ? "failed" : "", state.notRun ? "not-run" : ""]
    .filter(Boolean).join(" ");
  const outputs = coalesceStreams(cell.outputs ?? []).map(renderOutput);
  const hasErrorOutput = (cell.outputs ?? []).some((output) => output.output_type === "error");
  if (state.failed && state.error && !hasErrorOutput) outputs.push(errorBox(state.error));
  return `<section class="${classes}" id="cell-${index + 1}">
<div class="cell-label">${cellLabel(cell, index, state)}</div>
<pre class="source"><code>${highlightTypeScript(source)}</code></pre>
${outputs.length ? `<div class="outputs">\n${outputs.join("\n")}\n</div>` : ""}
</section>`;
}

function cellLabel(cell: NotebookCell, index: number, state: CellState): string {
  const parts = [`<a href="#cell-${index + 1}">cell ${index + 1}</a>`];
  if (cell.execution_count) parts.push(`[${cell.execution_count}]`);
  const seconds = cellSeconds(cell);
  if (seconds !== undefined && seconds >= 0.05) parts.push(formatSeconds(seconds));
  if (state.failed) parts.push(`<b class="failed-label">this cell failed</b>`);
  if (state.notRun) parts.push("not run");
  return parts.join(" · ");
}

function cellSeconds(cell: NotebookCell): number | undefined {
  const execution = cell.metadata?.execution as Record<string, string> | undefined;
  const start = execution?.["iopub.execute_input"];
  const end = execution?.["shell.execute_reply"];
  if (!start || !end) return undefined;
  return (Date.parse(end) - Date.parse(start)) / 1000;
}

function renderOutput(output: NotebookOutput): string {
  switch (output.output_type) {
    case "stream": {
      const name = output.name === "stderr" ? "stderr" : "stdout";
      return `<pre class="output ${name}">${escapeHtml(stripAnsi(joinText(output.text)))}</pre>`;
    }
    case "error":
      return errorBox({
        ename: output.ename ?? "Error",
        evalue: output.evalue ?? "",
        traceback: output.traceback ?? [],
      });
    case "execute_result":
    case "display_data":
    case "update_display_data":
      return renderData(output.data ?? {});
    default:
      return "";
  }
}

function renderData(data: Record<string, unknown>): string {
  const mime = MIME_ORDER.find((type) => type in data);
  if (!mime) return "";
  const value = data[mime];
  const text = typeof value === "string" || Array.isArray(value)
    ? joinText(value as string | string[])
    : "";
  switch (mime) {
    case "text/html":
      return `<div class="output html">${text}</div>`;
    case "image/svg+xml":
      return `<div class="output svg">${
        text.replace(/<\?xml[^>]*>\s*|<!DOCTYPE[^>]*>\s*/gi, "")
      }</div>`;
    case "image/png":
    case "image/jpeg":
      return `<div class="output image"><img alt="" src="data:${mime};base64,${
        text.replace(/\s/g, "")
      }"></div>`;
    case "text/markdown":
      return `<div class="output markdown">${
        new Marked({ gfm: true }).parse(text, { async: false })
      }</div>`;
    case "application/json":
      return `<pre class="output json">${escapeHtml(JSON.stringify(value, null, 2))}</pre>`;
    default:
      return `<pre class="output text">${escapeHtml(stripAnsi(text))}</pre>`;
  }
}

function errorBox(error: RunError): string {
  const [title, ...messageLines] = stripAnsi(`${error.ename}: ${error.evalue}`).split("\n");
  const traceback = error.traceback.map(stripAnsi).join("\n").split("\n");
  if (traceback[0]?.trim() === title.trim()) traceback.shift();
  const details = (error.traceback.length > 0 ? traceback : messageLines).join("\n").trim();
  return `<div class="output error">
<div class="error-title">${escapeHtml(title)}</div>
${details ? `<pre>${escapeHtml(details)}</pre>` : ""}
</div>`;
}

function failureBanner(notebook: Notebook, meta: ReportMeta): string {
  if (meta.status !== "failed") return "";
  const index = meta.failedCell ?? null;
  const where = index === null
    ? "before any cell ran"
    : `at <a href="#cell-${index + 1}">cell ${index + 1} of ${notebook.cells.length}</a>`;
  return `<div class="failure-banner"><b>This notebook failed</b> ${where}: ${
    escapeHtml(firstLine(meta.error))
  }</div>`;
}

function tableOfContents(headings: Heading[]): string {
  if (headings.length === 0) return "";
  const items: string[] = [];
  let open = false;
  for (const heading of headings) {
    const link = `<a href="#${heading.id}">${escapeHtml(heading.text)}</a>`;
    if (heading.depth === 2) {
      if (open) items.push("</ol></li>");
      items.push(`<li>${link}<ol>`);
      open = true;
    } else {
      items.push(`<li>${link}</li>`);
    }
  }
  if (open) items.push("</ol></li>");
  const html = items.join("\n").replaceAll("<ol>\n</ol>", "");
  return `<nav class="toc"><div class="toc-title">Contents</div>\n<ol>\n${html}\n</ol></nav>`;
}

/** Merges consecutive stream outputs of the same name, as Jupyter shows them. */
function coalesceStreams(outputs: NotebookOutput[]): NotebookOutput[] {
  const merged: NotebookOutput[] = [];
  for (const output of outputs) {
    const last = merged.at(-1);
    if (
      output.output_type === "stream" && last?.output_type === "stream" && last.name === output.name
    ) {
      merged[merged.length - 1] = { ...last, text: joinText(last.text) + joinText(output.text) };
    } else {
      merged.push(output);
    }
  }
  return merged;
}

const KEYWORDS = new Set(
  ("abstract as async await break case catch class const continue declare default delete do else enum " +
    "export extends false finally for from function if implements import in instanceof interface keyof " +
    "let new null of readonly return satisfies static super switch this throw true try type typeof " +
    "undefined using var void while yield").split(" "),
);

const TOKENS =
  /(\/\/[^\n]*|\/\*[\s\S]*?\*\/)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\[\s\S])*`)|\b(\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?n?)\b|([A-Za-z_$][\w$]*)/g;

/** Escapes TypeScript source and wraps comments, strings, numbers and keywords in spans. */
function highlightTypeScript(source: string): string {
  let html = "";
  let last = 0;
  for (const match of source.matchAll(TOKENS)) {
    const [token, comment, string, number, word] = match;
    html += escapeHtml(source.slice(last, match.index));
    last = match.index + token.length;
    const kind = comment
      ? "c"
      : string
      ? "s"
      : number
      ? "n"
      : word && KEYWORDS.has(word)
      ? "k"
      : "";
    html += kind ? `<span class="t${kind}">${escapeHtml(token)}</span>` : escapeHtml(token);
  }
  return html + escapeHtml(source.slice(last));
}

function uniqueSlug(text: string, used: Set<string>): string {
  const base = text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
    .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "section";
  let slug = base;
  for (let n = 2; used.has(slug) || /^cell-\d+$/.test(slug); n++) slug = `${base}-${n}`;
  used.add(slug);
  return slug;
}

/** Markdown inline text without markup: `**a** [b](c)` -> `a b`. */
function plainText(markdown: string): string {
  return markdown
    .replace(/<[^>]+>/g, "")
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/[*`~]+/g, "")
    .replace(/(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])/g, "") // emphasis, not postgres_fdw
    .replace(/&amp;/g, "&").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .trim();
}

function firstLine(error: RunError | null | undefined): string {
  if (!error) return "";
  return stripAnsi(`${error.ename}: ${error.evalue}`).split("\n")[0];
}

function joinText(text: string | string[] | undefined): string {
  return Array.isArray(text) ? text.join("") : text ?? "";
}

function statusBadge(status: "ok" | "failed"): string {
  return status === "ok"
    ? `<span class="badge ok">passed</span>`
    : `<span class="badge failed">failed</span>`;
}

function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

function formatDate(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return escapeHtml(iso);
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
${CSS}
</style>
</head>
<body>
${body}
</body>
</html>
`;
}

const CSS = `
:root { --text: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --bad: #cf222e; --note: #0969da; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--text); background: #fff; line-height: 1.55;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.report-header, .toc, main { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
.report-header { padding-top: 24px; }
.report-header h1 { margin: 4px 0 8px; font-size: 2rem; line-height: 1.2; }
.back { font-size: 0.9rem; color: var(--note); text-decoration: none; }
.back::before { content: "\\2190  "; }
.run-line { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; margin: 0 0 16px;
  color: var(--muted); font-size: 0.95rem; }
.run-line b { color: var(--text); font-weight: 600; }
.file { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em; color: var(--muted); }
.badge { display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 0.85rem; font-weight: 600; color: #fff; }
.badge.ok { background: var(--ok); }
.badge.failed { background: var(--bad); }
.failure-banner { margin: 0 0 16px; padding: 10px 14px; border: 1px solid #ff818266; border-left: 4px solid var(--bad);
  background: #ffebe9; border-radius: 6px; white-space: pre-wrap; }
.failure-banner a { color: var(--bad); }
.toc { margin-bottom: 8px; }
.toc > ol { margin: 0; padding: 12px 16px 12px 36px; background: var(--soft); border: 1px solid var(--line); border-radius: 6px; }
.toc-title { font-weight: 600; margin-bottom: 6px; }
.toc ol ol { padding-left: 20px; }
.toc a { color: var(--note); text-decoration: none; }
.toc a:hover { text-decoration: underline; }
main { padding-bottom: 48px; }
.cell { margin: 18px 0; }
.cell.markdown h1, .cell.markdown h2, .cell.markdown h3 { line-height: 1.25; margin: 28px 0 10px; }
.cell.markdown h2 { font-size: 1.5rem; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.cell.markdown h3 { font-size: 1.2rem; }
h1 .anchor, h2 .anchor, h3 .anchor, h4 .anchor { color: inherit; text-decoration: none; }
.cell.markdown code, .output.markdown code { background: var(--soft); padding: 1px 5px; border-radius: 4px; font-size: 0.9em; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
pre { margin: 0; font-size: 13px; line-height: 1.45; overflow-x: auto; white-space: pre; }
pre.source { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
pre.source code { background: none; padding: 0; font-size: inherit; }
.cell-label { font-size: 0.8rem; color: var(--muted); margin-bottom: 4px; }
.cell-label a { color: var(--muted); text-decoration: none; }
.tk { color: #cf222e; } .ts { color: #0a3069; } .tc { color: #6e7781; font-style: italic; } .tn { color: #0550ae; }
.outputs { margin-top: 6px; padding-left: 14px; border-left: 3px solid var(--line); }
.output { margin: 6px 0; }
pre.output { padding: 6px 0; white-space: pre-wrap; word-break: break-word; }
pre.output.stderr { background: #fff8c5; border-radius: 4px; padding: 6px 10px; color: #4d3800; }
.output.html, .output.svg, .output.image, .output.markdown { overflow-x: auto; }
svg, img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9rem; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f8fa99; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.output.error { border: 1px solid #ff8182; background: #ffebe9; border-radius: 6px; padding: 8px 12px; }
.error-title { color: var(--bad); font-weight: 600; white-space: pre-wrap; }
.output.error pre { margin-top: 6px; color: #82071e; white-space: pre-wrap; }
.cell.failed { border: 2px solid var(--bad); border-radius: 8px; padding: 8px 10px; }
.failed-label { color: var(--bad); }
.cell.not-run { opacity: 0.55; }
.presenter-note { margin: 14px 0; padding: 10px 14px; background: #ddf4ff; border: 1px solid #54aeff66;
  border-left: 4px solid var(--note); border-radius: 6px; }
.presenter-note > :first-child, .presenter-note > .note-label + * { margin-top: 0; }
.presenter-note > :last-child { margin-bottom: 0; }
blockquote { margin: 14px 0; padding: 2px 14px; border-left: 4px solid var(--line); color: var(--muted); }
.output figure { margin: 8px 0; }
.output figure > h2 { font-size: 1.05rem; margin: 6px 0 2px; border: 0; }
.output figure > h3 { font-size: 0.9rem; font-weight: 400; color: var(--muted); margin: 0 0 6px; }
.note-label { font-size: 0.75rem; font-weight: 700; letter-spacing: 0.05em; text-transform: uppercase; color: var(--note); margin-bottom: 4px; }
table.index { width: 100%; font-size: 0.95rem; }
table.index td { padding: 8px 10px; }
table.index tfoot td { font-weight: 600; background: var(--soft); }
.index-goal { color: var(--muted); font-size: 0.9rem; margin: 2px 0; }
.index-error { color: var(--bad); font-size: 0.85rem; margin-top: 2px; }
`;
