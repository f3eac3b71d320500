/**
 * Executes every notebook through the report pipeline (the Deno Jupyter
 * kernel via nbclient), as `deno task report` does, and fails on any cell
 * error. Checks that each run leaves no node behind, then opens the report
 * in headless Chromium as a reader would: every chart drawn with a non-zero
 * size, no console errors, and a full-page screenshot saved to
 * `reports/screenshots/<notebook>.png` for review.
 *
 * Notebooks run with LATENCY_SCALE=0.1 unless LATENCY_SCALE_NOTEBOOKS says
 * otherwise. Without Chromium the browser step is skipped with the reason,
 * unless PGSW_REQUIRE_BROWSER=1 (CI), which makes it fail instead.
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { runDirectories, waitFor } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const SCREENSHOTS = `${ROOT}/reports/screenshots`;
const notebooks = [...Deno.readDirSync(`${ROOT}/notebooks`)]
  .filter((e) => e.name.endsWith(".ipynb"))
  .map((e) => e.name.replace(/\.ipynb$/, ""))
  .sort();

const browserPath = findChromium();
const browserRequired = Deno.env.get("PGSW_REQUIRE_BROWSER") === "1";
if (!browserPath) {
  console.log(
    browserRequired
      ? "Chromium not found and PGSW_REQUIRE_BROWSER=1: the browser steps will fail"
      : "Chromium not found (set CHROMIUM_PATH or install chromium): the browser steps are skipped",
  );
}

for (const name of notebooks) {
  Deno.test(`notebook ${name} runs top to bottom without errors and its report reads well`, async (t) => {
    const out = await Deno.makeTempDir({ prefix: "pgsw-report-test-" });
    const before = new Set(await runDirectories());
    try {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "tools/report.ts", "--out", out, name],
        cwd: ROOT,
        env: { NO_COLOR: "1", LATENCY_SCALE: Deno.env.get("LATENCY_SCALE_NOTEBOOKS") ?? "0.1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(result.stdout) +
        new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `report for ${name} failed:\n${text}`);
      const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
      assert.deepEqual(summary.notebooks.map((n: { status: string }) => n.status), ["ok"]);
      const leftBehind = async () => (await runDirectories()).filter((d) => !before.has(d));
      assert.ok(
        await waitFor(async () => (await leftBehind()).length === 0, 15_000),
        `run directories left behind: ${await leftBehind()}`,
      );

      await t.step({
        name:
          "the report opens in Chromium: every chart drawn, no console errors, screenshot saved",
        ignore: !browserPath && !browserRequired,
        fn: async () => {
          assert.ok(browserPath, "Chromium is required (PGSW_REQUIRE_BROWSER=1) but was not found");
          const seen = await readInBrowser(
            browserPath,
            `${out}/${name}.html`,
            `${SCREENSHOTS}/${name}.png`,
          );
          assert.deepEqual(seen.errors, [], "console errors in the report");
          assert.match(seen.title, /^\d\d · /, "the report has the notebook's title");
          assert.ok(seen.tocEntries > 0, "the report has a table of contents");
          const empty = seen.charts.filter((c) => !(c.width > 0 && c.height > 0));
          assert.deepEqual(empty, [], "every chart is drawn with a non-zero size");
          if (name !== "00_welcome") {
            assert.ok(seen.charts.length > 0, "a lesson report has charts");
          }
        },
      });
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  });
}

interface ReaderView {
  title: string;
  tocEntries: number;
  charts: { width: number; height: number }[];
  errors: string[];
}

/** Opens a report in headless Chromium, measures its charts, saves a full-page screenshot. */
async function readInBrowser(
  executablePath: string,
  file: string,
  screenshot: string,
): Promise<ReaderView> {
  const userDataDir = await Deno.makeTempDir({ prefix: "pgsw-chromium-" });
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1200, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text());
    });
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(`file://${file}`, { waitUntil: "load" });
    const view = await page.evaluate(() => ({
      title: document.querySelector("h1")?.textContent?.trim() ?? "",
      tocEntries: document.querySelectorAll(".toc a").length,
      // Every chart: the SVGs that outputs carry (Observable Plot renders each chart as one).
      charts: [...document.querySelectorAll(".output svg")].map((svg) => {
        const box = svg.getBoundingClientRect();
        return { width: box.width, height: box.height };
      }),
    }));
    await Deno.mkdir(screenshot.replace(/\/[^/]+$/, ""), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    return { ...view, errors };
  } finally {
    await context.close();
    await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
  }
}

function findChromium(): string | undefined {
  const candidates = [
    Deno.env.get("CHROMIUM_PATH"),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
  ];
  return candidates.find((path) => {
    try {
      return !!path && Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
}
