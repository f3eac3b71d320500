/**
 * Streaming replication: a hot-standby replica of a primary, made the way
 * the source makes it (physical slot, base copy, `standby.signal`,
 * `primary_conninfo`, `primary_slot_name`), and the LSN read-outs that show
 * how far behind it is.
 *
 * The embedded binaries have no `pg_basebackup`, so the base copy is an
 * online file copy between `pg_backup_start()` and `pg_backup_stop()` on one
 * session of the primary. The copy itself depends on where nodes live, so it
 * is asked of the cluster's provider through {@link registerStandbyStarter};
 * the embedded provider is built in, other providers register their own.
 *
 * | function              | what it does                                                        |
 * |-----------------------|---------------------------------------------------------------------|
 * | {@link addReplica}    | base copy + start a streaming hot standby as a cluster node         |
 * | {@link removeReplica} | removes the replica node and drops its slot on the primary          |
 * | {@link setApplyDelay} | `recovery_min_apply_delay` on a running replica (staleness on purpose) |
 * | {@link replicaLsns}   | receive and replay LSN of a replica                                 |
 * | {@link waitForReplay} | waits until a replica replayed past an LSN                          |
 * | {@link startLagMonitor} | samples lag in bytes and ms while something runs                  |
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import { type ProviderKind, settings } from "./config.ts";
import { WorkshopError } from "./errors.ts";
import type { Node } from "./node.ts";
import { startEmbeddedFromDataDir } from "./providers/embedded.ts";
import type { NodeStartSpec, ProvidedNode } from "./providers/provider.ts";
import type { RegionId } from "./regions.ts";
import { type Figure, renderPlot, timeMarks } from "./plot.ts";

/** Options for {@link addReplica}. */
export interface ReplicaOptions {
  /** Name of the replica node, e.g. "eu_replica_1". */
  name: string;
  /** The primary: a node or its name. */
  primary: Node | string;
  /** Region of the replica; across regions it streams through simulated latency. @default the primary's region */
  region?: RegionId;
  /** Physical replication slot on the primary. @default the replica's name in lower case */
  slot?: string;
  /** `recovery_min_apply_delay` in ms: how long replay waits behind each commit. @default 0 */
  applyDelayMs?: number;
  /** Extra settings written into the replica's `postgresql.auto.conf`. @default {} */
  settings?: Record<string, string | number | boolean>;
  /** How long to wait for `pg_stat_wal_receiver.status = 'streaming'`. @default settings().startupTimeoutMs */
  timeoutMs?: number;
}

/** What a provider gets to make a standby: the primary, the backup session and the settings. */
export interface StandbyPlan {
  /** The primary node. */
  primary: Node;
  /**
   * Runs `copy` between `pg_backup_start()` and `pg_backup_stop()` on one
   * session of the primary and returns the backup label to write as
   * `backup_label` into the copy.
   */
  withBackup(copy: () => Promise<void>): Promise<string>;
  /** Lines for the copy's `postgresql.auto.conf` (primary_conninfo, primary_slot_name, ...). */
  autoConf: Record<string, string>;
}

/** Starts a standby from a base copy of the primary; one per provider kind. */
export type StandbyStarter = (plan: StandbyPlan, spec: NodeStartSpec) => Promise<ProvidedNode>;

const standbyStarters = new Map<ProviderKind, StandbyStarter>([["embedded", embeddedStandby]]);

/**
 * Registers how a provider makes standbys (a Docker provider would copy
 * between containers). The embedded provider's starter is built in.
 *
 * @example
 * ```ts
 * registerStandbyStarter("docker", async (plan, spec) => startContainerFromCopy(plan, spec));
 * ```
 */
export function registerStandbyStarter(kind: ProviderKind, starter: StandbyStarter): void {
  standbyStarters.set(kind, starter);
}

/**
 * Makes a streaming hot-standby replica of a primary and adds it to the
 * cluster as a node with role "replica" (so it has `sql`, `url`, and stops
 * with the cluster). Resolves once the replica streams WAL from its slot.
 * Calling it again for a running replica returns that replica.
 *
 * Steps, as the source does them: a physical replication slot on the
 * primary; a base copy of the data directory taken online between
 * `pg_backup_start()` and `pg_backup_stop()`; `standby.signal`;
 * `primary_conninfo`, `primary_slot_name` and `hot_standby = on` in
 * `postgresql.auto.conf`.
 *
 * @throws {WorkshopError} `REPLICA_FAILED` when the replica does not stream
 *   in time (with both server logs), `UNKNOWN_PROVIDER` for a provider
 *   without standby support, `DUPLICATE_NODE` when the name is a non-replica node.
 * @example
 * ```ts
 * const replica = await addReplica(cluster, { name: "eu_replica_1", primary: "eu_db_1" });
 * await replica.sql`SELECT pg_is_in_recovery()`; // [{ pg_is_in_recovery: true }]
 * ```
 */
