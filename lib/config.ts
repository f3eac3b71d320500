/**
 * Settings for the whole kit, in one table. Each has a default, and each can
 * be set from the environment or in code with {@link configure}.
 *
 * | setting          | environment variable          | default                              |
 * |------------------|-------------------------------|--------------------------------------|
 * | provider         | WORKSHOP_PROVIDER             | "embedded"                           |
 * | latencyScale     | LATENCY_SCALE                 | 1 (0 turns simulated latency off)    |
 * | tmpDir           | WORKSHOP_TMPDIR               | /dev/shm when writable, else the OS temp dir |
 * | cacheDir         | WORKSHOP_CACHE_DIR            | $XDG_CACHE_HOME or ~/.cache, + /pg-scaleout-workshop |
 * | seed             | WORKSHOP_SEED                 | 42                                   |
 * | startupTimeoutMs | WORKSHOP_STARTUP_TIMEOUT_MS   | 30000                                |
 * | osUser           | WORKSHOP_OS_USER              | "postgres" (used only when running as root) |
 * | pgBinDir         | WORKSHOP_PG_BIN_DIR           | "" (the npm binaries; else a PostgreSQL 16 bin directory) |
 * | dockerImage      | WORKSHOP_DOCKER_IMAGE         | "postgres:16" (docker provider)      |
 * | cockroachImage   | WORKSHOP_COCKROACH_IMAGE      | "cockroachdb/cockroach:v24.1.0"      |
 * | externalNodes    | WORKSHOP_EXTERNAL_NODES       | "" (external provider: `name=url#region,...`, JSON, or `@file`) |
 * | composeProject   | WORKSHOP_COMPOSE_PROJECT      | "" (compose provider: any running stack of docker-compose.yml) |
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";

/** The providers a cluster can get its nodes from. */
export type ProviderKind = "embedded" | "docker" | "compose" | "external";

/** All settings; see the module table for defaults. */
export interface Settings {
  /** Where nodes come from. @default "embedded" */
  provider: ProviderKind;
  /** Multiplier on simulated round-trip times; 0 turns the simulation off. @default 1 */
  latencyScale: number;
  /** Parent directory for throwaway data directories. @default "/dev/shm" when writable */
  tmpDir: string;
  /** Directory for caches that survive runs (the initdb template). */
  cacheDir: string;
  /** Seed for every random choice the kit makes (jitter, generated data). @default 42 */
  seed: number;
  /** How long a node may take to accept connections. @default 30000 */
  startupTimeoutMs: number;
  /** OS user that runs PostgreSQL when the kit runs as root. @default "postgres" */
  osUser: string;
  /** A PostgreSQL 16 `bin` directory to use instead of the npm binaries. @default "" */
  pgBinDir: string;
  /** Image of the docker provider's nodes. @default "postgres:16" */
  dockerImage: string;
  /** CockroachDB image for notebook 01's "After" section. @default "cockroachdb/cockroach:v24.1.0" */
  cockroachImage: string;
  /**
   * Servers of the external provider: `name=url#region,...`, a JSON array of
   * `{name, url, region}`, or `@path` of a file holding either. @default ""
   */
  externalNodes: string;
  /** docker-compose project whose stack the compose provider uses; "" takes the only one running. @default "" */
  composeProject: string;
}

const PROVIDERS: readonly ProviderKind[] = ["embedded", "docker", "compose", "external"];

let current: Settings | undefined;

/** The current settings, read from the environment on first use. */
export function settings(): Readonly<Settings> {
  current ??= fromEnvironment();
  return current;
}

/**
 * Changes settings for this process. Returns the new settings.
 *
 * @example
 * ```ts
 * configure({ latencyScale: 0.1 }); // a tenth of real-world round trips
 * ```
 */
export function configure(changes: Partial<Settings>): Readonly<Settings> {
  const next = { ...settings(), ...changes };
  validate(next);
  current = next;
  return current;
}

function fromEnvironment(): Settings {
  const env = (name: string) => Deno.env.get(name)?.trim() || undefined;
  const result: Settings = {
    provider: (env("WORKSHOP_PROVIDER") ?? "embedded") as ProviderKind,
    latencyScale: numberSetting("LATENCY_SCALE", env("LATENCY_SCALE"), 1),
    tmpDir: env("WORKSHOP_TMPDIR") ?? defaultTmpDir(),
    cacheDir: env("WORKSHOP_CACHE_DIR") ?? defaultCacheDir(),
    seed: numberSetting("WORKSHOP_SEED", env("WORKSHOP_SEED"), 42),
    startupTimeoutMs: numberSetting(
      "WORKSHOP_STARTUP_TIMEOUT_MS",
      env("WORKSHOP_STARTUP_TIMEOUT_MS"),
      30_000,
    ),
    osUser: env("WORKSHOP_OS_USER") ?? "postgres",
    pgBinDir: env("WORKSHOP_PG_BIN_DIR") ?? "",
    dockerImage: env("WORKSHOP_DOCKER_IMAGE") ?? "postgres:16",
    cockroachImage: env("WORKSHOP_COCKROACH_IMAGE") ?? "cockroachdb/cockroach:v24.1.0",
    externalNodes: env("WORKSHOP_EXTERNAL_NODES") ?? "",
    composeProject: env("WORKSHOP_COMPOSE_PROJECT") ?? "",
  };
  validate(result);
  return result;
}

function validate(s: Settings): void {
  if (!PROVIDERS.includes(s.provider)) {
    throw new WorkshopError("UNKNOWN_PROVIDER", `Unknown provider "${s.provider}"`, {
      fix: `Set WORKSHOP_PROVIDER to one of: ${PROVIDERS.join(", ")}`,
    });
  }
  if (!(s.latencyScale >= 0) || !Number.isFinite(s.latencyScale)) {
    throw new WorkshopError("INVALID_SETTING", `Invalid latency scale ${s.latencyScale}`, {
      fix: "Use a number >= 0, for example LATENCY_SCALE=0.1 (0 turns simulated latency off)",
    });
  }
}

function numberSetting(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) {
    throw new WorkshopError("INVALID_SETTING", `Invalid ${name} "${raw}"`, {
      fix: `Set ${name} to a number, or unset it to use ${fallback}`,
    });
  }
  return value;
}

function defaultTmpDir(): string {
  try {
    const info = Deno.statSync("/dev/shm");
    if (info.isDirectory) {
      const probe = Deno.makeTempFileSync({ dir: "/dev/shm", prefix: ".pgsw-probe-" });
      Deno.removeSync(probe);
      return "/dev/shm";
    }
  } catch {
    // not Linux, or /dev/shm not writable: fall through
  }
  return Deno.env.get("TMPDIR")?.replace(/\/$/, "") || "/tmp";
}

function defaultCacheDir(): string {
  const home = Deno.env.get("HOME") ?? "/tmp";
  const base = Deno.env.get("XDG_CACHE_HOME") ??
    (Deno.build.os === "darwin" ? `${home}/Library/Caches` : `${home}/.cache`);
  return `${base}/pg-scaleout-workshop`;
}
