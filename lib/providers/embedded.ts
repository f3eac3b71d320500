/**
 * The embedded provider (the default): each node is a PostgreSQL 16 process
 * from npm binaries, listening on 127.0.0.1 only, with scram-sha-256 and the
 * cluster's password.
 *
 * Bring-up is fast because `initdb` runs once into a cached template; each
 * node copies the template into a data directory on tmpfs (`/dev/shm`) and
 * starts in 60-110 ms. When running as root, PostgreSQL runs as an
 * unprivileged OS user (it refuses root).
 *
 * @module
 */

import postgres from "postgres";
import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { currentRun } from "../_runs.ts";
import { assertPortFree, freePort } from "../ports.ts";
import {
  asUser,
  EMBEDDED_PG_VERSION,
  type PgBinaries,
  pgBinaries,
  type PgRunAs,
  pgRunAs,
} from "./_pg_binaries.ts";
import type { NodeProvider, NodeStartSpec, ProvidedNode } from "./provider.ts";

/** Server settings written into the template's postgresql.conf. */
const TEMPLATE_CONF: Record<string, string> = {
  listen_addresses: "'127.0.0.1'",
  unix_socket_directories: "''",
  max_connections: "60",
  shared_buffers: "32MB",
  fsync: "off",
  jit: "off",
  timezone: "'UTC'",
  log_timezone: "'UTC'",
  log_line_prefix: "'%m [%p] %q%a '",
  max_wal_size: "256MB",
  wal_keep_size: "64MB",
  // Dynamic shared memory as files in the data directory (pg_dynshmem), not in
  // /dev/shm: a node stopped with SIGQUIT or SIGKILL then leaves nothing outside it.
  dynamic_shared_memory_type: "mmap",
};

const HBA = [
  "# Written by the pg-scaleout-workshop kit: TCP on loopback, passwords only.",
  "host all         all 127.0.0.1/32 scram-sha-256",
  "host replication all 127.0.0.1/32 scram-sha-256",
  "",
].join("\n");

interface Template {
  dir: string;
  password: string;
}

let template: Promise<Template> | undefined;

/**
 * Creates the embedded provider.
 *
 * @example
 * ```ts
 * const provider = embeddedProvider();
 * const node = await provider.start({ name: "eu_db_1", region: "eu-west-2", password: "pw", clusterName: "demo" });
 * await node.stop({ remove: true });
 * ```
 */
export function embeddedProvider(): NodeProvider {
  return {
    kind: "embedded",
    start: startEmbeddedNode,
    proxyEndpoint: () => ({ listenHost: "127.0.0.1", reachableHost: "127.0.0.1" }),
    dispose: () => Promise.resolve(),
  };
}

/**
 * The flags the template is made with: superuser `postgres` with a password
 * from `pwfile` stored as SCRAM, UTF8 without locale, no fsync while
 * writing, 1 MB WAL segments (a small, quickly copied template).
 *
 * @example
 * ```ts
 * new Deno.Command(bins.initdb, { args: initdbArgs("/dev/shm/x/data", "/dev/shm/x/pwfile") });
 * ```
 */
export function initdbArgs(dataDir: string, pwfile: string): string[] {
  return [
    ...["-D", dataDir, "-U", "postgres", "--auth=scram-sha-256", `--pwfile=${pwfile}`],
    ...["-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions", "--wal-segsize=1"],
  ];
}

/** Makes sure the binaries and the template exist; returns the template directory. */
export async function prepareEmbedded(): Promise<string> {
  return (await embeddedTemplate()).dir;
}

/**
 * Creates a node from an existing data directory (a base copy for a
 * replica, for example) and starts it. The directory must sit in this
 * process's run directory so that clean-up covers it.
 */
export async function startEmbeddedFromDataDir(
  spec: NodeStartSpec,
  prepare: (dataDir: string) => Promise<void>,
): Promise<ProvidedNode> {
  return await launch(spec, prepare);
}

async function startEmbeddedNode(spec: NodeStartSpec): Promise<ProvidedNode> {
  const tmpl = await embeddedTemplate();
  return await launch(spec, async (dataDir) => {
    await run("cp", ["-a", tmpl.dir, dataDir]);
  }, tmpl.password);
}