export async function addReplica(cluster: Cluster, options: ReplicaOptions): Promise<Node> {
  const primary = typeof options.primary === "string"
    ? cluster.node(options.primary)
    : options.primary;
  const region = options.region ?? primary.region;
  if (cluster.has(options.name)) {
    const existing = cluster.node(options.name);
    if (existing.role === "replica") return existing;
    throw new WorkshopError(
      "DUPLICATE_NODE",
      `Cannot add replica "${options.name}": a ${existing.role} node has that name`,
      { fix: "Choose another name for the replica" },
    );
  }
  const starter = standbyStarters.get(cluster.provider.kind);
  if (!starter) {
    throw new WorkshopError(
      "UNKNOWN_PROVIDER",
      `Cannot add replica "${options.name}": the ${cluster.provider.kind} provider cannot make standbys yet`,
      {
        fix:
          `Use WORKSHOP_PROVIDER=embedded, or register one with registerStandbyStarter("${cluster.provider.kind}", ...)`,
      },
    );
  }
  const slot = (options.slot ?? options.name).toLowerCase();
  if (!/^[a-z0-9_]{1,63}$/.test(slot)) {
    throw new WorkshopError("INVALID_SETTING", `Invalid replication slot name "${slot}"`, {
      fix: "Use lower-case letters, digits and underscores (at most 63)",
    });
  }
  // The route the replica's walreceiver takes to the primary: direct in one
  // region, through a delay proxy across regions. Only the region is read.
  const route = await cluster.peerRoute({ region } as unknown as Node, primary);
  const conninfo = [
    `host=${route.host}`,
    `port=${route.port}`,
    `user=${conninfoValue(primary.user)}`,
    `password=${conninfoValue(primary.password)}`,
    `application_name=${options.name}`,
  ].join(" ");
  const autoConf: Record<string, string> = {
    primary_conninfo: confValue(conninfo),
    primary_slot_name: confValue(slot),
    hot_standby: "on",
    recovery_min_apply_delay: confValue(`${Math.max(0, Math.round(options.applyDelayMs ?? 0))}ms`),
    ...Object.fromEntries(
      Object.entries(options.settings ?? {}).map(([k, v]) => [k, confValue(String(v))]),
    ),
  };
  await primary.sql`
    SELECT pg_create_physical_replication_slot(${slot}, true)
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ${slot})`;
  const plan: StandbyPlan = { primary, autoConf, withBackup: (copy) => withBackup(primary, copy) };
  let replica: Node;
  try {
    replica = await cluster.addNode({
      name: options.name,
      region,
      role: "replica",
      start: (spec) => starter(plan, spec),
    });
  } catch (error) {
    await dropSlot(primary, slot);
    throw error;
  }
  const timeoutMs = options.timeoutMs ?? settings().startupTimeoutMs;
  const streaming = await poll(async () => {
    const [row] = await replica.sql`SELECT status FROM pg_stat_wal_receiver`.catch(() => []);
    return row?.status === "streaming";
  }, timeoutMs);
  if (!streaming) {
    const details = `replica log:\n${await replica.logTail(12)}\nprimary log:\n${await primary
      .logTail(8)}`;
    await cluster.removeNode(options.name).catch(() => {});
    await dropSlot(primary, slot);
    throw new WorkshopError(
      "REPLICA_FAILED",
      `Replica "${options.name}" did not stream from "${primary.name}" within ${timeoutMs} ms`,
      {
        fix: "Read both server logs below; check max_wal_senders and the slot on the primary",
        details,
      },
    );
  }
  return replica;
}

/**
 * Removes a replica node and drops its replication slot on the primary (a
 * slot without its replica keeps WAL on the primary forever).
 *
 * @example
 * ```ts
 * await removeReplica(cluster, "eu_replica_1");
 * ```
 */
export async function removeReplica(cluster: Cluster, name: string): Promise<void> {
  const replica = cluster.node(name);
  const [row] = await replica.sql`
    SELECT current_setting('primary_slot_name') AS slot`.catch(() => []);
  await cluster.removeNode(name);
  const slot = (row?.slot as string | undefined) || name.toLowerCase();
  for (const node of cluster.nodes) {
    if (node.stopped) continue;
    await dropSlot(node, slot);
  }
}

