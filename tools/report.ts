/**
 * `deno task report [--notebooks-dir DIR] [--out DIR] [--timeout SECONDS] [--no-preflight] [NAME...]`
 *
 * Runs the workshop notebooks top to bottom with the Deno kernel and writes
 * `reports/<name>.html` (self-contained), `reports/<name>.ipynb` (executed),
 * `reports/index.html` and `reports/summary.json`. Names select notebooks
 * by prefix (`01`, `02_sharding`); without names every notebook runs, in
 * name order. Exits non-zero when any notebook failed, printing the cell and
 * its real error.
 *
 * Before executing anything it checks for Jupyter (`JUPYTER_MISSING`),
 * caches every import of every selected notebook (`IMPORT_FAILED`, because a
 * failed import inside the kernel has no error text) and runs
 * `lib/preflight.ts` when the project has one (`--no-preflight` skips it).
 * `--timeout` is per cell, in seconds (default 600).
 *
 * @module
 */

import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ERROR_CODES, type ErrorCode, WorkshopError } from "../lib/errors.ts";
import { findNbclientPython, writeProjectKernelspec } from "./kernelspec.ts";
import { type Notebook, readNotebook, sourceOf } from "./nbtext.ts";
import {
  type IndexEntry,
  notebookIntro,
  notebookTitle,
  renderIndexHtml,
  renderNotebookHtml,
  type RunError,
  type RunSettings,
  stripAnsi,
} from "./render_report.ts";

const PROJECT_DIR = fileURLToPath(new URL("..", import.meta.url)).replace(/[\\/]$/, "");
const RUNNER = fileURLToPath(new URL("./_execute_notebook.py", import.meta.url));

/** Options for {@link runReport}. */
export interface ReportOptions {
  /** Folder holding the `NN_name.ipynb` notebooks. @default "<project>/notebooks" */
  notebooksDir?: string;
  /** Folder the reports go to. @default "<project>/reports" */
  outDir?: string;
  /** Name prefixes selecting notebooks; empty for all. @default [] */
  names?: string[];
  /** Seconds one cell may run. @default 600 */
  cellTimeoutSeconds?: number;
  /** Run `lib/preflight.ts` when it exists. @default true */
  preflight?: boolean;
  /** Where progress lines go. @default stdout */
  log?: (text: string) => void;
}

/** The outcome of one notebook, as `summary.json` lists it. */
export interface NotebookResult {
  notebook: string;
  status: "ok" | "failed";
  seconds: number;
  /** Index of the failing cell among all cells, or null. */
  failedCell: number | null;
  error: RunError | null;
}

/** The content of `summary.json`. */
export interface ReportSummary {
  date: string;
  totalSeconds: number;
  settings: RunSettings;
  notebooks: NotebookResult[];
}

/** An import found in a notebook's code cells. */
export interface NotebookImport {
  /** The specifier as written. */
  specifier: string;
  /** Relative specifiers resolved to a `file:` URL against the notebook's folder. */
  resolved: string;
}

/**
 * Runs the selected notebooks and writes the reports.
 *
 * @param options Folders, selection and timeouts.
 * @returns The summary, also written to `summary.json`.
 * @throws {WorkshopError} `JUPYTER_MISSING`, `IMPORT_FAILED`, or a preflight failure,
 *   before any notebook runs. Failed notebooks do not throw; see the summary.
 *
 * @example
 * ```ts
 * const summary = await runReport({ names: ["01"] });
 * console.log(summary.notebooks[0].status);
 * ```
 */