async function launch(
  spec: NodeStartSpec,
  prepare: (dataDir: string) => Promise<void>,
  initialPassword?: string,
): Promise<ProvidedNode> {
  const [bins, user, runDir] = await Promise.all([pgBinaries(), pgRunAs(), currentRun()]);
  const port = spec.port ?? await freePort();
  if (spec.port !== undefined) await assertPortFree(spec.port, `Cannot start node "${spec.name}"`);
  const nodeDir = await Deno.makeTempDir({ dir: runDir.nodesDir, prefix: `${spec.name}-` });
  const dataDir = `${nodeDir}/data`;
  const logFile = `${nodeDir}/postgres.log`;
  await prepare(dataDir);
  await ownBy(nodeDir, user);

  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = spawnPostgres(bins, user, dataDir, logFile, port, spec);
    await waitReady(spec.name, port, dataDir, logFile, child);
  };
  try {
    await start();
    if (initialPassword !== undefined && initialPassword !== spec.password) {
      await setPassword(port, initialPassword, spec.password);
    }
  } catch (error) {
    if (child) await stopProcess(child, "SIGQUIT");
    await Deno.remove(nodeDir, { recursive: true }).catch(() => {});
    throw error;
  }

  let stopped = false;
  let removed = false;
  const stop = async (
    { mode = "fast", remove = false }: { mode?: "fast" | "immediate"; remove?: boolean } = {},
  ) => {
    if (!stopped && child) {
      stopped = true;
      await stopProcess(child, mode === "immediate" ? "SIGQUIT" : "SIGINT");
    }
    if (remove && !removed) {
      removed = true;
      await Deno.remove(nodeDir, { recursive: true }).catch(() => {});
    }
  };
  return {
    address: { host: "127.0.0.1", port },
    peerAddress: { host: "127.0.0.1", port },
    user: "postgres",
    database: "postgres",
    dataDir,
    logTail: (lines = 20) => tail(logFile, lines),
    stop,
    restart: async () => {
      if (removed) throw new Error(`Node "${spec.name}" was removed and cannot restart`);
      if (!stopped) return;
      await start();
      stopped = false;
    },
  };
}

function spawnPostgres(
  bins: PgBinaries,
  user: PgRunAs,
  dataDir: string,
  logFile: string,
  port: number,
  spec: NodeStartSpec,
): Deno.ChildProcess {
  const flags = Object.entries({ port, cluster_name: spec.name, ...spec.settings })
    .flatMap(([key, value]) => ["-c", `${key}=${value}`]);
  // The shell redirects the server log to a file and then becomes postgres (exec),
  // so the child's pid is the postmaster's pid.
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$0" "$@" >>"$PGSW_LOG" 2>&1', bins.postgres, "-D", dataDir, ...flags],
    env: { PGSW_LOG: logFile, LC_ALL: "C" },
    ...asUser(user),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  return child;
}