/**
 * Sets `recovery_min_apply_delay` on a running replica (ALTER SYSTEM and a
 * reload): replay then waits until each commit is this old. WAL still
 * arrives at once, so the receive LSN runs ahead of the replay LSN.
 *
 * @example
 * ```ts
 * await setApplyDelay(replica, 1500); // writes show up on the replica 1.5 s late
 * await setApplyDelay(replica, 0);
 * ```
 */
export async function setApplyDelay(replica: Node, ms: number): Promise<void> {
  if (!(ms >= 0) || !Number.isFinite(ms)) {
    throw new WorkshopError("INVALID_SETTING", `Invalid apply delay ${ms} ms`, {
      fix: "Use a number of milliseconds >= 0 (0 turns the delay off)",
    });
  }
  const value = `${Math.round(ms)}ms`;
  await replica.exec(`ALTER SYSTEM SET recovery_min_apply_delay = '${value}'`);
  await replica.sql`SELECT pg_reload_conf()`;
  const applied = await poll(async () => {
    const [row] = await replica.sql`
      SELECT setting::int AS ms FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
    return row.ms === Math.round(ms);
  }, 5_000);
  if (!applied) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `recovery_min_apply_delay on "${replica.name}" did not change to ${value}`,
      { fix: "Is the setting given on the command line? Those win over ALTER SYSTEM" },
    );
  }
}

/** A replica's LSN read-outs. */
export interface ReplicaLsns {
  /** `pg_last_wal_receive_lsn()`: WAL received and flushed to the replica's disk. */
  receive: string | null;
  /** `pg_last_wal_replay_lsn()`: WAL replayed, i.e. visible to queries. */
  replay: string | null;
}

/**
 * Where a replica stands: received and replayed LSN.
 *
 * @example
 * ```ts
 * const { receive, replay } = await replicaLsns(replica);
 * ```
 */
export async function replicaLsns(replica: Node): Promise<ReplicaLsns> {
  const [row] = await replica.sql`
    SELECT pg_last_wal_receive_lsn()::text AS receive, pg_last_wal_replay_lsn()::text AS replay`;
  return { receive: row.receive as string | null, replay: row.replay as string | null };
}

/**
 * The primary's current WAL write position, `pg_current_wal_lsn()`.
 *
 * @example
 * ```ts
 * const lsn = await currentLsn(primary); // "0/3A2B1C8"
 * ```
 */
export async function currentLsn(primary: Node): Promise<string> {
  const [row] = await primary.sql`SELECT pg_current_wal_lsn()::text AS lsn`;
  return row.lsn as string;
}

/** Options for {@link waitForReplay}. */
export interface WaitForReplayOptions {
  /** How long to wait, in ms. @default 10000 */
  timeoutMs?: number;
}

/**
 * Waits until the replica replayed past `lsn` (compared as `pg_lsn` in SQL).
 * Returns how long it took in ms.
 *
 * @throws {WorkshopError} `REPLICA_FAILED` when it does not within `timeoutMs`.
 * @example
 * ```ts
 * await waitForReplay(replica, await currentLsn(primary));
 * ```
 */
export async function waitForReplay(
  replica: Node,
  lsn: string,
  options: WaitForReplayOptions = {},
): Promise<number> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const started = performance.now();
  const done = await poll(async () => {
    const [row] = await replica.sql`SELECT pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn AS ok`;
    return row.ok === true;
  }, timeoutMs);
  if (!done) {
    const now = await replicaLsns(replica).catch(() => ({ receive: "?", replay: "?" }));
    throw new WorkshopError(
      "REPLICA_FAILED",
      `Replica "${replica.name}" did not replay up to ${lsn} within ${timeoutMs} ms (replay ${now.replay}, receive ${now.receive})`,
      { fix: "Check the apply delay (setApplyDelay(replica, 0)) and that the replica streams" },
    );
  }
  return performance.now() - started;
}

/** One sample of a {@link LagMonitor}. */
export interface LagSample {
  /** ms since the monitor started. */
  t: number;
  /** Primary's `pg_current_wal_lsn()`. */
  primaryLsn: string;
  /** Replica's receive LSN. */
  receiveLsn: string | null;
  /** Replica's replay LSN. */
  replayLsn: string | null;
  /** WAL bytes written on the primary but not yet received by the replica. */
  receiveLagBytes: number;
  /** WAL bytes written on the primary but not yet replayed (visible) on the replica. */
  replayLagBytes: number;
  /**
   * How old the oldest WAL not yet replayed is, in ms: the time since the
   * primary's position first passed the replica's replay position (0 when
   * caught up). Measured from this process's samples, so no clocks are compared.
   */
  replayLagMs: number;
}

/** A running lag sampler; see {@link startLagMonitor}. */
export interface LagMonitor extends AsyncDisposable {
  /** Samples so far. */
  readonly samples: LagSample[];
  /** ms since the monitor started. */
  elapsed(): number;
  /** Stops sampling and returns the samples. */
  stop(): Promise<LagSample[]>;
}

/** Options for {@link startLagMonitor}. */
export interface LagMonitorOptions {
  /** Pause between samples in ms. @default 10 */
  intervalMs?: number;
  /** Stops by itself after this long. @default 60000 */
  maxDurationMs?: number;
}

/**
 * Samples a replica's lag behind its primary until stopped: bytes not yet
 * received, bytes not yet replayed, and the replay lag in ms.
 *
 * @example
 * ```ts
 * const monitor = startLagMonitor(primary, replica);
 * await primary.exec(`INSERT INTO t SELECT generate_series(1, 100000)`);
 * const samples = await monitor.stop();
 * await show(lagPlot(samples));
 * ```
 */
export function startLagMonitor(
  primary: Node,
  replica: Node,
  options: LagMonitorOptions = {},
): LagMonitor {
  const interval = options.intervalMs ?? 10;
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  const samples: LagSample[] = [];
  // Primary positions seen, oldest first: [t, lsn as bigint].
  const history: [number, bigint][] = [];
  let stopping = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    while (!stopping && elapsed() < (options.maxDurationMs ?? 60_000)) {
      const t = elapsed();
      try {
        const [p] = await primary.sql`SELECT pg_current_wal_lsn()::text AS lsn`;
        const [r] = await replica.sql`
          SELECT pg_last_wal_receive_lsn()::text AS receive, pg_last_wal_replay_lsn()::text AS replay,
                 coalesce(pg_wal_lsn_diff(${p
          .lsn as string}::pg_lsn, pg_last_wal_receive_lsn()), 0)::float8 AS receive_lag,
                 coalesce(pg_wal_lsn_diff(${p
          .lsn as string}::pg_lsn, pg_last_wal_replay_lsn()), 0)::float8 AS replay_lag`;
        const primaryLsn = p.lsn as string;
        const position = lsnToBigInt(primaryLsn);
        if (history.length === 0 || history[history.length - 1][1] < position) {
          history.push([t, position]);
        }
        const replay = r.replay ? lsnToBigInt(r.replay as string) : 0n;
        while (history.length > 1 && history[1][1] <= replay) history.shift();
        const behind = history.find(([, lsn]) => lsn > replay);
        samples.push({
          t,
          primaryLsn,
          receiveLsn: r.receive as string | null,
          replayLsn: r.replay as string | null,
          receiveLagBytes: Math.max(0, r.receive_lag as number),
          replayLagBytes: Math.max(0, r.replay_lag as number),
          replayLagMs: behind ? Math.max(0, elapsed() - behind[0]) : 0,
        });
      } catch {
        // a node went away while sampling: keep going, the gap shows in the plot
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, interval);
      });
    }
  })();
  const stop = async () => {
    stopping = true;
    clearTimeout(timer);
    wake?.();
    await loop;
    return samples;
  };
  return { samples, elapsed, stop, [Symbol.asyncDispose]: async () => void await stop() };
}

/**
 * Lag over time, two charts on one time axis: WAL bytes behind (not yet
 * received, not yet replayed) and the replay lag in ms.
 *
 * @example
 * ```ts
 * await show(lagPlot(samples, { title: "Replica lag during a write burst" }));
 * ```
 */
export async function lagPlot(
  samples: readonly LagSample[],
  options: { title?: string; subtitle?: string; marks?: { t: number; label: string }[] } = {},
): Promise<Figure> {
  const seconds = (t: number) => t / 1000;
  const bytes = samples.flatMap((s) => [
    { seconds: seconds(s.t), series: "not yet received", kib: s.receiveLagBytes / 1024 },
    { seconds: seconds(s.t), series: "not yet replayed", kib: s.replayLagBytes / 1024 },
  ]);
  const ms = samples.map((s) => ({ seconds: seconds(s.t), ms: s.replayLagMs }));
  const marks = (options.marks ?? []).map((m) => ({ seconds: seconds(m.t), label: m.label }));
  const xDomain = [0, Math.max(0.001, ...samples.map((s) => seconds(s.t)))];
  const rules = (
    Plot: typeof import("@observablehq/plot"),
  ) => [...timeMarks(Plot, marks), Plot.ruleY([0])];
  const top = await renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? "sampled from this process every few ms",
    height: 240,
    marginTop: 30,
    marginLeft: 60,
    marginRight: 40,
    x: { domain: xDomain, label: null, grid: true },
    y: { label: "WAL behind (KiB)", grid: true },
    color: {
      legend: true,
      domain: ["not yet received", "not yet replayed"],
      range: ["#9ecae1", "#08519c"],
    },
    marks: [
      ...rules(Plot),
      Plot.lineY(bytes, { x: "seconds", y: "kib", stroke: "series", curve: "step-after" }),
    ],
  }));
  // A legend on both makes both figures, so their plot areas line up.
  const bottom = await renderPlot((Plot) => ({
    height: 190,
    marginTop: 24,
    marginLeft: 60,
    marginRight: 40,
    x: { domain: xDomain, label: "time since sampling started (s)", grid: true },
    y: { label: "replay lag (ms)", grid: true },
    color: { legend: true, domain: ["replay lag"], range: ["#e6550d"] },
    marks: [
      ...rules(Plot),
      Plot.lineY(ms, { x: "seconds", y: "ms", stroke: () => "replay lag", curve: "step-after" }),
    ],
  }));
  const html = `<div class="pgsw-lag-plot">${top.html}${bottom.html}</div>`;
  return {
    html,
    [Symbol.for("Jupyter.display")]: () => ({ "text/html": html, "text/plain": "[chart]" }),
  };
}

/**
 * An LSN (`"16/B374D848"`: high and low 32 bits in hex) as a BigInt byte
 * position. Compare LSNs this way in code, or as `pg_lsn` in SQL.
 *
 * @throws {WorkshopError} `INVALID_SETTING` for text that is not an LSN.
 * @example
 * ```ts
 * lsnToBigInt("0/9A000000") > lsnToBigInt("0/10000000"); // true
 * ```
 */
export function lsnToBigInt(lsn: string): bigint {
  const match = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(lsn.trim());
  if (!match) {
    throw new WorkshopError("INVALID_SETTING", `Invalid LSN "${lsn}"`, {
      fix: 'Use the pg_lsn text form: two hex numbers of up to 8 digits, e.g. "0/16B3748"',
    });
  }
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

async function withBackup(primary: Node, copy: () => Promise<void>): Promise<string> {
  const session = await primary.sql.reserve();
  try {
    await session`SELECT pg_backup_start(${`replica of ${primary.name}`}, true)`;
    try {
      await copy();
    } catch (error) {
      await session`SELECT pg_backup_stop(true)`.catch(() => {});
      throw error;
    }
    const [row] = await session`SELECT labelfile FROM pg_backup_stop(true)`;
    return row.labelfile as string;
  } finally {
    session.release();
  }
}

/** The embedded provider's standby: copy the primary's data directory, then start. */
function embeddedStandby(plan: StandbyPlan, spec: NodeStartSpec): Promise<ProvidedNode> {
  const source = plan.primary.dataDir;
  if (!source) {
    throw new WorkshopError(
      "REPLICA_FAILED",
      `Cannot copy "${plan.primary.name}": its data directory is not on this machine`,
      { fix: "Make the primary with the embedded provider" },
    );
  }
  return startEmbeddedFromDataDir(spec, async (dataDir) => {
    const label = await plan.withBackup(() => run("cp", ["-a", source, dataDir]));
    await Deno.writeTextFile(`${dataDir}/backup_label`, label);
    for (const file of ["postmaster.pid", "postmaster.opts"]) {
      await Deno.remove(`${dataDir}/${file}`).catch(() => {});
    }
    for await (const entry of Deno.readDir(`${dataDir}/pg_replslot`)) {
      await Deno.remove(`${dataDir}/pg_replslot/${entry.name}`, { recursive: true });
    }
    await Deno.writeTextFile(`${dataDir}/standby.signal`, "");
    const lines = Object.entries(plan.autoConf).map(([k, v]) => `${k} = ${v}`).join("\n");
    await Deno.writeTextFile(
      `${dataDir}/postgresql.auto.conf`,
      `\n# standby of ${plan.primary.name} (pg-scaleout-workshop)\n${lines}\n`,
      { append: true },
    );
  });
}

async function dropSlot(node: Node, slot: string): Promise<void> {
  await node.sql`
    SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
    WHERE slot_name = ${slot} AND NOT active`.catch(() => {});
}

/** A value for a libpq conninfo string: single-quoted, with \ and ' escaped. */
function conninfoValue(value: string): string {
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

/** A value for postgresql.conf: single-quoted, ' doubled. */
function confValue(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

async function poll(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return await check();
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}
