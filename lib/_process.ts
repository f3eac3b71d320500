/**
 * Running a helper command whose absence is not an error.
 *
 * @module
 */

/**
 * Runs a command and returns its output, or undefined when it cannot run at
 * all (not installed, not executable). Spawning a missing binary throws
 * synchronously in Deno, so `.output().catch()` alone would not catch it.
 *
 * @example
 * ```ts
 * const out = await tryOutput("ps", { args: ["-p", "1", "-o", "comm="] });
 * ```
 */
export async function tryOutput(
  command: string,
  options: Deno.CommandOptions = {},
): Promise<Deno.CommandOutput | undefined> {
  try {
    return await new Deno.Command(command, { stdout: "piped", stderr: "null", ...options })
      .output();
  } catch {
    return undefined;
  }
}
