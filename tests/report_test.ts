/**
 * Tests of the report pipeline: HTML rendering of an executed notebook, the
 * text format round trip, and real runs of tiny fixture notebooks (no
 * database) through the Python runner with the Deno kernel.
 *
 * `tests/fixtures/report/executed.ipynb` is a real run of
 * `executed_source.ts.txt` (converted with `deno task nb to-ipynb`), made
 * without NO_COLOR so its outputs carry ANSI codes.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  findNbclientPython,
  KERNEL_DISPLAY_NAME,
  writeProjectKernelspec,
} from "../tools/kernelspec.ts";
import {
  cleanNotebook,
  formatNotebook,
  type Notebook,
  notebookToText,
  readNotebook,
  textToNotebook,
} from "../tools/nbtext.ts";
import {
  notebookIntro,
  renderIndexHtml,
  renderNotebookHtml,
  type ReportMeta,
  stripAnsi,
} from "../tools/render_report.ts";
import { findImports, type ReportSummary } from "../tools/report.ts";

const FIXTURES = fileURLToPath(new URL("./fixtures/report/", import.meta.url));
const TOOLS = fileURLToPath(new URL("../tools/", import.meta.url));
const SETTINGS = { provider: "embedded", latencyScale: "0.1" };

const executedMeta: ReportMeta = {
  name: "executed",
  status: "failed",
  seconds: 2.06,
  date: "2026-01-02T03:04:05Z",
  settings: SETTINGS,
  failedCell: 13,
  error: {
    ename: "Error",
    evalue: 'Node "eu_db_9" not ready after 30000 ms (port 55433)',
    traceback: [],
  },
};

async function renderedFixture(): Promise<string> {
  return renderNotebookHtml(await readNotebook(`${FIXTURES}executed.ipynb`), executedMeta);
}

Deno.test("renderNotebookHtml() takes the title from the first markdown H1", async () => {
  const html = await renderedFixture();
  assert.match(html, /<title>Fixture: rendering a report<\/title>/);
  assert.match(html, /<h1>Fixture: rendering a report<\/h1>/);
  assert.equal(html.match(/<h1[ >]/g)?.length, 1, "the H1 is shown once, in the header");
});

Deno.test("renderNotebookHtml() shows status, run time, date, provider and latency scale", async () => {
  const html = await renderedFixture();
  assert.match(html, /class="badge failed"/);
  assert.match(html, /2\.1 s/);
  assert.match(html, /2026-01-02 03:04 UTC/);
  assert.match(html, /provider <b>embedded<\/b>/);
  assert.match(html, /latency scale <b>0\.1<\/b>/);
});

Deno.test("renderNotebookHtml() links every H2 and H3 from the table of contents", async () => {
  const html = await renderedFixture();
  const toc = html.match(/<nav class="toc">[\s\S]*?<\/nav>/)?.[0] ?? "";
  const targets = [...toc.matchAll(/href="#([^"]+)"/g)].map((match) => match[1]);
  assert.deepEqual(targets, [
    "tables",
    "rows-per-node",
    "plots",
    "latency-by-region-html-output",
    "the-same-plot-as-image-svg-xml",
    "other-outputs",
    "a-failing-step",
  ]);
  for (const id of targets) assert.match(html, new RegExp(`<h[23] id="${id}">`));
});

Deno.test("renderNotebookHtml() keeps SVG plots inline", async () => {
  const html = await renderedFixture();
  const plots = html.match(/<svg class="plot-[^"]*"/g) ?? [];
  assert.equal(plots.length, 2, "one plot from text/html, one from image/svg+xml");
  assert.match(html, /latency \(ms\)/);
});

Deno.test("renderNotebookHtml() keeps HTML tables and renders other outputs", async () => {
  const html = await renderedFixture();
  assert.match(html, /<td>eu_db_1<\/td><td>eu<\/td><td>334<\/td>/);
  assert.match(html, /<strong>bold<\/strong> text/, "text/markdown is rendered");
  assert.match(
    html,
    /&quot;lsn&quot;: &quot;0\/3000148&quot;/,
    "application/json is pretty-printed",
  );
  assert.match(html, /<img alt="" src="data:image\/png;base64,iVBOR/);
  assert.match(html, /<pre class="output stderr">warning: latency scale 0.1/);
});

Deno.test("renderNotebookHtml() shows errors in a red box without ANSI codes", async () => {
  const html = await renderedFixture();
  const box = html.match(/<div class="output error">[\s\S]*?<\/div>\n<\/div>/)?.[0] ?? "";
  assert.match(box, /Error: Node &quot;eu_db_9&quot; not ready after 30000 ms/);
  assert.match(box, /FATAL: the database system is starting up/);
  assert.ok(!html.includes("\x1b") && !/\[3\dm/.test(html), "no ANSI codes left");
  assert.match(html, /class="cell code failed"/);
  assert.match(html, /class="cell code not-run"/);
});

Deno.test("renderNotebookHtml() renders presenter notes as callouts and other blockquotes as quotations", async () => {
  const html = await renderedFixture();
  assert.equal(html.match(/<aside class="presenter-note">/g)?.length, 2);
  assert.match(html, /<div class="note-label">Presenter note<\/div>\n<p>Mention that/);
  const notebook: Notebook = {
    cells: [{
      cell_type: "markdown",
      metadata: {},
      source: "# t\n\n> WAL's central concept is that changes are logged first.",
    }],
    metadata: {},
    nbformat: 4,
    nbformat_minor: 5,
  };
  const quote = renderNotebookHtml(notebook, executedMeta);
  assert.match(
    quote,
    /<blockquote>\n<p>WAL&#39;s central concept|<blockquote>\n<p>WAL's central concept/,
  );
  assert.doesNotMatch(quote, /<aside class="presenter-note">/);
});

Deno.test("renderNotebookHtml() keeps underscores inside words in titles and the contents", () => {
  const notebook: Notebook = {
    cells: [{
      cell_type: "markdown",
      metadata: {},
      source: "# Scaling with postgres_fdw\n\n## The _emphasised_ eu_db_1 step",
    }],
    metadata: {},
    nbformat: 4,
    nbformat_minor: 5,
  };
  const html = renderNotebookHtml(notebook, executedMeta);
  assert.match(html, /<title>Scaling with postgres_fdw<\/title>/);
  assert.match(html, /The emphasised eu_db_1 step<\/a><\/li>/);
});

Deno.test("renderNotebookHtml() needs no external resources or scripts", async () => {
  const html = await renderedFixture();
  assert.doesNotMatch(html, /<script|<link|src="https?:|url\(https?:/i);
});

Deno.test("renderNotebookHtml() shows the run error of a failed cell that has no error output", () => {
  const notebook: Notebook = {
    cells: [{
      cell_type: "code",
      source: 'import x from "npm:nope@1";',
      metadata: {},
      outputs: [],
    }],
    metadata: {},
    nbformat: 4,
    nbformat_minor: 5,
  };
  const error = {
    ename: "Error",
    evalue: "The kernel replied with an empty traceback",
    traceback: [],
  };
  const html = renderNotebookHtml(notebook, { ...executedMeta, failedCell: 0, error });
  assert.match(html, /<div class="error-title">Error: The kernel replied with an empty traceback/);
});

Deno.test("renderIndexHtml() lists notebooks in order with status, run time and total", () => {
  const html = renderIndexHtml([
    {
      name: "01_a",
      title: "First",
      status: "ok",
      seconds: 1.5,
      href: "01_a.html",
      ipynbHref: "01_a.ipynb",
    },
    {
      name: "02_b",
      status: "failed",
      seconds: 2,
      failedCell: 3,
      href: "02_b.html",
      error: executedMeta.error,
    },
  ], { date: "2026-01-02T03:04:05Z", settings: SETTINGS });
  assert.ok(html.indexOf("01_a.html") < html.indexOf("02_b.html"));
  assert.match(html, /<a href="01_a.html">First<\/a>/);
  assert.match(html, /cell 4: Error: Node &quot;eu_db_9&quot;/);
  assert.match(html, /1 of 2 notebooks failed/);
  assert.match(html, /<td class="num">3\.5 s<\/td>/);
});

Deno.test("stripAnsi() removes colour and link sequences", () => {
  assert.equal(
    stripAnsi("\x1b[1;31mError\x1b[0m: \x1b]8;;http://x\x07link\x1b]8;;\x07"),
    "Error: link",
  );
});

Deno.test("notebookToText() and textToNotebook() round-trip the text fixture exactly", async () => {
  const text = await Deno.readTextFile(`${FIXTURES}roundtrip.ts.txt`);
  const notebook = textToNotebook(text);
  assert.equal(notebookToText(notebook), text);
  assert.equal(
    notebookToText(JSON.parse(formatNotebook(notebook))),
    text,
    "through the .ipynb file",
  );
});

Deno.test("textToNotebook() and notebookToText() round-trip a Jupyter-saved notebook exactly", async () => {
  const saved = await Deno.readTextFile(`${FIXTURES}jupyter_saved.ipynb`);
  assert.equal(
    formatNotebook(JSON.parse(saved)),
    saved,
    "formatNotebook() writes what Jupyter writes",
  );
  assert.equal(formatNotebook(textToNotebook(notebookToText(JSON.parse(saved)))), saved);
});

Deno.test("textToNotebook() writes clean nbformat 4.5 notebooks with ids and the deno kernelspec", () => {
  const notebook = textToNotebook("// %% [markdown]\n// # T\n\n// %%\n1 + 1\n\n// %%\n1 + 1\n");
  assert.equal(notebook.nbformat_minor, 5);
  assert.deepEqual(notebook.metadata.kernelspec, {
    display_name: KERNEL_DISPLAY_NAME,
    language: "typescript",
    name: "deno",
  });
  const [, first, second] = notebook.cells;
  assert.deepEqual([first.outputs, first.execution_count], [[], null]);
  assert.match(first.id!, /^[0-9a-f]{8}$/);
  assert.equal(second.id, `${first.id}-2`, "identical cells get distinct ids");
});

Deno.test("textToNotebook() names the line of a markdown cell that lacks its // prefix", () => {
  assert.throws(
    () => textToNotebook("// %% [markdown]\n// # T\nplain line\n", "x.ts.txt"),
    /Cannot read x\.ts\.txt: line 3 is in a markdown cell but does not start with "\/\/ "/,
  );
});

Deno.test("cleanNotebook() strips outputs, counts and run metadata", async () => {
  const clean = cleanNotebook(await readNotebook(`${FIXTURES}executed.ipynb`));
  for (const cell of clean.cells.filter((cell) => cell.cell_type === "code")) {
    assert.deepEqual([cell.outputs, cell.execution_count, cell.metadata], [[], null, {}]);
  }
  assert.equal((clean.metadata.language_info as Record<string, unknown>).version, undefined);
  assert.equal(notebookToText(clean), await Deno.readTextFile(`${FIXTURES}executed_source.ts.txt`));
});

Deno.test("findImports() finds static, side-effect and dynamic imports but not comments", () => {
  const source = [
    'import * as Plot from "@observablehq/plot";',
    'import {\n  startCluster,\n  type Cluster,\n} from "../lib/mod.ts";',
    'import "npm:side-effect@1";',
    'export { x } from "./x.ts";',
    'const m = await import("npm:dynamic@2");',
    '// import "npm:commented-out@1";',
    'import fs from "node:fs";',
    'const url = "https://example.com/a"; // not an import',
  ].join("\n");
  const notebook: Notebook = {
    cells: [{ cell_type: "code", source, metadata: {} }, {
      cell_type: "markdown",
      source: 'import "npm:in-markdown@1";',
      metadata: {},
    }],
    metadata: {},
    nbformat: 4,
    nbformat_minor: 5,
  };
  assert.deepEqual(findImports(notebook, "/work/nb/notebooks"), [
    { specifier: "@observablehq/plot", resolved: "@observablehq/plot" },
    { specifier: "../lib/mod.ts", resolved: "file:///work/nb/lib/mod.ts" },
    { specifier: "npm:side-effect@1", resolved: "npm:side-effect@1" },
    { specifier: "./x.ts", resolved: "file:///work/nb/notebooks/x.ts" },
    { specifier: "npm:dynamic@2", resolved: "npm:dynamic@2" },
  ]);
});

Deno.test("writeProjectKernelspec() writes kernel.json under the project and prepends JUPYTER_PATH", async () => {
  const project = await Deno.makeTempDir({ prefix: "report-test-project-" });
  try {
    const kernel = await writeProjectKernelspec(project, {
      JUPYTER_PATH: "/elsewhere",
      HOME: "/h",
    });
    assert.equal(kernel.specPath, `${project}/.jupyter/kernels/deno/kernel.json`);
    const spec = JSON.parse(await Deno.readTextFile(kernel.specPath));
    assert.deepEqual(spec.argv, [
      Deno.execPath(),
      "jupyter",
      "--kernel",
      "--conn",
      "{connection_file}",
    ]);
    assert.equal(spec.language, "typescript");
    assert.deepEqual(kernel.env, {
      JUPYTER_PATH: `${project}/.jupyter:/elsewhere`,
      HOME: "/h",
      NO_COLOR: "1",
    });
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});

interface RunnerResult {
  ok: boolean;
  failedCell: number | null;
  error: { ename: string; evalue: string; traceback: string[] } | null;
}

/** Runs `_execute_notebook.py` on a fixture with a throwaway kernelspec; returns its JSON and notebook. */
async function runRunner(fixture: string): Promise<{ result: RunnerResult; executed: Notebook }> {
  const dir = await Deno.makeTempDir({ prefix: "report-test-runner-" });
  try {
    const python = await findNbclientPython();
    const kernel = await writeProjectKernelspec(dir);
    const output = `${dir}/executed.ipynb`;
    const { stdout } = await new Deno.Command(python, {
      args: [`${TOOLS}_execute_notebook.py`, `${FIXTURES}${fixture}`, output, "--timeout", "60"],
      env: { ...kernel.env, JUPYTER_RUNTIME_DIR: `${dir}/runtime` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const lines = new TextDecoder().decode(stdout).trim().split("\n");
    return { result: JSON.parse(lines.at(-1)!), executed: await readNotebook(output) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("_execute_notebook.py reports a throwing cell with its real error and index", async () => {
  const { result, executed } = await runRunner("run/02_throws.ipynb");
  assert.equal(result.ok, false);
  assert.equal(result.failedCell, 2);
  assert.equal(result.error?.evalue, "Fixture failure: expected 4 rows, found 3");
  assert.deepEqual(
    executed.cells[1].outputs?.[0].text,
    ["rows 3\n"],
    "the partial notebook is saved",
  );
  assert.equal(executed.cells[2].outputs?.[0].output_type, "error");
  assert.deepEqual(executed.cells[3].outputs, [], "cells after the failure do not run");
});

Deno.test("_execute_notebook.py counts a failed npm import without error output as a failure", async () => {
  const { result } = await runRunner("bad_import/01_bad_import.ipynb");
  assert.equal(result.ok, false);
  assert.equal(result.failedCell, 1);
  assert.deepEqual(result.error?.traceback, []);
  assert.match(result.error!.evalue, /empty traceback and no error output/);
});

async function runReportCli(notebooksDir: string, outDir: string) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${TOOLS}report.ts`,
      "--notebooks-dir",
      notebooksDir,
      "--out",
      outDir,
      "--no-preflight",
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code,
    stdout: new TextDecoder().decode(stdout),
    stderr: new TextDecoder().decode(stderr),
  };
}

Deno.test("report.ts runs notebooks, writes reports and exits 1 naming the failed cell", async () => {
  const out = await Deno.makeTempDir({ prefix: "report-test-out-" });
  try {
    const { code, stdout, stderr } = await runReportCli(`${FIXTURES}run`, out);
    assert.equal(code, 1, stderr);
    assert.match(stdout, /01_passes \.\.\. ok \d+\.\d s\n02_throws \.\.\. FAILED \d+\.\d s/);
    assert.match(stderr, /Notebook 02_throws failed at cell 3 of 4 \[NOTEBOOK_FAILED\]/);
    assert.match(stderr, /> throw new Error\(`Fixture failure/);
    assert.match(stderr, /Error: Fixture failure: expected 4 rows, found 3/);

    const summary: ReportSummary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
    assert.deepEqual(summary.notebooks.map((n) => [n.notebook, n.status, n.failedCell]), [
      ["01_passes", "ok", null],
      ["02_throws", "failed", 2],
    ]);
    assert.deepEqual(Object.keys(summary.settings), ["provider", "latencyScale"]);

    const passed = await Deno.readTextFile(`${out}/01_passes.html`);
    assert.match(
      passed,
      /<strong>fixture ok<\/strong>/,
      "import map and relative imports resolved",
    );
    assert.match(passed, /cwd ends with report\/run/, "the kernel runs in the notebook's folder");
    const failed = await Deno.readTextFile(`${out}/02_throws.html`);
    assert.match(failed, /class="cell code failed"[\s\S]*Fixture failure: expected 4 rows/);
    const index = await Deno.readTextFile(`${out}/index.html`);
    assert.match(index, /href="01_passes.html"[\s\S]*href="02_throws.html"/);
    const executed = await readNotebook(`${out}/02_throws.ipynb`);
    assert.equal(executed.cells[2].outputs?.[0].output_type, "error");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("report.ts fails at prefetch with IMPORT_FAILED naming the missing npm package", async () => {
  const out = await Deno.makeTempDir({ prefix: "report-test-out-" });
  try {
    const { code, stdout, stderr } = await runReportCli(`${FIXTURES}bad_import`, `${out}/reports`);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /Notebook 01_bad_import imports "npm:this-package-does-not-exist-pgsw@1\.0\.0", which cannot be loaded \[IMPORT_FAILED\]/,
    );
    assert.match(stderr, /npm package 'this-package-does-not-exist-pgsw' does not exist/);
    assert.doesNotMatch(stdout, /01_bad_import \.\.\./, "nothing was executed");
    await assert.rejects(Deno.stat(`${out}/reports`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("lab.ts --check starts Jupyter, sees the deno kernel and stops", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${TOOLS}lab.ts`, "--check"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(
    text,
    new RegExp(`lists kernel "deno" \\(${KERNEL_DISPLAY_NAME.replace(/[()]/g, "\\$&")}\\)`),
  );
});

Deno.test("notebookIntro() finds the goal's first sentence and the teaching time", () => {
  const notebook: Notebook = {
    cells: [{
      cell_type: "markdown",
      metadata: {},
      source:
        "# 01 · X\n\n**Goal.** Start with one node. Then scale it.\n\n**Time:** about 25 minutes with discussion.",
    }],
    metadata: {},
    nbformat: 4,
    nbformat_minor: 5,
  };
  assert.deepEqual(notebookIntro(notebook), {
    goal: "Start with one node.",
    teachingTime: "about 25 minutes with discussion",
  });
  const index = renderIndexHtml([{
    name: "01_x",
    status: "ok",
    seconds: 3,
    href: "01_x.html",
    ...notebookIntro(notebook),
  }]);
  assert.match(index, /Start with one node\./);
  assert.match(index, /about 25 minutes with discussion/);
});
