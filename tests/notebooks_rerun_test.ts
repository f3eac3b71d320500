/**
 * Every notebook's cells are re-runnable: the whole notebook runs twice in a
 * row in the same kernel without errors (setup cells replace the cluster,
 * DDL uses IF NOT EXISTS, data steps reset what they need). Runs at
 * LATENCY_SCALE=0 to keep the suite quick; the notebook test covers 0.1.
 */

import assert from "node:assert/strict";
import { findNbclientPython, writeProjectKernelspec } from "../tools/kernelspec.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const notebooks = [...Deno.readDirSync(`${ROOT}/notebooks`)]
  .filter((e) => e.name.endsWith(".ipynb"))
  .map((e) => e.name)
  .sort();

for (const file of notebooks) {
  Deno.test(`notebook ${file.replace(/\.ipynb$/, "")} runs twice in a row in one kernel`, async () => {
    const kernel = await writeProjectKernelspec(ROOT);
    const python = await findNbclientPython();
    const out = await Deno.makeTempFile({ suffix: ".ipynb" });
    try {
      const result = await new Deno.Command(python, {
        args: [`${ROOT}/tools/_execute_notebook.py`, `${ROOT}/notebooks/${file}`, out, "--twice"],
        env: { ...kernel.env, NO_COLOR: "1", LATENCY_SCALE: "0" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const lines = new TextDecoder().decode(result.stdout).trim().split("\n");
      const outcome = JSON.parse(lines.at(-1) ?? "{}");
      assert.equal(
        outcome.ok,
        true,
        `second run failed at cell ${outcome.failedCell}: ${JSON.stringify(outcome.error)}`,
      );
    } finally {
      await Deno.remove(out);
    }
  });
}
