/**
 * Executes every notebook through the report pipeline (the Deno Jupyter
 * kernel via nbclient), as `deno task report` does, and fails on any cell
 * error. Also checks that each run leaves no node behind.
 *
 * Notebooks run with LATENCY_SCALE=0.1 unless LATENCY_SCALE_NOTEBOOKS says otherwise.
 */

import assert from "node:assert/strict";
import { runDirectories, waitFor } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const notebooks = [...Deno.readDirSync(`${ROOT}/notebooks`)]
  .filter((e) => e.name.endsWith(".ipynb"))
  .map((e) => e.name.replace(/\.ipynb$/, ""))
  .sort();

for (const name of notebooks) {
  Deno.test(`notebook ${name} runs top to bottom without errors and leaves nothing behind`, async () => {
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
      const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `report for ${name} failed:\n${text}`);
      const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
      assert.deepEqual(summary.notebooks.map((n: { status: string }) => n.status), ["ok"]);
      const html = await Deno.readTextFile(`${out}/${name}.html`);
      assert.ok(html.includes("passed"), "the report says the notebook passed");
      const leftBehind = async () => (await runDirectories()).filter((d) => !before.has(d));
      assert.ok(await waitFor(async () => (await leftBehind()).length === 0, 15_000),
        `run directories left behind: ${await leftBehind()}`);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  });
}