export async function runReport(options: ReportOptions = {}): Promise<ReportSummary> {
  const notebooksDir = options.notebooksDir ?? `${PROJECT_DIR}/notebooks`;
  const outDir = options.outDir ?? `${PROJECT_DIR}/reports`;
  const log = options.log ??
    ((text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text)));
  const paths = await selectNotebooks(notebooksDir, options.names ?? []);

  const python = await findNbclientPython();
  await prefetchImports(paths);
  if (options.preflight ?? true) await runPreflight();

  const kernel = await writeProjectKernelspec(PROJECT_DIR);
  // Kernel connection files go to a throwaway runtime dir, not ~/.local/share/jupyter.
  const runtimeDir = await Deno.makeTempDir({ prefix: "report-jupyter-runtime-" });
  const run: RunContext = {
    python,
    outDir,
    env: { ...kernel.env, JUPYTER_RUNTIME_DIR: runtimeDir },
    timeoutSeconds: options.cellTimeoutSeconds ?? 600,
    date: new Date().toISOString(),
    settings: runSettings(),
  };
  const started = performance.now();
  await Deno.mkdir(outDir, { recursive: true });
  const results: NotebookResult[] = [];
  const entries: IndexEntry[] = [];
  try {
    for (const path of paths) {
      log(`${baseName(path)} ... `);
      const { result, entry } = await reportNotebook(path, run);
      log(`${result.status === "ok" ? "ok" : "FAILED"} ${result.seconds.toFixed(1)} s\n`);
      results.push(result);
      entries.push(entry);
    }
  } finally {
    await Deno.remove(runtimeDir, { recursive: true });
  }

  const { date, settings } = run;
  const totalSeconds = round((performance.now() - started) / 1000);
  const summary: ReportSummary = { date, totalSeconds, settings, notebooks: results };
  const index = renderIndexHtml(entries, { date, settings, totalSeconds });
  await Deno.writeTextFile(`${outDir}/index.html`, index);
  await Deno.writeTextFile(`${outDir}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
  return summary;
}

interface RunContext {
  python: string;
  outDir: string;
  env: Record<string, string>;
  timeoutSeconds: number;
  date: string;
  settings: RunSettings;
}

/** Executes one notebook and writes its `.ipynb` and `.html`; a failing notebook does not throw. */
async function reportNotebook(
  path: string,
  run: RunContext,
): Promise<{ result: NotebookResult; entry: IndexEntry }> {
  const name = baseName(path);
  const executedPath = `${run.outDir}/${name}.ipynb`;
  const outcome = await executeNotebook(run.python, path, executedPath, run);
  const notebook = await readExecuted(executedPath, path);
  const meta = { name, date: run.date, settings: run.settings, ...outcome };
  await Deno.writeTextFile(`${run.outDir}/${name}.html`, renderNotebookHtml(notebook, meta));
  return {
    result: { notebook: name, ...outcome },
    entry: {
      ...outcome,
      name,
      title: notebookTitle(notebook),
      ...notebookIntro(notebook),
      href: `${name}.html`,
      ipynbHref: `${name}.ipynb`,
    },
  };
}

/**
 * Finds the imports of a notebook's code cells: static `import ... from "x"`,
 * `import "x"`, `export ... from "x"` and `import("x")` with a string literal.
 * Comments are ignored.
 *
 * @param notebook The notebook.
 * @param notebookDir Its folder, to resolve relative specifiers.
 * @returns Each import once, in order of appearance.
 *
 * @example
 * ```ts
 * findImports(notebook, "/work/main/notebooks");
 * // [{ specifier: "../lib/mod.ts", resolved: "file:///work/main/lib/mod.ts" }]
 * ```
 */
export function findImports(notebook: Notebook, notebookDir: string): NotebookImport[] {
  const base = pathToFileURL(notebookDir.replace(/\/?$/, "/"));
  const seen = new Map<string, NotebookImport>();
  const pattern =
    /\b(?:import|export)\s*(?:type\s+)?(?:[\w$*{}\s,]+?\s*from\s*)?(["'])([^"'\n]+)\1|\bimport\s*\(\s*(["'])([^"'\n]+)\3\s*[,)]/g;
  for (const cell of notebook.cells) {
    if (cell.cell_type !== "code") continue;
    for (const match of withoutComments(sourceOf(cell)).matchAll(pattern)) {
      const specifier = match[2] ?? match[4];
      if (seen.has(specifier) || specifier.startsWith("node:")) continue;
      const relative = /^\.{1,2}\//.test(specifier) || specifier.startsWith("/");
      seen.set(specifier, {
        specifier,
        resolved: relative ? new URL(specifier, base).href : specifier,
      });
    }
  }
  return [...seen.values()];
}

/**
 * Caches every import of every notebook with `deno cache` (using the
 * project's `deno.json`), so a missing package fails here with deno's real
 * error instead of silently inside the kernel.
 *
 * @param paths The notebook files.
 * @throws {WorkshopError} `IMPORT_FAILED` naming the notebook, the specifier and deno's error.
 *
 * @example
 * ```ts
 * await prefetchImports(["notebooks/01_horizontal_scaling.ipynb"]);
 * ```
 */
export async function prefetchImports(paths: string[]): Promise<void> {
  const imports: { notebook: string; entry: NotebookImport }[] = [];
  for (const path of paths) {
    const notebook = await readNotebook(path);
    for (const entry of findImports(notebook, dirName(path))) {
      imports.push({ notebook: path, entry });
    }
  }
  if (imports.length === 0) return;
  const unique = [...new Map(imports.map((item) => [item.entry.resolved, item.entry])).values()];
  const all = await denoCache(unique);
  if (all.ok) return;
  for (const item of imports) {
    const one = await denoCache([item.entry]);
    if (!one.ok) {
      throw new WorkshopError(
        "IMPORT_FAILED",
        `Notebook ${
          baseName(item.notebook)
        } imports "${item.entry.specifier}", which cannot be loaded`,
        { fix: importFix(item.entry.specifier), details: one.output },
      );
    }
  }
  throw new WorkshopError("IMPORT_FAILED", "The notebooks' imports cannot be loaded together", {
    fix: "Read deno's error below and fix the import it names",
    details: all.output,
  });
}

async function denoCache(imports: NotebookImport[]): Promise<{ ok: boolean; output: string }> {
  const dir = await Deno.makeTempDir({ prefix: "report-prefetch-" });
  try {
    const module = `${dir}/imports.ts`;
    await Deno.writeTextFile(
      module,
      imports.map(({ resolved }) =>
        `import ${JSON.stringify(resolved)}${
          resolved.endsWith(".json") ? ' with { type: "json" }' : ""
        };\n`
      ).join(""),
    );
    const config = findConfig(PROJECT_DIR);
    const args = ["cache", ...(config ? ["--config", config] : []), module];
    const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: PROJECT_DIR,
      env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stderr) + new TextDecoder().decode(stdout);
    const output = cleanDenoOutput(text, pathToFileURL(module).href);
    return { ok: success, output };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Deno's error without colours, download lines, backtrace or our temporary module's location. */
function cleanDenoOutput(text: string, moduleUrl: string): string {
  return stripAnsi(text)
    .replace(/\n*Stack backtrace:[\s\S]*$/, "")
    .split("\n")
    .filter((line) => !line.includes(moduleUrl))
    .filter((line) => !/^Download /.test(line))
    .join("\n")
    .trim();
}

function importFix(specifier: string): string {
  if (specifier.startsWith("jsr:")) {
    return "JSR is not reachable from this network; use an npm: specifier or a node: built-in";
  }
  if (specifier.startsWith("npm:")) {
    return "Check the package name and version on npm, or add it to the import map in deno.json";
  }
  if (/^\.{1,2}\//.test(specifier)) {
    return "Check that the file exists and that its own imports load";
  }
  return "Add the specifier to the import map in deno.json, or use an npm: specifier";
}

/**
 * Runs `lib/preflight.ts` when the project has one that exports `preflight()`.
 *
 * @throws {WorkshopError} When it exits non-zero; carries its output and the code it printed.
 */
async function runPreflight(): Promise<void> {
  const path = `${PROJECT_DIR}/lib/preflight.ts`;
  let source: string;
  try {
    source = await Deno.readTextFile(path);
  } catch {
    return; // no preflight in this project
  }
  if (!/export\s+(async\s+)?function\s+preflight\b|export\s*\{[^}]*\bpreflight\b/.test(source)) {
    return;
  }
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path],
    cwd: PROJECT_DIR,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code === 0) return;
  const output = stripAnsi(new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr))
    .trim();
  const printed = /\[([A-Z_]+)\]/.exec(output)?.[1];
  const errorCode: ErrorCode = printed && printed in ERROR_CODES
    ? printed as ErrorCode
    : "PREFLIGHT_FAILED";
  throw new WorkshopError(
    errorCode,
    `Preflight check failed: lib/preflight.ts exited with ${code}`,
    {
      fix: "Do what the preflight output below says, then run the report again",
      details: output,
    },
  );
}

/** Runs one notebook through `_execute_notebook.py`; never throws for a failing notebook. */
async function executeNotebook(
  python: string,
  path: string,
  outputPath: string,
  options: Pick<RunContext, "env" | "timeoutSeconds">,
): Promise<Omit<NotebookResult, "notebook">> {
  const started = performance.now();
  const { stdout, stderr } = await new Deno.Command(python, {
    args: [
      RUNNER,
      path,
      outputPath,
      "--timeout",
      String(options.timeoutSeconds),
      "--kernel",
      "deno",
    ],
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(stdout).trim().split("\n");
  const last = lines.findLast((line) => line.startsWith("{") && line.includes('"ok"'));
  if (!last) {
    const errorText = cleanRunnerStderr(new TextDecoder().decode(stderr));
    return {
      status: "failed",
      seconds: round((performance.now() - started) / 1000),
      failedCell: null,
      error: {
        ename: "RunnerError",
        evalue: "The notebook runner printed no result",
        traceback: [errorText],
      },
    };
  }
  const result = JSON.parse(last) as {
    ok: boolean;
    seconds: number;
    failedCell: number | null;
    error: RunError;
  };
  if (result.ok) {
    return { status: "ok", seconds: round(result.seconds), failedCell: null, error: null };
  }
  const error = { ...result.error };
  const kernelStderr = cleanRunnerStderr(new TextDecoder().decode(stderr));
  if (error.traceback.length === 0 && kernelStderr) {
    error.traceback = ["The kernel's stderr:", ...kernelStderr.split("\n")];
  }
  return { status: "failed", seconds: round(result.seconds), failedCell: result.failedCell, error };
}

/** The runner's and kernel's stderr without the kernel's "unstable" banner. */
function cleanRunnerStderr(text: string): string {
  return stripAnsi(text)
    .split("\n")
    .filter((line) => !line.includes('"deno jupyter" is unstable'))
    .join("\n")
    .trim();
}

async function readExecuted(executedPath: string, sourcePath: string): Promise<Notebook> {
  try {
    return await readNotebook(executedPath);
  } catch {
    return await readNotebook(sourcePath); // the runner died before writing it
  }
}

/**
 * The notebooks in `dir`, in name order, optionally only those whose name
 * starts with one of `names`.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when a name matches no notebook.
 */
async function selectNotebooks(dir: string, names: string[]): Promise<string[]> {
  const all: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.endsWith(".ipynb")) all.push(entry.name);
    }
  } catch (error) {
    throw new WorkshopError("INVALID_SETTING", `Cannot read the notebooks folder ${dir}`, {
      fix: "Pass an existing folder with --notebooks-dir",
      cause: error,
    });
  }
  all.sort();
  if (names.length === 0) return all.map((name) => `${dir}/${name}`);
  const selected: string[] = [];
  for (const wanted of names) {
    const prefix = baseName(wanted);
    const matches = all.filter((name) => name.startsWith(prefix));
    if (matches.length === 0) {
      throw new WorkshopError("INVALID_SETTING", `No notebook in ${dir} starts with "${prefix}"`, {
        fix: `Use one of: ${all.map(baseName).join(", ") || "(the folder has no notebooks)"}`,
      });
    }
    selected.push(...matches);
  }
  return [...new Set(selected)].sort().map((name) => `${dir}/${name}`);
}

function runSettings(): RunSettings {
  return {
    provider: Deno.env.get("WORKSHOP_PROVIDER")?.trim() || "embedded",
    latencyScale: Deno.env.get("LATENCY_SCALE")?.trim() || "1",
  };
}

function findConfig(dir: string): string | undefined {
  for (const name of ["deno.json", "deno.jsonc"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** Removes comments, keeping strings (which may hold `//`, as in URLs). */
function withoutComments(source: string): string {
  return source.replace(
    /("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\[\s\S])*`)|\/\/[^\n]*|\/\*[\s\S]*?\*\//g,
    (_match, string) => string ?? " ",
  );
}

/** What {@link notebookFailure} needs besides the result. */
export interface FailureContext {
  /** The executed notebook, for the failing cell's source. */
  notebook: Notebook;
  /** Where the notebook's HTML report is, named in the fix. */
  reportPath: string;
}

/**
 * A readable account of a failed notebook: where, the cell's first lines
 * and the real error.
 *
 * @param result The failed notebook's result.
 * @param context The executed notebook and its report's path.
 * @returns A {@link WorkshopError} with code `NOTEBOOK_FAILED`.
 *
 * @example
 * ```ts
 * console.error(notebookFailure(result, { notebook, reportPath: "reports/02_x.html" }).message);
 * ```
 */
export function notebookFailure(result: NotebookResult, context: FailureContext): WorkshopError {
  const { notebook, reportPath } = context;
  const index = result.failedCell;
  const cell = index === null ? undefined : notebook.cells[index];
  const where = index === null
    ? "before its first cell ran"
    : `at cell ${index + 1} of ${notebook.cells.length}`;
  const source = cell ? sourceOf(cell).split("\n") : [];
  const shown = source.slice(0, 5).map((line) => `> ${line}`);
  if (source.length > 5) shown.push(`> ... (${source.length - 5} more lines)`);
  return new WorkshopError("NOTEBOOK_FAILED", `Notebook ${result.notebook} failed ${where}`, {
    fix: `See the failing cell in ${reportPath}, fix it, and run the report again`,
    details: [...shown, ...(shown.length ? [""] : []), errorText(result.error)].join("\n"),
  });
}

/** The error as the kernel gave it: the traceback, headed by the message when it lacks it. */
function errorText(error: RunError | null): string {
  if (!error) return "(no error text)";
  const message = stripAnsi(`${error.ename}: ${error.evalue}`);
  const traceback = error.traceback.map(stripAnsi).join("\n").trim();
  if (!traceback) return message;
  return traceback.includes(message.split("\n")[0]) ? traceback : `${message}\n${traceback}`;
}

function baseName(path: string): string {
  return path.split("/").pop()!.replace(/\.ipynb$/, "");
}

function dirName(path: string): string {
  const index = path.lastIndexOf("/");
  return index < 0 ? Deno.cwd() : index === 0 ? "/" : path.slice(0, index);
}

function round(seconds: number): number {
  return Math.round(seconds * 10) / 10;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      "notebooks-dir": { type: "string" },
      out: { type: "string" },
      timeout: { type: "string" },
      "no-preflight": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno task report [--notebooks-dir DIR] [--out DIR] [--timeout SECONDS] [--no-preflight] [NAME...]",
    );
    return 0;
  }
  const notebooksDir = absolute(values["notebooks-dir"] ?? `${PROJECT_DIR}/notebooks`);
  const outDir = absolute(values.out ?? `${PROJECT_DIR}/reports`);
  const timeout = values.timeout === undefined ? 600 : Number(values.timeout);
  if (!(timeout > 0)) {
    throw new WorkshopError("INVALID_SETTING", `Cannot use --timeout ${values.timeout}`, {
      fix: "Give the seconds one cell may run as a positive number, e.g. --timeout 600",
    });
  }
  const summary = await runReport({
    notebooksDir,
    outDir,
    names: positionals,
    cellTimeoutSeconds: timeout,
    preflight: !values["no-preflight"],
  });
  const failed = summary.notebooks.filter((result) => result.status === "failed");
  const count = summary.notebooks.length;
  const total = `${count} notebook${count === 1 ? "" : "s"}, ${summary.totalSeconds.toFixed(1)} s`;
  console.log(`\nReports in ${outDir}/index.html (${total})`);
  if (failed.length === 0) return 0;
  for (const result of failed) {
    const notebook = await readExecuted(
      `${outDir}/${result.notebook}.ipynb`,
      `${notebooksDir}/${result.notebook}.ipynb`,
    );
    const reportPath = relativeToCwd(`${outDir}/${result.notebook}.html`);
    console.error(`\n${notebookFailure(result, { notebook, reportPath }).message}`);
  }
  console.error(`\n${failed.length} of ${summary.notebooks.length} notebooks failed`);
  return 1;
}

function relativeToCwd(path: string): string {
  const cwd = `${Deno.cwd()}/`;
  return path.startsWith(cwd) ? path.slice(cwd.length) : path;
}

function absolute(path: string): string {
  return path.startsWith("/")
    ? path.replace(/\/$/, "")
    : `${Deno.cwd()}/${path}`.replace(/\/$/, "");
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