async function waitReady(
  name: string,
  port: number,
  dataDir: string,
  logFile: string,
  child: Deno.ChildProcess,
): Promise<void> {
  const timeoutMs = settings().startupTimeoutMs;
  const deadline = Date.now() + timeoutMs;
  let exited: Deno.CommandStatus | undefined;
  child.status.then((status) => exited = status);
  while (Date.now() < deadline) {
    const pidFile = await Deno.readTextFile(`${dataDir}/postmaster.pid`).catch(() => "");
    if (pidFile.split("\n")[7]?.trim() === "ready") return;
    if (exited) {
      const log = await tail(logFile, 15);
      if (/could not bind|Address already in use/i.test(log)) {
        throw new WorkshopError(
          "PORT_IN_USE",
          `Cannot start node "${name}": port ${port} is already in use`,
          {
            fix: "Choose another port, or leave the port unset so a free one is picked",
            details: log,
          },
        );
      }
      throw new WorkshopError(
        "NODE_START_FAILED",
        `Node "${name}" exited while starting (code ${exited.code})`,
        {
          fix: "Read the server log lines below; they say why PostgreSQL stopped",
          details: log,
        },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await stopProcess(child, "SIGQUIT");
  throw new WorkshopError(
    "NODE_NOT_READY",
    `Node "${name}" not ready after ${timeoutMs} ms (port ${port})`,
    {
      fix: "The machine may be overloaded; raise WORKSHOP_STARTUP_TIMEOUT_MS or read the log below",
      details: await tail(logFile, 15),
    },
  );
}

async function stopProcess(child: Deno.ChildProcess, signal: Deno.Signal): Promise<void> {
  child.ref(); // keep the event loop alive while we wait for the exit
  const done = child.status.then(() => true);
  try {
    child.kill(signal);
  } catch {
    return; // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) =>
    timer = setTimeout(() => resolve(false), 10_000)
  );
  const exited = await Promise.race([done, timeout]);
  clearTimeout(timer);
  if (!exited) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await done;
  }
}

async function setPassword(port: number, current: string, next: string): Promise<void> {
  const sql = postgres({
    host: "127.0.0.1",
    port,
    user: "postgres",
    password: current,
    database: "postgres",
    max: 1,
    onnotice: () => {},
  });
  try {
    await sql.unsafe(`ALTER ROLE postgres PASSWORD '${next.replaceAll("'", "''")}'`);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The initdb template: created once per machine and PostgreSQL version, then reused. */
function embeddedTemplate(): Promise<Template> {
  template ??= loadOrCreateTemplate().catch((error) => {
    template = undefined;
    throw error;
  });
  return template;
}

async function loadOrCreateTemplate(): Promise<Template> {
  const [bins, user] = await Promise.all([pgBinaries(), pgRunAs()]);
  const cache = settings().cacheDir;
  // Binaries of your own (WORKSHOP_PG_BIN_DIR) get their own template, named after their path.
  const binaries = settings().pgBinDir
    ? `own-${await shortHash(bins.postgres)}`
    : `pg-${EMBEDDED_PG_VERSION}`;
  // The settings are part of the name, so changing TEMPLATE_CONF or HBA makes a new template.
  const conf = await shortHash(JSON.stringify([TEMPLATE_CONF, HBA]));
  const tag = `${binaries}-${conf}-${Deno.build.os}-${Deno.build.arch}-${
    user.uid ?? Deno.uid() ?? 0
  }`;
  const dir = `${cache}/template-${tag}`;
  const manifestPath = `${dir}.json`;
  const manifest = await Deno.readTextFile(manifestPath).then(JSON.parse).catch(() => undefined);
  if (manifest?.password && await Deno.stat(`${dir}/PG_VERSION`).then(() => true, () => false)) {
    return { dir, password: manifest.password };
  }
  await Deno.mkdir(cache, { recursive: true });
  // initdb must write where the PostgreSQL user can: the run directory (tmpfs).
  const runDir = await currentRun();
  const build = await Deno.makeTempDir({ dir: runDir.nodesDir, prefix: "template-" });
  try {
    const password = crypto.randomUUID().replaceAll("-", "");
    await Deno.writeTextFile(`${build}/pwfile`, password + "\n");
    await ownBy(build, user);
    const out = await new Deno.Command(bins.initdb, {
      args: initdbArgs(`${build}/data`, `${build}/pwfile`),
      ...asUser(user),
      env: { LC_ALL: "C" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new WorkshopError(
        "NODE_START_FAILED",
        "Cannot create the PostgreSQL template: initdb failed",
        {
          fix: "Read initdb's output below; check free space in the cache and temp directories",
          details: new TextDecoder().decode(out.stderr).trim(),
        },
      );
    }
    const conf = Object.entries(TEMPLATE_CONF).map(([k, v]) => `${k} = ${v}`).join("\n");
    await Deno.writeTextFile(
      `${build}/data/postgresql.conf`,
      `\n# pg-scaleout-workshop\n${conf}\n`,
      { append: true },
    );
    await Deno.writeTextFile(`${build}/data/pg_hba.conf`, HBA);
    await ownBy(`${build}/data`, user);
    const staging = `${dir}.partial-${Deno.pid}`;
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    await run("cp", ["-a", `${build}/data`, staging]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(staging, dir);
    await Deno.writeTextFile(
      `${manifestPath}.tmp`,
      JSON.stringify({ password, version: EMBEDDED_PG_VERSION }),
    );
    await Deno.chmod(`${manifestPath}.tmp`, 0o600);
    await Deno.rename(`${manifestPath}.tmp`, manifestPath);
    await removeOlderTemplates(cache, `template-${binaries}-`, `template-${tag}`);
    return { dir, password };
  } finally {
    await Deno.remove(build, { recursive: true }).catch(() => {});
  }
}

async function ownBy(path: string, user: PgRunAs): Promise<void> {
  if (user.uid === undefined || user.gid === undefined) return;
  await run("chown", ["-R", `${user.uid}:${user.gid}`, path]);
}

async function tail(path: string, lines: number): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

async function shortHash(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest).slice(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/** Deletes cached templates of the same binaries made with other settings (replaced by `keep`). */
async function removeOlderTemplates(cache: string, prefix: string, keep: string): Promise<void> {
  for await (const entry of Deno.readDir(cache)) {
    if (!entry.name.startsWith(prefix) || entry.name.startsWith(keep)) continue;
    await Deno.remove(`${cache}/${entry.name}`, { recursive: true }).catch(() => {});
  }
}
