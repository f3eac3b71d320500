/**
 * The project's Jupyter environment: a project-local Deno kernelspec, and
 * where the Python that runs notebooks (nbclient) and the Jupyter server live.
 *
 * Nothing global is changed: the kernelspec is written under
 * `<project>/.jupyter/kernels/deno/` and found through `JUPYTER_PATH`, which
 * only the processes we start see.
 *
 * @module
 */

import { WorkshopError } from "../lib/errors.ts";

/** The kernel name notebooks ask for in `metadata.kernelspec.name`. */
export const KERNEL_NAME = "deno";

/** The kernelspec's display name, as Jupyter shows it. */
export const KERNEL_DISPLAY_NAME = "Deno (scale-out workshop)";

/** A written kernelspec and the environment that makes Jupyter find it. */
export interface ProjectKernel {
  /** The `.jupyter` directory put first on `JUPYTER_PATH`. */
  jupyterPath: string;
  /** Full path of the written `kernel.json`. */
  specPath: string;
  /** The environment for Jupyter processes: ours, plus `JUPYTER_PATH` and `NO_COLOR`. */
  env: Record<string, string>;
}

/**
 * Writes `<projectDir>/.jupyter/kernels/deno/kernel.json` (running this Deno
 * binary) and returns the environment under which Jupyter finds it first.
 *
 * @param projectDir The project root; the spec goes in its `.jupyter` folder.
 * @param baseEnv The environment to extend. @default Deno.env.toObject()
 * @returns Where the spec is and the env for Jupyter processes.
 *
 * @example
 * ```ts
 * const kernel = await writeProjectKernelspec("/work/main");
 * new Deno.Command("jupyter", { args: ["notebook"], env: kernel.env }).spawn();
 * ```
 */
export async function writeProjectKernelspec(
  projectDir: string,
  baseEnv: Record<string, string> = Deno.env.toObject(),
): Promise<ProjectKernel> {
  const jupyterPath = `${projectDir}/.jupyter`;
  const kernelDir = `${jupyterPath}/kernels/${KERNEL_NAME}`;
  const specPath = `${kernelDir}/kernel.json`;
  const spec = {
    argv: [Deno.execPath(), "jupyter", "--kernel", "--conn", "{connection_file}"],
    display_name: KERNEL_DISPLAY_NAME,
    language: "typescript",
  };
  await Deno.mkdir(kernelDir, { recursive: true });
  await Deno.writeTextFile(specPath, JSON.stringify(spec, null, 2) + "\n");
  return { jupyterPath, specPath, env: kernelEnv(jupyterPath, baseEnv) };
}

/**
 * The environment for Jupyter processes: `jupyterPath` prepended to
 * `JUPYTER_PATH`, and `NO_COLOR=1` so outputs carry no ANSI colours.
 *
 * @param jupyterPath The directory holding `kernels/deno/kernel.json`.
 * @param baseEnv The environment to extend.
 * @returns A new environment object; `baseEnv` is not changed.
 *
 * @example
 * ```ts
 * kernelEnv("/work/main/.jupyter", { JUPYTER_PATH: "/opt/jp" }).JUPYTER_PATH;
 * // "/work/main/.jupyter:/opt/jp" (";" on Windows)
 * ```
 */
export function kernelEnv(
  jupyterPath: string,
  baseEnv: Record<string, string>,
): Record<string, string> {
  const separator = Deno.build.os === "windows" ? ";" : ":";
  const existing = baseEnv.JUPYTER_PATH;
  return {
    ...baseEnv,
    JUPYTER_PATH: existing ? `${jupyterPath}${separator}${existing}` : jupyterPath,
    NO_COLOR: "1",
  };
}

/**
 * How to install Jupyter on this machine, for `JUPYTER_MISSING` fixes.
 *
 * @returns One line per way that works on this platform.
 *
 * @example
 * ```ts
 * console.log(jupyterInstallFix());
 * ```
 */
export function jupyterInstallFix(): string {
  const pip = "`pipx install notebook nbconvert` or `pip install nbclient nbconvert notebook`";
  if (Deno.build.os === "linux" && isFile("/etc/debian_version")) {
    return "Install it with `sudo apt-get install -y jupyter-nbconvert python3-nbclient jupyter-notebook` " +
      `(Debian/Ubuntu), or ${pip}; set WORKSHOP_PYTHON to a python that can import nbclient`;
  }
  return `Install it with ${pip}; set WORKSHOP_PYTHON to a python that can import nbclient`;
}

/**
 * Finds a Python that can `import nbclient, nbformat`: `WORKSHOP_PYTHON`
 * when set (and only it), else the interpreters behind
 * `jupyter-nbconvert`/`jupyter` on PATH, then `python3`, `/usr/bin/python3`
 * and `python`.
 *
 * @returns The command to run that Python.
 * @throws {WorkshopError} `JUPYTER_MISSING` when none can.
 *
 * @example
 * ```ts
 * const python = await findNbclientPython(); // "/usr/bin/python3"
 * ```
 */
export async function findNbclientPython(): Promise<string> {
  const explicit = Deno.env.get("WORKSHOP_PYTHON")?.trim();
  const candidates = explicit ? [explicit] : await pythonCandidates();
  for (const python of candidates) {
    if (await succeeds(python, ["-c", "import nbclient, nbformat"])) return python;
  }
  const message = explicit
    ? `WORKSHOP_PYTHON=${explicit} cannot import nbclient`
    : `No Python with nbclient found (tried ${candidates.join(", ")})`;
  throw new WorkshopError("JUPYTER_MISSING", message, { fix: jupyterInstallFix() });
}

/** The Jupyter server command {@link findJupyterServer} found. */
export interface JupyterServer {
  /** Command and leading arguments, e.g. `["jupyter", "lab"]`. */
  command: string[];
}

/**
 * Finds `jupyter lab`, else `jupyter notebook`.
 *
 * @returns The command to start the server.
 * @throws {WorkshopError} `JUPYTER_MISSING` when neither runs.
 *
 * @example
 * ```ts
 * const { command } = await findJupyterServer(); // ["jupyter", "notebook"]
 * ```
 */
export async function findJupyterServer(): Promise<JupyterServer> {
  if (await succeeds("jupyter", ["lab", "--version"])) {
    return { command: ["jupyter", "lab"] };
  }
  if (await succeeds("jupyter", ["notebook", "--version"])) {
    return { command: ["jupyter", "notebook"] };
  }
  throw new WorkshopError("JUPYTER_MISSING", "Neither `jupyter lab` nor `jupyter notebook` runs", {
    fix: jupyterInstallFix(),
  });
}

async function pythonCandidates(): Promise<string[]> {
  const found: string[] = [];
  for (const script of ["jupyter-nbconvert", "jupyter"]) {
    const interpreter = await shebangOf(script);
    if (interpreter) found.push(interpreter);
  }
  found.push("python3", "/usr/bin/python3", "python");
  return [...new Set(found)];
}

/** The interpreter named on the first line of `command` found on PATH. */
async function shebangOf(command: string): Promise<string | undefined> {
  const separator = Deno.build.os === "windows" ? ";" : ":";
  for (const dir of (Deno.env.get("PATH") ?? "").split(separator)) {
    if (!dir) continue;
    try {
      const text = await Deno.readTextFile(`${dir}/${command}`);
      const match = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(text.slice(0, 300));
      if (!match) return undefined;
      // "#!/usr/bin/env python3" names the interpreter in its argument.
      return match[1].endsWith("/env") ? match[2] : match[1];
    } catch {
      // not in this PATH entry, or not a text file
    }
  }
  return undefined;
}

async function succeeds(command: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, { args, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
