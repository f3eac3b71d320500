/**
 * What the bench ran on: cores, memory, CPU model, versions of Deno,
 * PostgreSQL, pgbench and Docker, and how busy the machine was (load
 * average, and the share of CPU time other work took while a section ran).
 *
 * @module
 */

import { asUser, pgBinaries, pgRunAs } from "../lib/providers/_pg_binaries.ts";
import { descendants, listProcesses } from "./_procs.ts";

/** The machine the figures come from. */
export interface Machine {
  os: string;
  kernel: string;
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  /** 1, 5 and 15 minute load averages when the bench started. */
  loadAtStart: number[];
}

/** Versions of everything measured; "absent: <why>" when a piece is missing. */
export interface Versions {
  deno: string;
  v8: string;
  typescript: string;
  postgres: string;
  pgbench: string;
  docker: string;
}

/** Reads the machine facts. */
export async function machine(): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ??
    (await output("sysctl", ["-n", "machdep.cpu.brand_string"])) ?? "unknown";
  return {
    os: `${Deno.build.os} ${Deno.build.arch}`,
    kernel: Deno.osRelease(),
    cpuModel: model,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30 * 10) / 10,
    loadAtStart: Deno.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Reads the versions (PostgreSQL from the embedded binary, pgbench from PATH or /usr/bin). */
export async function versions(dockerHint = ""): Promise<Versions> {
  const postgres = await pgBinaries()
    .then(async (bins) => {
      const user = await pgRunAs();
      return await output(bins.postgres, ["--version"], asUser(user));
    })
    .catch((error) => `absent: ${(error as Error).message.split("\n")[0]}`);
  const pgbench = await output(pgbenchPath(), ["--version"]) ?? "absent: no pgbench binary";
  const docker = await output("docker", ["version", "--format", "{{.Server.Version}}"]);
  return {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    postgres: postgres ?? "absent",
    pgbench,
    docker: docker ? `Engine ${docker}` : `absent${dockerHint ? `: ${dockerHint}` : ""}`,
  };
}

/** The pgbench binary: `$PGBENCH`, else /usr/bin/pgbench (Debian's wrapper), else `pgbench`. */
export function pgbenchPath(): string {
  const env = Deno.env.get("PGBENCH");
  if (env) return env;
  try {
    Deno.statSync("/usr/bin/pgbench");
    return "/usr/bin/pgbench";
  } catch {
    return "pgbench";
  }
}

/** Busy-ness of the machine over a stretch of time. */
export interface Busy {
  /** 1-minute load average at the start and the end. */
  load1: [number, number];
  /** Share of all CPU time spent busy (any process) over the stretch, 0..1; null off Linux. */
  cpuBusy: number | null;
  /**
   * Share of all CPU time spent by processes that are not the bench's own
   * (the bench, its nodes, pgbench, the report and its kernels count as
   * own; Docker containers do not), 0..1; null off Linux.
   */
  othersBusy: number | null;
  /** Seconds the stretch took. */
  seconds: number;
}

/**
 * Starts watching how busy the machine is; the returned function ends the
 * stretch and reports it.
 *
 * @example
 * ```ts
 * const done = watchBusy();
 * await work();
 * const busy = done(); // { load1: [2.1, 2.6], cpuBusy: 0.71, seconds: 12.3 }
 * ```
 */
export function watchBusy(): () => Busy {
  const load = Deno.loadavg()[0];
  const cpu = cpuTimes();
  const own = ownTicks();
  const started = performance.now();
  return () => {
    const end = cpuTimes();
    const total = cpu && end ? end.total - cpu.total : 0;
    const busy = cpu && end && total > 0 ? 1 - (end.idle - cpu.idle) / total : null;
    // /proc/stat counts jiffies of all CPUs; process ticks are per process.
    const others = busy === null || total <= 0
      ? null
      : Math.max(0, busy - (ownTicks() - own) / total);
    return {
      load1: [round2(load), round2(Deno.loadavg()[0])],
      cpuBusy: busy === null ? null : round2(busy),
      othersBusy: others === null ? null : round2(others),
      seconds: round2((performance.now() - started) / 1000),
    };
  };
}

/** CPU ticks of this process, its live descendants and the children it reaped. */
function ownTicks(): number {
  return descendants(listProcesses(), Deno.pid).reduce((sum, p) => sum + p.cpuTicks, 0);
}

function cpuTimes(): { idle: number; total: number } | undefined {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const values = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = values[3] + (values[4] ?? 0); // idle + iowait
    return { idle, total: values.reduce((s, v) => s + v, 0) };
  } catch {
    return undefined;
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** First line of a command's stdout, or undefined when it cannot run or fails. */
async function output(
  cmd: string,
  args: string[],
  as: Pick<Deno.CommandOptions, "uid" | "gid" | "cwd"> = {},
): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      ...as,
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return undefined;
    return new TextDecoder().decode(out.stdout).trim().split("\n")[0];
  } catch {
    return undefined;
  }
}
