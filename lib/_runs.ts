/**
 * Run directories and the reaper: how the kit guarantees that nothing it
 * starts outlives the process that started it.
 *
 * Each process that starts nodes gets one run directory under
 * `<tmpDir>/pgsw-<uid>/` holding the node data directories, their logs, pid
 * files of helper processes (Redis) and Docker labels. Three layers clean it:
 *
 * 1. `Cluster.stop()` (or `await using`) stops and removes everything.
 * 2. A detached reaper (a POSIX shell loop) watches the owning process; once
 *    the owner is gone, however it ended (even SIGKILL of a Jupyter kernel),
 *    it stops what is left and removes the directory.
 * 3. On the next start, {@link reclaimStaleRuns} runs the same clean-up for
 *    any directory whose owner and reaper are both gone.
 *
 * @module
 */

import { settings } from "./config.ts";
import { tryOutput } from "./_process.ts";

/** The shell reaper; `$1` is the owner pid, `$2` the run directory. */
const REAPER_SCRIPT = `
owner="$1"; dir="$2"; wait_for_owner="$3"
if [ "$wait_for_owner" = "wait" ]; then
  while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do sleep 0.25; done
fi
[ -d "$dir" ] || exit 0
stop_pid() { # pid, expected command name, first signal
  pid="$1"; [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  case "$(ps -p "$pid" -o comm= 2>/dev/null)" in *"$2"*) ;; *) return 0 ;; esac
  kill -"$3" "$pid" 2>/dev/null
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 40 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
  return 0
}
for f in "$dir"/nodes/*/data/postmaster.pid; do
  [ -f "$f" ] && stop_pid "$(head -n 1 "$f")" postgres QUIT
done
for f in "$dir"/pids/*.pid; do
  [ -f "$f" ] || continue
  read -r pid name < "$f"
  stop_pid "$pid" "$name" TERM
done
if [ -f "$dir/docker-label" ] && command -v docker >/dev/null 2>&1; then
  label="$(cat "$dir/docker-label")"
  ids="$(docker ps -aq --filter "label=$label" 2>/dev/null)"
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1
  nets="$(docker network ls -q --filter "label=$label" 2>/dev/null)"
  [ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1
fi
rm -rf "$dir"
rmdir "$(dirname "$dir")" 2>/dev/null
exit 0
`;

/** A directory owned by this process where nodes and helpers live. */
export interface RunDir {
  /** Absolute path of the run directory. */
  path: string;
  /** Directory for node data directories. */
  nodesDir: string;
  /** Directory for pid files of helper processes (`<pid> <command name>`). */
  pidsDir: string;
}

let current: RunDir | undefined;
let creating: Promise<RunDir> | undefined;

/** The root holding every run directory of this OS user. */
export function runsRoot(): string {
  const uid = Deno.uid() ?? 0;
  return `${settings().tmpDir}/pgsw-${uid}`;
}

/**
 * Returns this process's run directory, creating it and its reaper on first
 * use. Stale run directories of dead processes are reclaimed first.
 */
export async function currentRun(): Promise<RunDir> {
  if (current && await exists(current.path)) return current;
  creating ??= createRun().finally(() => creating = undefined);
  return await creating;
}

async function createRun(): Promise<RunDir> {
  const root = runsRoot();
  await Deno.mkdir(root, { recursive: true, mode: 0o755 });
  await Deno.chmod(root, 0o755).catch(() => {});
  await reclaimStaleRuns();
  // Build the directory under a name reclaimers ignore, and give it its final
  // name only once it names its owner, so a concurrent reclaim never takes it.
  // Another process may remove the (empty) root between mkdir and here: make it again once.
  const staging = await Deno.makeTempDir({ dir: root, prefix: `.staging-${Deno.pid}-` }).catch(
    async () => {
      await Deno.mkdir(root, { recursive: true, mode: 0o755 });
      return await Deno.makeTempDir({ dir: root, prefix: `.staging-${Deno.pid}-` });
    },
  );
  await Deno.chmod(staging, 0o755);
  await Deno.mkdir(`${staging}/nodes`, { mode: 0o755 });
  await Deno.mkdir(`${staging}/pids`, { mode: 0o755 });
  await Deno.writeTextFile(`${staging}/owner`, `${Deno.pid} ${await processStartTime(Deno.pid)}\n`);
  const path = staging.replace(/\/\.staging-([^/]+)$/, "/run-$1");
  await Deno.rename(staging, path);
  const run = { path, nodesDir: `${path}/nodes`, pidsDir: `${path}/pids` };
  const reaper = spawnReaper(Deno.pid, path, true);
  await Deno.writeTextFile(`${path}/reaper`, `${reaper.pid}\n`);
  current = run;
  return run;
}

