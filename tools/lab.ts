/**
 * `deno task lab [--check] [JUPYTER ARGS...]`
 *
 * Writes the project-local Deno kernelspec and starts `jupyter lab` (or
 * `jupyter notebook` when there is no JupyterLab) on the `notebooks/`
 * folder, with that kernelspec first on `JUPYTER_PATH`. Nothing global is
 * changed. Other arguments, such as `--no-browser` or `--port=9999`, are
 * passed to Jupyter.
 *
 * `--check` starts the server on a free port, waits until
 * `/api/kernelspecs` lists the "deno" kernel, prints it and stops the
 * server: a smoke test of the whole setup.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { WorkshopError } from "../lib/errors.ts";
import { findJupyterServer, KERNEL_NAME, writeProjectKernelspec } from "./kernelspec.ts";

const PROJECT_DIR = fileURLToPath(new URL("..", import.meta.url)).replace(/[\\/]$/, "");

/** Options for {@link checkJupyter}. */
export interface CheckOptions {
  /** How long the server may take to list the kernel. @default 30000 */
  timeoutMs?: number;
}

/** What {@link checkJupyter} saw. */
export interface CheckResult {
  /** The server command that ran, e.g. `jupyter notebook`. */
  command: string;
  /** The URL that listed the kernel. */
  url: string;
  /** The kernelspec as the server returned it. */
  spec: { display_name: string; language: string; argv: string[] };
}

/**
 * Starts Jupyter on a free port with the project kernelspec, waits until
 * `/api/kernelspecs` lists "deno", and stops it again.
 *
 * @param options How long to wait.
 * @returns The server command, the URL and the listed spec.
 * @throws {WorkshopError} `JUPYTER_MISSING` when no server runs or it never lists the kernel.
 *
 * @example
 * ```ts
 * const { spec } = await checkJupyter();
 * console.log(spec.display_name); // "Deno (scale-out workshop)"
 * ```
 */
export async function checkJupyter(options: CheckOptions = {}): Promise<CheckResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const server = await findJupyterServer();
  const kernel = await writeProjectKernelspec(PROJECT_DIR);
  const runtimeDir = await Deno.makeTempDir({ prefix: "lab-check-runtime-" });
  const port = freePort();
  const token = crypto.randomUUID();
  const child = new Deno.Command(server.command[0], {
    args: [
      ...server.command.slice(1),
      `--notebook-dir=${PROJECT_DIR}/notebooks`,
      "--no-browser",
      "--ip=127.0.0.1",
      `--port=${port}`,
      "--port-retries=0",
      ...rootArgs(),
    ],
    env: { ...kernel.env, JUPYTER_TOKEN: token, JUPYTER_RUNTIME_DIR: runtimeDir },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = collect(child.stdout, child.stderr);
  const url = `http://127.0.0.1:${port}/api/kernelspecs`;
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const listed = await kernelspecs(url, token);
      const spec = listed?.kernelspecs?.[KERNEL_NAME]?.spec;
      if (spec) return { command: server.command.join(" "), url, spec };
      if (await exited(child)) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new WorkshopError(
      "JUPYTER_MISSING",
      `Jupyter did not list kernel "${KERNEL_NAME}" at ${url} within ${timeoutMs} ms`,
      {
        fix: `Run \`${server.command.join(" ")}\` by hand and read its log below`,
        details: log.text(),
      },
    );
  } finally {
    await stop(child);
    await log.done;
    await Deno.remove(runtimeDir, { recursive: true });
  }
}

/**
 * Starts Jupyter for the workshop and waits until it exits.
 *
 * @param passThrough Arguments for Jupyter, such as `--no-browser`.
 * @returns Jupyter's exit code.
 * @throws {WorkshopError} `JUPYTER_MISSING` when neither JupyterLab nor Notebook is installed.
 *
 * @example
 * ```ts
 * Deno.exit(await startLab(["--no-browser"]));
 * ```
 */
export async function startLab(passThrough: string[]): Promise<number> {
  const server = await findJupyterServer();
  const kernel = await writeProjectKernelspec(PROJECT_DIR);
  console.log(`Kernelspec "${KERNEL_NAME}" written to ${kernel.specPath}`);
  console.log(
    `Jupyter finds it through JUPYTER_PATH=${kernel.jupyterPath} (nothing global was changed)`,
  );
  console.log(`Starting ${server.command.join(" ")} in ${PROJECT_DIR}/notebooks ...`);
  if (rootArgs().length > 0) console.log("Running as root: passing --allow-root to Jupyter");
  const child = new Deno.Command(server.command[0], {
    args: [
      ...server.command.slice(1),
      `--notebook-dir=${PROJECT_DIR}/notebooks`,
      ...rootArgs(),
      ...passThrough,
    ],
    env: kernel.env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches Jupyter from the terminal and Jupyter decides (it asks before shutting
  // down), so we only wait for it; SIGTERM sent to us is passed on.
  const ignore = () => {};
  const forward = () => child.kill("SIGTERM");
  const windows = Deno.build.os === "windows";
  Deno.addSignalListener("SIGINT", ignore);
  if (!windows) Deno.addSignalListener("SIGTERM", forward);
  try {
    return (await child.status).code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
    if (!windows) Deno.removeSignalListener("SIGTERM", forward);
  }
}

/** Jupyter refuses to run as root without `--allow-root`; containers and CI often are root. */
function rootArgs(): string[] {
  return Deno.uid() === 0 ? ["--allow-root"] : [];
}

async function kernelspecs(url: string, token: string): Promise<any | undefined> {
  try {
    const response = await fetch(url, { headers: { Authorization: `token ${token}` } });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return await response.json();
  } catch {
    return undefined; // not listening yet
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function exited(child: Deno.ChildProcess): Promise<boolean> {
  const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), 0));
  return await Promise.race([child.status.then(() => true), timeout]);
}

/** Stops the server we started: SIGTERM, then SIGKILL after 5 s. */
async function stop(child: Deno.ChildProcess): Promise<void> {
  if (await exited(child)) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}

/** Reads both streams to the end, keeping the text for error messages. */
function collect(...streams: ReadableStream<Uint8Array>[]) {
  let text = "";
  const decoder = new TextDecoder();
  const done = Promise.all(streams.map(async (stream) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  }));
  return { done, text: () => text.trim().split("\n").slice(-30).join("\n") };
}

if (import.meta.main) {
  try {
    const args = Deno.args;
    if (args.includes("--check")) {
      const result = await checkJupyter();
      console.log(
        `${result.command} lists kernel "${KERNEL_NAME}" (${result.spec.display_name}) at ${result.url}`,
      );
      console.log(`  argv: ${result.spec.argv.join(" ")}`);
      console.log("Server stopped; nothing global was changed");
    } else {
      Deno.exit(await startLab(args));
    }
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
