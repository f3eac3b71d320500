/**
 * Helpers for the provider tests (docker, compose, external).
 *
 * @module
 */

/**
 * A copy of a notebook in `<dir>/notebooks` whose foreign servers name the
 * target node's database (`dbname '${cluster.node("eu_db_2").database}'`)
 * where the source writes `dbname 'postgres'`: with the external provider
 * each node is a database of its own, not `postgres`. Notebooks that already
 * use `node.database` are copied unchanged. The copy sits in the project's
 * `.scratch/` (gitignored) under the project's deno.json, importing `../../lib/`.
 */
export async function portableNotebookCopy(prefix: string): Promise<string> {
  const root = new URL("../notebooks/", import.meta.url).pathname;
  const scratch = new URL("../.scratch/", import.meta.url).pathname;
  await Deno.mkdir(scratch, { recursive: true });
  const target = await Deno.makeTempDir({ dir: scratch, prefix: "external-notebooks-" });
  for await (const entry of Deno.readDir(root)) {
    if (!entry.name.startsWith(prefix) || !entry.name.endsWith(".ipynb")) continue;
    const notebook = JSON.parse(await Deno.readTextFile(`${root}/${entry.name}`));
    for (const cell of notebook.cells) {
      if (cell.cell_type !== "code") continue;
      const source = Array.isArray(cell.source) ? cell.source.join("") : cell.source;
      cell.source = source
        .replace(
          /(CREATE SERVER (\w+)[\s\S]*?dbname )'postgres'/g,
          (_: string, head: string, server: string) =>
            `${head}'\${cluster.node("${server}").database}'`,
        )
        .replaceAll(`"../lib/`, `"../../lib/`);
    }
    await Deno.writeTextFile(`${target}/${entry.name}`, JSON.stringify(notebook, null, 1));
  }
  return target;
}

/** Runs `deno run -A tools/report.ts` on some notebooks with extra environment; returns the summary and output. */
export async function runReport(
  names: string[],
  env: Record<string, string>,
  options: { notebooksDir?: string } = {},
): Promise<{ ok: boolean; text: string; summary: any; outDir: string }> {
  const outDir = await Deno.makeTempDir({ prefix: "pgsw-provider-report-" });
  const args = ["run", "-A", "tools/report.ts", "--out", outDir];
  if (options.notebooksDir) args.push("--notebooks-dir", options.notebooksDir);
  const result = await new Deno.Command(Deno.execPath(), {
    args: [...args, ...names],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1", LATENCY_SCALE: "0.1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  const summary = await Deno.readTextFile(`${outDir}/summary.json`).then(JSON.parse, () => {
    throw new Error(`The report did not run:\n${text}`);
  });
  return { ok: result.success, text, summary, outDir };
}
