/**
 * Showing things in notebooks: tables, markdown, callouts, verification lines.
 * Everything here returns plain MIME bundles, so it renders in Jupyter, in
 * the HTML reports, and as text in a terminal.
 *
 * @module
 */

/** Anything Jupyter can render: an object with a MIME bundle. */
export interface Displayable {
  [key: symbol]: () => Record<string, string>;
}

const DISPLAY = Symbol.for("Jupyter.display");

/** Options for {@link table}. */
export interface TableOptions {
  /** Caption above the table. */
  caption?: string;
  /** Columns to show, in order. @default the keys of the first row */
  columns?: string[];
  /** Rows shown before "… N more rows". @default 50 */
  maxRows?: number;
}

/**
 * Rows as an HTML table string.
 *
 * @example
 * ```ts
 * htmlTable([{ node: "eu_db_1", rows: 1000 }]); // "<table>…"
 * ```
 */
export function htmlTable(
  rows: readonly Record<string, unknown>[],
  options: TableOptions = {},
): string {
  const columns = options.columns ?? Object.keys(rows[0] ?? {});
  const maxRows = options.maxRows ?? 50;
  const shown = rows.slice(0, maxRows);
  const head = columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const body = shown.map((row) =>
    `<tr>${
      columns.map((c) => `<td${isNumeric(row[c]) ? ' class="num"' : ""}>${formatCell(row[c])}</td>`)
        .join("")
    }</tr>`
  ).join("\n");
  const more = rows.length > maxRows
    ? `<tr><td colspan="${columns.length}"><em>… ${rows.length - maxRows} more rows</em></td></tr>`
    : "";
  const caption = options.caption ? `<caption>${escapeHtml(options.caption)}</caption>` : "";
  const empty = rows.length === 0 ? `<tr><td><em>(no rows)</em></td></tr>` : "";
  return `<table class="pgsw">${caption}<thead><tr>${head}</tr></thead><tbody>${body}${more}${empty}</tbody></table>`;
}

/**
 * Rows as a displayable table (HTML in notebooks, aligned text elsewhere).
 *
 * @example
 * ```ts
 * await show(table(await eu1.sql`SELECT * FROM customer LIMIT 5`, { caption: "customer" }));
 * ```
 */
export function table(
  rows: readonly Record<string, unknown>[],
  options: TableOptions = {},
): Displayable {
  return bundle({ "text/html": htmlTable(rows, options), "text/plain": textTable(rows, options) });
}

/** Markdown text as a displayable. */
export function markdown(text: string): Displayable {
  return bundle({ "text/markdown": text, "text/plain": text });
}

/** Raw HTML as a displayable. */
export function html(markup: string, plain = "[html]"): Displayable {
  return bundle({ "text/html": markup, "text/plain": plain });
}

/** Kinds of {@link callout}. */
export type CalloutKind = "presenter" | "note" | "warning" | "ok" | "fail";

const CALLOUT_STYLE: Record<
  CalloutKind,
  { icon: string; color: string; bg: string; title: string }
> = {
  presenter: { icon: "🎤", color: "#7a4a00", bg: "#fff4e0", title: "Presenter" },
  note: { icon: "ℹ️", color: "#164e7a", bg: "#e8f2fb", title: "Note" },
  warning: { icon: "⚠️", color: "#7a1f1f", bg: "#fdecec", title: "Watch out" },
  ok: { icon: "✔", color: "#1d5e2b", bg: "#e9f7ec", title: "" },
  fail: { icon: "✘", color: "#7a1f1f", bg: "#fdecec", title: "" },
};

/**
 * A visible callout box: presenter notes, notes, warnings, check results.
 *
 * @example
 * ```ts
 * await show(callout("presenter", "Draw attention to latencies: they increase from now on"));
 * ```
 */
export function callout(kind: CalloutKind, text: string): Displayable {
  const s = CALLOUT_STYLE[kind];
  const title = s.title ? `<strong>${s.title}:</strong> ` : "";
  return bundle({
    "text/html": `<div class="pgsw-callout pgsw-${kind}" style="border-left:4px solid ${s.color};` +
      `background:${s.bg};color:${s.color};padding:6px 10px;margin:4px 0;border-radius:3px">` +
      `${s.icon} ${title}${escapeHtml(text)}</div>`,
    "text/plain": `${s.icon} ${s.title ? s.title + ": " : ""}${text}`,
  });
}