/** What {@link reclaimStaleRuns} removed. */
export interface ReclaimedRun {
  /** The run directory that was removed. */
  path: string;
  /** Pid of the process that had owned it. */
  ownerPid: number;
  /** Node data directories that were in it. */
  nodes: string[];
}

/**
 * Stops and removes what dead processes left behind: run directories whose
 * owner and reaper are both gone (a kernel killed with SIGKILL, a crashed
 * test run). Safe to call at any time; live runs are never touched.
 *
 * @returns The runs that were reclaimed.
 * @example
 * ```ts
 * const reclaimed = await reclaimStaleRuns();
 * console.log(`${reclaimed.length} stale runs reclaimed`);
 * ```
 */
export async function reclaimStaleRuns(): Promise<ReclaimedRun[]> {
  const reclaimed: ReclaimedRun[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(runsRoot()));
  } catch {
    return reclaimed;
  }
  for (const entry of entries) {
    const staging = /^\.staging-(\d+)-/.exec(entry.name);
    if (entry.isDirectory && staging && !isAlive(Number(staging[1]))) {
      await Deno.remove(`${runsRoot()}/${entry.name}`, { recursive: true }).catch(() => {});
      continue;
    }
    if (!entry.isDirectory || !entry.name.startsWith("run-")) continue;
    const path = `${runsRoot()}/${entry.name}`;
    if (path === current?.path || entry.name.startsWith(`run-${Deno.pid}-`)) continue;
    const [ownerPid, ...startParts] = (await readText(`${path}/owner`)).trim().split(" ");
    const reaperPid = Number((await readText(`${path}/reaper`)).trim());
    const owner = Number(ownerPid);
    const ownerAlive = owner > 0 && isAlive(owner) &&
      (await processStartTime(owner)) === startParts.join(" ");
    if (ownerAlive || (reaperPid > 0 && isAlive(reaperPid) && await isReaper(reaperPid))) continue;
    const nodes = await Array.fromAsync(Deno.readDir(`${path}/nodes`)).catch(() => []);
    await spawnReaper(owner || 0, path, false).status;
    reclaimed.push({ path, ownerPid: owner, nodes: nodes.map((n) => n.name) });
  }
  const nodes = reclaimed.flatMap((r) => r.nodes);
  if (nodes.length > 0) {
    console.log(
      `Reclaimed ${reclaimed.length} stale run director${reclaimed.length === 1 ? "y" : "ies"} ` +
        `left by processes that ended without cleaning up (${nodes.length} node(s): ` +
        `${nodes.join(", ") || "none"})`,
    );
  }
  return reclaimed;
}

/**
 * Removes this process's run directory once it holds nothing that is still
 * running. Called by clusters when they stop.
 */
export async function releaseRunIfEmpty(): Promise<void> {
  if (!current) return;
  const busy = (dir: string) =>
    Array.fromAsync(Deno.readDir(dir)).then((e) => e.length > 0, () => false);
  if (await busy(current.nodesDir) || await busy(current.pidsDir)) return;
  if (await exists(`${current.path}/docker-label`)) return;
  await Deno.remove(current.path, { recursive: true }).catch(() => {});
  await Deno.remove(runsRoot()).catch(() => {}); // only when empty: other runs may live there
  current = undefined;
}

function spawnReaper(owner: number, dir: string, waitForOwner: boolean): Deno.ChildProcess {
  const args = [
    "-c",
    REAPER_SCRIPT,
    "pgsw-reaper",
    String(owner),
    dir,
    waitForOwner ? "wait" : "now",
  ];
  const useSetsid = waitForOwner && Deno.build.os === "linux" && hasSetsid();
  const child = new Deno.Command(useSetsid ? "setsid" : "sh", {
    args: useSetsid ? ["sh", ...args] : args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  if (waitForOwner) child.unref();
  return child;
}

let setsidAvailable: boolean | undefined;
function hasSetsid(): boolean {
  if (setsidAvailable === undefined) {
    try {
      setsidAvailable =
        new Deno.Command("setsid", { args: ["--version"], stdout: "null", stderr: "null" })
          .outputSync().success;
    } catch {
      setsidAvailable = false;
    }
  }
  return setsidAvailable;
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch (error) {
    return error instanceof Deno.errors.PermissionDenied;
  }
}

async function isReaper(pid: number): Promise<boolean> {
  const out = await tryOutput("ps", { args: ["-p", String(pid), "-o", "args="] });
  return !!out && new TextDecoder().decode(out.stdout).includes("pgsw-reaper");
}

async function processStartTime(pid: number): Promise<string> {
  const out = await tryOutput("ps", { args: ["-p", String(pid), "-o", "lstart="] });
  return out ? new TextDecoder().decode(out.stdout).trim() : "";
}

async function readText(path: string): Promise<string> {
  return await Deno.readTextFile(path).catch(() => "");
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}
