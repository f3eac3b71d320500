/**
 * A background workload: the source's latency client ("SELECT COUNT(*) FROM
 * customer once a second, print how long it took"), grown into reads and
 * writes, tagged with the lesson step that is current, kept as samples.
 *
 * Every operation's latency is measured from this process, so a client in
 * another region pays the simulated round trips. Inserts use client-made ids
 * and remember which were acknowledged, so a later check can prove that no
 * acknowledged write was lost.
 *
 * @module
 */

import type { Node, Sql } from "./node.ts";
import type { RegionId } from "./regions.ts";
import { seededRandom, seededUuid } from "./random.ts";

/** The built-in operations. */
export type BuiltinOp = "count" | "point" | "insert";

/** A custom operation: runs one statement (or a few) and returns anything. */
export type Operation = (sql: Sql, context: OperationContext) => Promise<unknown>;

/** What a custom operation gets besides its client. */
export interface OperationContext {
  /** Seeded random numbers for this workload. */
  random(): number;
  /** A fresh seeded UUID. */
  uuid(): string;
  /** Records `id` as an acknowledged write once the operation succeeds. */
  acknowledge(id: string): void;
}

/** Options for {@link startWorkload}. */
export interface WorkloadOptions {
  /** Region the client sits in. @default the node's region */
  from?: RegionId;
  /** Table the built-in operations use (`id UUID`, `email` columns). @default "customer" */
  table?: string;
  /** Weights of the built-in operations. @default { count: 1 } */
  mix?: Partial<Record<BuiltinOp, number>>;
  /** Custom operations by name, with weight 1 each unless listed in `mix`. @default {} */
  operations?: Record<string, Operation>;
  /** Pause between the starts of two operations of one worker, in ms. @default 1000 */
  intervalMs?: number;
  /** Concurrent workers (each with its own connection). @default 1 */
  concurrency?: number;
  /** The workload stops by itself after this long, in ms. @default 300000 */
  maxDurationMs?: number;
  /** Step label until the first {@link Workload.mark}. @default "start" */
  step?: string;
  /** Extra columns for built-in inserts, e.g. `{ region: "uk" }`. @default {} */
  insertValues?: Record<string, string>;
}

/** One measured operation. */
export interface Sample {
  /** Start time, ms since the workload started. */
  t: number;
  /** Operation name. */
  op: string;
  /** Duration in ms. */
  ms: number;
  /** Whether it succeeded. */
  ok: boolean;
  /** The step that was current when it started. */
  step: string;
  /** Error message when it failed. */
  error?: string;
}

/** A step boundary set with {@link Workload.mark}. */
export interface StepMark {
  /** ms since the workload started. */
  t: number;
  /** Step label. */
  step: string;
}

/** Latency percentiles of one step and operation. */
export interface StepSummary {
  step: string;
  op: string;
  count: number;
  failed: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/**
 * Starts a workload against `node` and returns at once; it runs until
 * {@link Workload.stop} or `maxDurationMs`.
 *
 * @example
 * ```ts
 * const load = await startWorkload(eu1, { mix: { count: 1, insert: 1 }, intervalMs: 200 });
 * load.mark("year 1: 2 nodes");
 * // ... re-partition ...
 * await load.stop();
 * await show(latencyTimeline(load));
 * ```
 */
export async function startWorkload(node: Node, options: WorkloadOptions = {}): Promise<Workload> {
  const concurrency = options.concurrency ?? 1;
  const sql = await node.client({
    from: options.from,
    max: concurrency,
    applicationName: "pgsw-workload",
  });
  return new Workload(node, sql, options);
}

/** A running (or stopped) workload. Get one from {@link startWorkload}. */
export class Workload implements AsyncDisposable {
  /** Every measured operation, in start order. */
  readonly samples: Sample[] = [];
  /** Step boundaries, the first at t = 0. */
  readonly marks: StepMark[] = [];
  /** Ids of inserts the server acknowledged. */
  readonly acknowledged: string[] = [];
  /** Node the workload runs against. */
  readonly node: Node;
  /** Region of the client. */
  readonly from: RegionId;

  #sql: Sql;
  #started = performance.now();
  #step: string;
  #stopping = false;
  #workers: Promise<void>[];
  #timer: ReturnType<typeof setTimeout>;
  #wake = new Set<() => void>();