/**
 * Verifies a fact about the live system and shows it as a green line; throws
 * (failing the notebook) when it does not hold.
 *
 * @param label What is checked, e.g. "rows in customer".
 * @param actual The value measured now.
 * @param expected The value it must equal.
 * @returns A displayable success line.
 * @example
 * ```ts
 * await show(verify("rows in customer after the swap", total, 2000));
 * ```
 */
export function verify<T>(label: string, actual: T, expected: T): Displayable {
  if (!sameValue(actual, expected)) {
    throw new Error(
      `Check failed: ${label}: expected ${formatPlain(expected)}, got ${formatPlain(actual)}`,
    );
  }
  return callout("ok", `${label}: ${formatPlain(actual)}`);
}

/**
 * Like {@link verify}, for a condition with a description of what was seen.
 *
 * @example
 * ```ts
 * await show(verifyThat("every partition holds rows", rows.every((r) => r.rows > 0), "3 of 3"));
 * ```
 */
export function verifyThat(label: string, condition: boolean, seen: string): Displayable {
  if (!condition) throw new Error(`Check failed: ${label} (${seen})`);
  return callout("ok", `${label} (${seen})`);
}

/**
 * Shows each item in the notebook (or prints its text form outside Jupyter).
 * Only a cell's last expression renders by itself; use this for the rest.
 * Items may be promises (charts are async); strings are markdown; arrays of
 * rows are tables.
 *
 * @example
 * ```ts
 * await show("## Year 1", table(rows), distributionPlot(shards));
 * ```
 */
export async function show(...items: unknown[]): Promise<void> {
  const jupyter = jupyterApi();
  for (const pending of items) {
    const display = toDisplayable(await pending);
    if (jupyter) {
      await jupyter.display(display[DISPLAY](), { raw: true });
    } else {
      console.log(display[DISPLAY]()["text/plain"]);
    }
  }
}

/**
 * The MIME bundle an object shows in Jupyter (`{"text/html": …, "text/plain": …}`).
 *
 * @example
 * ```ts
 * mimeBundle(table([{ a: 1 }]))["text/html"]; // "<table …"
 * ```
 */
export function mimeBundle(item: unknown): Record<string, string> {
  return toDisplayable(item)[DISPLAY]();
}

type JupyterApi = { display(obj: unknown, o?: { raw: boolean }): Promise<void> };

/** Deno.jupyter inside the kernel; undefined elsewhere (where reading it throws). */
function jupyterApi(): JupyterApi | undefined {
  try {
    return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
  } catch {
    return undefined;
  }
}

function toDisplayable(item: unknown): Displayable {
  if (item && typeof item === "object" && DISPLAY in item) return item as Displayable;
  if (typeof item === "string") return markdown(item);
  if (Array.isArray(item)) return table(item as Record<string, unknown>[]);
  return bundle({ "text/plain": formatPlain(item) });
}

function bundle(data: Record<string, string>): Displayable {
  return { [DISPLAY]: () => data };
}

/** Escapes text for HTML. */
export function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll(
    '"',
    "&quot;",
  );
}

function formatCell(value: unknown): string {
  if (value === null || value === undefined) return `<span style="color:#999">NULL</span>`;
  return escapeHtml(formatPlain(value));
}

/** A value as short plain text. */
export function formatPlain(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function isNumeric(value: unknown): boolean {
  return typeof value === "number" || typeof value === "bigint";
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function textTable(rows: readonly Record<string, unknown>[], options: TableOptions): string {
  const columns = options.columns ?? Object.keys(rows[0] ?? {});
  const shown = rows.slice(0, options.maxRows ?? 50).map((r) =>
    columns.map((c) => formatPlain(r[c]))
  );
  const widths = columns.map((c, i) => Math.max(c.length, ...shown.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join(" | ");
  const caption = options.caption ? `${options.caption}\n` : "";
  return caption +
    [line(columns), widths.map((w) => "-".repeat(w)).join("-+-"), ...shown.map(line)].join("\n");
}
