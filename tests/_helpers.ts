/**
 * Helpers shared by the tests: process inspection, small waits, and a
 * latency scale for the duration of one test.
 *
 * @module
 */

import { configure, settings } from "../lib/config.ts";
import { runsRoot } from "../lib/_runs.ts";

/** Pid of the postmaster of a data directory, or undefined. */
export async function postmasterPid(dataDir: string): Promise<number | undefined> {
  const text = await Deno.readTextFile(`${dataDir}/postmaster.pid`).catch(() => "");
  const pid = Number(text.split("\n")[0]);
  return pid > 0 ? pid : undefined;
}

/** Whether a process exists. */
export function processExists(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch (error) {
    return error instanceof Deno.errors.PermissionDenied;
  }
}

/** The OS user a process runs as. */
export async function processUser(pid: number): Promise<string> {
  const out = await new Deno.Command("ps", {
    args: ["-o", "user=", "-p", String(pid)],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** Whether a path exists. */
export async function pathExists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Polls `condition` every 50 ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return await condition();
}

/** Run directories currently under the runs root. */
export async function runDirectories(): Promise<string[]> {
  const entries = await Array.fromAsync(Deno.readDir(runsRoot())).catch(() => []);
  return entries.filter((e) => e.name.startsWith("run-")).map((e) => `${runsRoot()}/${e.name}`);
}

/**
 * Runs a TypeScript snippet in a separate Deno process, from the project
 * root or from `cwd` (with the project's deno.json); returns the child.
 */
export function spawnDeno(
  code: string,
  env: Record<string, string> = {},
  cwd?: string,
): Deno.ChildProcess {
  const root = new URL("..", import.meta.url).pathname;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", `--config=${root}deno.json`, code],
    cwd: cwd ?? root,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads lines from a child's stdout until `predicate` matches one; returns that line. */
export async function readLineUntil(
  child: Deno.ChildProcess,
  predicate: (line: string) => boolean,
): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`Child ended before printing the expected line; output: ${buffer}`);
      buffer += value;
      const lines = buffer.split("\n");
      const hit = lines.find(predicate);
      if (hit) return hit;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Runs `fn` with the simulated latency at `scale` (for a test where the
 * simulated latency is the thing under test), then restores the scale it
 * had, also when `fn` fails.
 */
export async function withLatencyScale<T>(scale: number, fn: () => Promise<T>): Promise<T> {
  const previous = settings().latencyScale;
  configure({ latencyScale: scale });
  try {
    return await fn();
  } finally {
    configure({ latencyScale: previous });
  }
}