  /** @internal Use {@link startWorkload}. */
  constructor(node: Node, sql: Sql, options: WorkloadOptions) {
    this.node = node;
    this.from = options.from ?? node.region;
    this.#sql = sql;
    this.#step = options.step ?? "start";
    this.marks.push({ t: 0, step: this.#step });
    const ops = operationsFor(options);
    const rng = seededRandom();
    const interval = options.intervalMs ?? 1000;
    this.#workers = Array.from(
      { length: options.concurrency ?? 1 },
      () => this.#run(ops, rng, interval),
    );
    this.#timer = setTimeout(() => void this.stop(), options.maxDurationMs ?? 300_000);
    Deno.unrefTimer(this.#timer as unknown as number);
  }

  /** The current step label. */
  get step(): string {
    return this.#step;
  }

  /** Whether the workload still runs. */
  get running(): boolean {
    return !this.#stopping;
  }

  /** ms since the workload started. */
  elapsed(): number {
    return performance.now() - this.#started;
  }

  /**
   * Starts a new step: later samples carry this label, and plots draw a boundary.
   *
   * @example
   * ```ts
   * load.mark("year 2: 3 nodes");
   * ```
   */
  mark(step: string): void {
    this.#step = step;
    this.marks.push({ t: this.elapsed(), step });
  }

  /** Waits until `n` more samples were taken (or the workload stopped). */
  async waitForSamples(n: number): Promise<void> {
    const target = this.samples.length + n;
    while (this.samples.length < target && !this.#stopping) {
      await new Promise<void>((resolve) => this.#wake.add(resolve));
    }
  }

  /** Stops the workload, waits for operations in flight, closes its connections. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      clearTimeout(this.#timer);
      for (const wake of this.#wake) wake();
    }
    await Promise.all(this.#workers);
    await this.node.closeClient(this.#sql).catch(() => {});
  }

  /** Same as {@link Workload.stop}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /** Percentiles per step and operation, steps in the order they were marked. */
  summary(): StepSummary[] {
    return summarize(this.samples, this.marks.map((m) => m.step));
  }

  /**
   * The longest time, in ms, in which no operation named `op` succeeded
   * while the workload ran (the "pause" a user would feel).
   */
  longestGap(op = "insert"): number {
    const done = this.samples.filter((s) => s.op === op && s.ok).map((s) => s.t + s.ms).sort((
      a,
      b,
    ) => a - b);
    const edges = [
      0,
      ...done,
      this.#stopping ? this.samples.reduce((m, s) => Math.max(m, s.t + s.ms), 0) : this.elapsed(),
    ];
    let gap = 0;
    for (let i = 1; i < edges.length; i++) gap = Math.max(gap, edges[i] - edges[i - 1]);
    return gap;
  }

  /**
   * Acknowledged writes that are missing from `table` now (should be none).
   *
   * @param reader Node to count on. @default the workload's node
   * @example
   * ```ts
   * const lost = await load.lostWrites();
   * await show(verify("acknowledged writes lost", lost.length, 0));
   * ```
   */
  async lostWrites(table = "customer", reader: Node = this.node): Promise<string[]> {
    if (this.acknowledged.length === 0) return [];
    const found = await reader.sql`
      SELECT id::text FROM ${reader.sql(table)} WHERE id = ANY(${this.acknowledged}::uuid[])`;
    const present = new Set(found.map((r) => r.id as string));
    return this.acknowledged.filter((id) => !present.has(id));
  }

  async #run(
    ops: [string, Operation, number][],
    rng: () => number,
    interval: number,
  ): Promise<void> {
    const total = ops.reduce((s, [, , w]) => s + w, 0);
    const pick = () => {
      let x = rng() * total;
      for (const [name, op, w] of ops) if ((x -= w) < 0) return [name, op] as const;
      return [ops[0][0], ops[0][1]] as const;
    };
    const context: OperationContext = {
      random: rng,
      uuid: () => seededUuid(rng),
      acknowledge: () => {},
    };
    while (!this.#stopping) {
      const [name, op] = pick();
      const pending: string[] = [];
      const step = this.#step;
      const t = this.elapsed();
      let error: string | undefined;
      try {
        await op(this.#sql, { ...context, acknowledge: (id) => pending.push(id) });
        this.acknowledged.push(...pending);
      } catch (e) {
        error = (e as Error).message;
      }
      const ms = this.elapsed() - t;
      this.samples.push({
        t,
        op: name,
        ms,
        ok: error === undefined,
        step,
        ...(error ? { error } : {}),
      });
      for (const wake of this.#wake) wake();
      this.#wake.clear();
      const wait = Math.max(0, interval - ms);
      if (!this.#stopping && wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.#wake.add(() => {
            if (this.#stopping) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
      }
    }
  }
}

function operationsFor(options: WorkloadOptions): [string, Operation, number][] {
  const table = options.table ?? "customer";
  const extra = options.insertValues ?? {};
  const builtins: Record<BuiltinOp, Operation> = {
    count: (sql) => sql`SELECT count(*) FROM ${sql(table)}`,
    point: (sql, ctx) => sql`SELECT * FROM ${sql(table)} WHERE id = ${ctx.uuid()}::uuid`,
    insert: async (sql, ctx) => {
      const id = ctx.uuid();
      await sql`INSERT INTO ${sql(table)} ${
        sql({ id, email: `${id.slice(0, 8)}@load.test`, ...extra })
      }`;
      ctx.acknowledge(id);
    },
  };
  const mix = options.mix ?? (options.operations ? {} : { count: 1 });
  const result: [string, Operation, number][] = [];
  for (const [name, weight] of Object.entries(mix)) {
    if (weight && weight > 0 && name in builtins) {
      result.push([name, builtins[name as BuiltinOp], weight]);
    }
  }
  for (const [name, op] of Object.entries(options.operations ?? {})) {
    result.push([name, op, (mix as Record<string, number>)[name] ?? 1]);
  }
  if (result.length === 0) {
    throw new Error("A workload needs at least one operation with a weight above 0");
  }
  return result;
}

/**
 * Percentiles (nearest-rank) of sample durations per step and operation.
 *
 * @example
 * ```ts
 * summarize(load.samples, ["start", "year 1"]);
 * ```
 */
export function summarize(
  samples: readonly Sample[],
  stepOrder: readonly string[] = [],
): StepSummary[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const key = `${s.step}\u0000${s.op}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  const rows = [...groups].map(([key, list]): StepSummary => {
    const [step, op] = key.split("\u0000");
    const ok = list.filter((s) => s.ok).map((s) => s.ms).sort((a, b) => a - b);
    return {
      step,
      op,
      count: list.length,
      failed: list.length - ok.length,
      p50: percentile(ok, 50),
      p95: percentile(ok, 95),
      p99: percentile(ok, 99),
      max: ok.at(-1) ?? NaN,
    };
  });
  const rank = (step: string) => (stepOrder.indexOf(step) + 1 || stepOrder.length + 1);
  return rows.sort((a, b) => rank(a.step) - rank(b.step) || a.op.localeCompare(b.op));
}

/** Nearest-rank percentile of sorted values (NaN when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}
