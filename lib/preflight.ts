/**
 * Environment checks: can this machine run the workshop? Each check says
 * what it found and, when it fails, how to fix it. The report task runs
 * {@link preflight} before executing notebooks; the welcome notebook shows
 * {@link environmentChecks} as a table.
 *
 * Run by hand: `deno run -A lib/preflight.ts`.
 *
 * @module
 */

import { settings } from "./config.ts";
import { type ErrorCode, isWorkshopError, WorkshopError } from "./errors.ts";
import { prepareEmbedded } from "./providers/embedded.ts";
import { EMBEDDED_PG_VERSION, pgBinaries, pgRunAs } from "./providers/_pg_binaries.ts";
import { reclaimStaleRuns, runsRoot } from "./_runs.ts";

/** One environment check. */
export interface EnvironmentCheck {
  /** What was checked. */
  check: string;
  /** Whether it passed; "skipped" when it does not apply to this setup. */
  status: "ok" | "failed" | "skipped";
  /** What was found. */
  found: string;
  /** How to fix a failure (empty when ok). */
  fix: string;
  /** Whether the workshop cannot run without it. */
  essential: boolean;
  /** The failure's error code, when it was a WorkshopError. */
  code?: ErrorCode;
  /** The failure's details (a command's error output), when it had any. */
  details?: string;
}

/**
 * Runs every check and returns one row each; never throws.
 *
 * @example
 * ```ts
 * await show(table(await environmentChecks()));
 * ```
 */
export async function environmentChecks(): Promise<EnvironmentCheck[]> {
  const provider = settings().provider;
  const embedded = provider === "embedded";
  const rows: EnvironmentCheck[] = [];
  const add = async (check: string, essential: boolean, run: () => Promise<string>) => {
    try {
      rows.push({ check, status: "ok", found: await run(), fix: "", essential });
    } catch (error) {
      const e = error as Error & { fix?: string };
      rows.push({
        check,
        status: "failed",
        found: firstLine(e.message).replace(/ \[[A-Z_]+\]$/, ""),
        fix: e.fix ?? "",
        essential,
        ...(isWorkshopError(error) ? { code: error.code, details: error.details } : {}),
      });
    }
  };
  await add(
    "Deno",
    true,
    () => Promise.resolve(`${Deno.version.deno} (${Deno.build.os}/${Deno.build.arch})`),
  );
  await add(
    "settings",
    true,
    () =>
      Promise.resolve(
        `provider ${provider}, LATENCY_SCALE ${settings().latencyScale}, seed ${settings().seed}`,
      ),
  );
  await add("loopback ports", true, () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    listener.close();
    return Promise.resolve(`127.0.0.1 gives free ports (e.g. ${port}); nodes pick their own`);
  });
  await add("Jupyter kernel", false, () => {
    try {
      if ((Deno as unknown as { jupyter?: unknown }).jupyter) {
        return Promise.resolve("running inside the Deno kernel");
      }
    } catch { /* outside the kernel, reading Deno.jupyter throws */ }
    return Promise.resolve("not in a kernel (deno task lab / deno task report start one)");
  });
  await add("scratch space for nodes", true, async () => {
    await Deno.mkdir(runsRoot(), { recursive: true }).catch((error) => {
      throw Object.assign(new Error(`Cannot use ${runsRoot()}: ${error.message}`), {
        fix: "Set WORKSHOP_TMPDIR to a writable directory (a tmpfs like /dev/shm is fastest)",
      });
    });
    const probe = await Deno.makeTempFile({ dir: runsRoot() });
    await Deno.remove(probe);
    return `${settings().tmpDir}${settings().tmpDir === "/dev/shm" ? " (tmpfs)" : ""}`;
  });
  if (embedded) {
    await add("PostgreSQL binaries", true, async () => {
      const bins = await pgBinaries();
      const user = await pgRunAs();
      return `PostgreSQL ${
        EMBEDDED_PG_VERSION.split("-")[0]
      } at ${bins.root}, runs as ${user.name}`;
    });
    await add("initdb template", true, async () => `ready at ${await prepareEmbedded()}`);
  } else {
    rows.push({
      check: "PostgreSQL binaries",
      status: "skipped",
      found: `provider ${provider}`,
      fix: "",
      essential: false,
    });
  }
  await add("stale runs", false, async () => {
    const reclaimed = await reclaimStaleRuns();
    return reclaimed.length ? `reclaimed ${reclaimed.length} left by crashed runs` : "none";
  });
  await add("redis-server (notebook 05)", false, () =>
    which("redis-server", "REDIS_UNAVAILABLE", {
      fix:
        "Install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL",
    }, "REDIS_URL"));
  if (provider === "docker" || provider === "compose") {
    const docker = await import("./providers/_docker.ts");
    await add("Docker engine", true, () => docker.describeEngine());
    if (provider === "docker") {
      await add("Docker image", true, async () => {
        await docker.ensureImage(settings().dockerImage);
        return `${settings().dockerImage} present (WORKSHOP_DOCKER_IMAGE)`;
      });
    } else {
      await add("docker-compose stack", true, async () => {
        const { composeServices } = await import("./providers/compose.ts");
        const services = await composeServices();
        return `project ${services[0].project}: ${services.map((s) => s.name).join(", ")}`;
      });
    }
  } else if (provider === "external") {
    await add("external servers", true, async () => {
      const { checkExternalServers } = await import("./providers/external.ts");
      return await checkExternalServers();
    });
  } else {
    await add("docker (optional provider)", false, () =>
      which("docker", "DOCKER_UNAVAILABLE", {
        fix: "Only needed for WORKSHOP_PROVIDER=docker: install Docker and start its engine",
      }));
  }
  return rows;
}

/**
 * Runs the checks and throws the first essential failure as a WorkshopError.
 *
 * @throws {WorkshopError} The failed check's own code (`DOCKER_UNAVAILABLE`, `IMAGE_UNAVAILABLE`,
 *   ...) or `BINARIES_MISSING`, naming the check and its fix.
 */
export async function preflight(): Promise<EnvironmentCheck[]> {
  const rows = await environmentChecks();
  const failed = rows.find((r) => r.essential && r.status === "failed");
  if (failed) {
    throw new WorkshopError(
      failed.code ?? "PREFLIGHT_FAILED",
      `Preflight failed: ${failed.check}: ${failed.found}`,
      { fix: failed.fix || "See the message above", details: failed.details },
    );
  }
  return rows;
}

async function which(
  command: string,
  code: "REDIS_UNAVAILABLE" | "DOCKER_UNAVAILABLE",
  options: { fix: string },
  envOverride?: string,
): Promise<string> {
  if (envOverride && Deno.env.get(envOverride)) return `${envOverride} is set`;
  const out = await new Deno.Command("sh", {
    args: ["-c", `command -v ${command}`],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !path) throw new WorkshopError(code, `${command} not found on PATH`, options);
  return path;
}

function firstLine(text: string): string {
  return text.split("\n")[0];
}

if (import.meta.main) {
  try {
    const rows = await preflight();
    for (const r of rows) {
      console.log(
        `${
          r.status === "ok" ? "ok  " : r.status === "skipped" ? "skip" : "FAIL"
        }  ${r.check}: ${r.found}${r.fix ? ` (fix: ${r.fix})` : ""}`,
      );
    }
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(1);
  }
}
