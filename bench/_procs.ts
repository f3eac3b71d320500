/**
 * Memory of a process tree, sampled while it runs: the bench's whole-kit
 * run starts `deno task report` and samples every PostgreSQL process that
 * descends from it (the notebooks' kernels start the nodes, so the nodes
 * are the report's descendants; servers of other programs on the machine
 * are not).
 *
 * Two sums per sample: RSS (what `ps -o rss` shows; shared buffers touched
 * by several backends count once per backend) and, on Linux, PSS (shared
 * pages split between the processes sharing them, so the sum is the real
 * footprint).
 *
 * @module
 */

/** One process as read from /proc (or ps). */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Command name (`comm`), e.g. "postgres". */
  name: string;
  /** Resident set size in KiB. */
  rssKiB: number;
  /** CPU time of the process and of its children that ended, in clock ticks (1/100 s); 0 from ps. */
  cpuTicks: number;
}

/** Every process on the machine (Linux /proc; elsewhere `ps`). */
export function listProcesses(): ProcessInfo[] {
  try {
    return listFromProc();
  } catch {
    return listFromPs();
  }
}

function listFromProc(): ProcessInfo[] {
  const result: ProcessInfo[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // pid (comm) state ppid ... ; comm may hold spaces and parentheses
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      const fields = stat.slice(close + 2).split(" ");
      const ppid = Number(fields[1]);
      const rssPages = Number(fields[21]);
      // utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after the comm
      const cpuTicks = fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0);
      result.push({ pid: Number(entry.name), ppid, name, rssKiB: rssPages * 4, cpuTicks });
    } catch {
      // the process ended while we read it
    }
  }
  return result;
}

function listFromPs(): ProcessInfo[] {
  const out = new Deno.Command("ps", {
    args: ["-A", "-o", "pid=,ppid=,rss=,comm="],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((line) => {
    const [pid, ppid, rss, ...name] = line.trim().split(/\s+/);
    return {
      pid: Number(pid),
      ppid: Number(ppid),
      rssKiB: Number(rss),
      cpuTicks: 0,
      name: name.join(" ").split("/").at(-1) ?? "",
    };
  });
}

/**
 * The processes that descend from `root` (children, grandchildren...),
 * `root` itself included.
 *
 * @example
 * ```ts
 * descendants(listProcesses(), child.pid).filter((p) => p.name === "postgres");
 * ```
 */
export function descendants(all: readonly ProcessInfo[], root: number): ProcessInfo[] {
  const children = new Map<number, ProcessInfo[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found: ProcessInfo[] = [];
  const self = all.find((p) => p.pid === root);
  if (self) found.push(self);
  const queue = [root];
  while (queue.length) {
    for (const child of children.get(queue.shift()!) ?? []) {
      if (child.pid === root) continue;
      found.push(child);
      queue.push(child.pid);
    }
  }
  return found;
}

/** Proportional set size of a process in KiB (Linux), or undefined. */
export function pssKiB(pid: number): number | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    const match = /^Pss:\s+(\d+) kB/m.exec(text);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** One memory sample of the tree. */
export interface MemorySample {
  /** ms since sampling started. */
  t: number;
  /** Label current when the sample was taken (the notebook running). */
  label: string;
  /** PostgreSQL processes in the tree. */
  postgresProcesses: number;
  /** Sum of their RSS, KiB. */
  postgresRssKiB: number;
  /** Sum of their PSS, KiB (0 where PSS cannot be read). */
  postgresPssKiB: number;
  /** Sum of RSS of every process in the tree (kernels, Jupyter, Redis...), KiB. */
  treeRssKiB: number;
}

/** Options for {@link sampleMemory}. */
export interface SampleMemoryOptions {
  /** Pause between samples. @default 200 */
  intervalMs?: number;
  /** Command name of the processes to sum. @default "postgres" */
  name?: string;
}

/** A running sampler; see {@link sampleMemory}. */
export interface MemorySampler {
  /** Samples so far. */
  readonly samples: MemorySample[];
  /** Sets the label later samples carry. */
  label(text: string): void;
  /** Stops sampling and returns the samples. */
  stop(): MemorySample[];
}

/**
 * Samples the memory of the processes that descend from `root` every
 * `intervalMs` until stopped.
 *
 * @example
 * ```ts
 * const sampler = sampleMemory(child.pid);
 * await child.status;
 * const peak = Math.max(...sampler.stop().map((s) => s.postgresRssKiB));
 * ```
 */
export function sampleMemory(root: number, options: SampleMemoryOptions = {}): MemorySampler {
  const interval = options.intervalMs ?? 200;
  const name = options.name ?? "postgres";
  const samples: MemorySample[] = [];
  const started = performance.now();
  let label = "";
  const take = () => {
    const tree = descendants(listProcesses(), root);
    const pg = tree.filter((p) => p.name === name);
    samples.push({
      t: Math.round(performance.now() - started),
      label,
      postgresProcesses: pg.length,
      postgresRssKiB: pg.reduce((s, p) => s + p.rssKiB, 0),
      postgresPssKiB: pg.reduce((s, p) => s + (pssKiB(p.pid) ?? 0), 0),
      treeRssKiB: tree.reduce((s, p) => s + p.rssKiB, 0),
    });
  };
  take();
  const timer = setInterval(take, interval);
  return {
    samples,
    label: (text) => label = text,
    stop: () => {
      clearInterval(timer);
      return samples;
    },
  };
}

/** The sample with the largest value of `key`, or undefined when there are none. */
export function peakOf(
  samples: readonly MemorySample[],
  key: "postgresRssKiB" | "postgresPssKiB" | "treeRssKiB",
): MemorySample | undefined {
  return samples.reduce<MemorySample | undefined>(
    (m, s) => (!m || s[key] > m[key] ? s : m),
    undefined,
  );
}
