/**
 * A TCP delay proxy that makes simulated region latency real on loopback.
 *
 * Every link that crosses regions (a client talking to a node in another
 * region, a postgres_fdw connection between nodes) goes through one of these.
 * Bytes pass unchanged; only time is added, per direction, in order, with
 * Nagle off. Each direction keeps a queue of chunks, each due at its arrival
 * time plus the one-way delay (never earlier than the chunk before it); a
 * writer sends each chunk when it is due. When one side ends, what is pending
 * is delivered and the end is passed on (a half-close); an error on either
 * side closes both.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { WorkshopError } from "./errors.ts";
import { seededRandom } from "./random.ts";

/** Options for {@link startDelayProxy}. */
export interface DelayProxyOptions {
  /** One-way delay in ms added to every chunk in each direction. A function is read per chunk, so a live settings change (latency scale) applies at once. @default 0 */
  oneWayMs?: number | (() => number);
  /** Jitter as a fraction of the one-way delay, drawn from `rng`; it only adds time, and never makes a chunk overtake an earlier one. @default 0.02 */
  jitter?: number;
  /** Random source for jitter. @default seededRandom() */
  rng?: () => number;
  /** Address to listen on. @default "127.0.0.1" */
  listenHost?: string;
  /** Port to listen on; 0 picks a free one. @default 0 */
  listenPort?: number;
  /** Name shown in errors and stats, e.g. "eu-west-2 -> us_db_1". @default "<listen address> -> <target address>" */
  label?: string;
  /**
   * Bytes to send the client when the target refuses the connection, before
   * closing it (after the one-way delay). A client that sees its connection
   * accepted and then closed may retry forever; a protocol error tells it
   * the truth. @default nothing: the client connection is just closed
   */
  refusal?: (error: unknown) => Uint8Array;
}

/** A running delay proxy; `await using` closes it. */
export interface DelayProxy extends AsyncDisposable {
  /** Address the proxy listens on. */
  readonly host: string;
  /** Port the proxy listens on. */
  readonly port: number;
  /** Name shown in errors and stats. */
  readonly label: string;
  /** Where every accepted connection is forwarded. */
  readonly target: { host: string; port: number };
  /** Open client connections right now. */
  readonly activeConnections: number;
  /** Totals since start: connections accepted, bytes each way, and for tests the smallest hold time (ms) any chunk got. */
  stats(): { connections: number; bytesUp: number; bytesDown: number; minHoldMs: number | null };
  /** Stops listening, closes every connection, resolves when all are closed. Idempotent. */
  close(): Promise<void>;
}

const READ_SIZE = 64 * 1024;
/** Bytes one direction may hold before it stops reading (a memory bound, like a TCP window). */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;
/** How late a Deno timer fires after the time asked, about (measured: 1.1 ms). */
const TIMER_LATE_MS = 1;

/**
 * Starts a proxy that forwards every connection to `target`, adding
 * `oneWayMs` to each direction.
 *
 * @param target Host and port to forward to, e.g. a PostgreSQL node.
 * @param options Delay, jitter, listen address and label; see {@link DelayProxyOptions}.
 * @returns The running proxy; connect to its `host` and `port`.
 * @throws {WorkshopError} `PORT_IN_USE` when `listenPort` is taken, `INVALID_SETTING` for a bad delay or jitter.
 * @example
 * ```ts
 * await using proxy = await startDelayProxy({ host: "127.0.0.1", port: 5433 }, {
 *   oneWayMs: () => 38 * settings().latencyScale, // London <-> N. Virginia, 76 ms round trip
 *   label: "eu-west-2 -> us_db_1",
 * });
 * const sql = postgres({ host: proxy.host, port: proxy.port });
 * ```
 */
// deno-lint-ignore require-await -- async so that every failure rejects the promise, never throws
export async function startDelayProxy(
  target: { host: string; port: number },
  options: DelayProxyOptions = {},
): Promise<DelayProxy> {
  const { oneWayMs = 0, jitter = 0.02, rng = seededRandom(), listenHost = "127.0.0.1" } = options;
  const listenPort = options.listenPort ?? 0;
  const name = options.label ?? `proxy to ${target.host}:${target.port}`;
  const invalid = (what: string, fix: string) =>
    new WorkshopError("INVALID_SETTING", `Invalid ${what} for "${name}"`, { fix });
  if (typeof oneWayMs === "number" && !(oneWayMs >= 0 && Number.isFinite(oneWayMs))) {
    throw invalid(`one-way delay ${oneWayMs} ms`, "Use ms >= 0, or a function returning them");
  }
  if (!(jitter >= 0 && jitter <= 1)) {
    throw invalid(`jitter ${jitter}`, "Use a fraction of the one-way delay from 0 to 1, e.g. 0.02");
  }
  const delayOf = typeof oneWayMs === "function" ? oneWayMs : () => oneWayMs;
  const holdFor = () => {
    const base = Math.max(0, delayOf()) || 0; // NaN and negatives mean no delay
    return base === 0 ? 0 : base * (1 + jitter * rng());
  };

  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: listenHost, port: listenPort, transport: "tcp" });
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    const message = `Cannot start "${name}": port ${listenPort} is already in use`;
    const fix = `Leave listenPort unset (0) to pick a free port, or stop what listens on ` +
      `${listenPort} (lsof -i :${listenPort})`;
    throw new WorkshopError("PORT_IN_USE", message, { fix, cause: error });
  }
  listener.unref(); // a forgotten proxy never keeps the process alive
  const port = (listener.addr as Deno.NetAddr).port;
  const label = options.label ?? `${listenHost}:${port} -> ${target.host}:${target.port}`;
  const totals = { connections: 0, bytesUp: 0, bytesDown: 0, minHoldMs: null as number | null };
  const held = (ms: number) => (totals.minHoldMs = Math.min(totals.minHoldMs ?? ms, ms));
  const open = new Map<AbortController, Promise<void>>();
  let closed = false;

  async function serve(client: Deno.TcpConn, abort: AbortController): Promise<void> {
    const sockets = new Set([client]);
    const closeAll = () => {
      for (const socket of sockets) tryTo(() => socket.close());
      sockets.clear();
    };
    abort.signal.addEventListener("abort", closeAll, { once: true });
    try {
      client.setNoDelay(true);
      let server: Deno.TcpConn;
      try {
        server = await Deno.connect({ hostname: target.host, port: target.port });
      } catch (error) {
        if (options.refusal && !abort.signal.aborted) {
          await new Promise((resolve) => setTimeout(resolve, holdFor()));
          await writeAll(client, options.refusal(error)).catch(() => {});
        }
        return;
      }
      sockets.add(server);
      if (abort.signal.aborted) return;
      server.setNoDelay(true);
      await Promise.all([
        pipe(client, server, abort, { holdFor, held, sent: (n) => (totals.bytesUp += n) }),
        pipe(server, client, abort, { holdFor, held, sent: (n) => (totals.bytesDown += n) }),
      ]);
    } catch {
      // the target refused or vanished: drop the client at once
    } finally {
      abort.abort();
      closeAll();
    }
  }

  (async () => {
    while (!closed) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch (error) {
        if (closed || error instanceof Deno.errors.BadResource) return;
        // a client that reset before accept, or no file descriptors left: try again shortly
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      if (closed) return tryTo(() => client.close());
      totals.connections++;
      const abort = new AbortController();
      open.set(abort, serve(client, abort).finally(() => open.delete(abort)));
    }
  })();

  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      closed = true;
      // The accept loop is not awaited: an unref'd accept that fails on close settles
      // in a tick Deno may never run, and nothing else would keep the loop alive.
      tryTo(() => listener.close());
      for (const abort of open.keys()) abort.abort();
      await Promise.all(open.values());
    })();

  return {
    host: listenHost,
    port,
    label,
    target: { host: target.host, port: target.port },
    get activeConnections() {
      return open.size;
    },
    stats: () => ({ ...totals }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** What one direction of a link reads from, and reports to, its proxy. */
interface Lane {
  /** Hold time (ms) for the next chunk. */
  holdFor(): number;
  /** A chunk was held `ms` and is being written now. */
  held(ms: number): void;
  /** `bytes` were written to the far side. */
  sent(bytes: number): void;
}

/** Copies `src` to `dst`, holding each chunk until it is due. Never rejects: an error aborts the link. */
async function pipe(
  src: Deno.TcpConn,
  dst: Deno.TcpConn,
  abort: AbortController,
  lane: Lane,
): Promise<void> {
  const { signal } = abort;
  const queue: { bytes: Uint8Array; arrived: number; due: number }[] = [];
  let queued = 0; // bytes read and not yet written
  let lastDue = 0; // due time of the previous chunk: a later chunk is never due before it
  let ended = false; // src has sent its end
  let waiters: (() => void)[] = []; // the reader or writer, waiting for the queue to change
  const notify = () => {
    for (const wake of waiters) wake();
    waiters = [];
  };
  const changed = () => new Promise<void>((resolve) => waiters.push(resolve));
  signal.addEventListener("abort", notify, { once: true });

  async function read(): Promise<void> {
    const buffer = new Uint8Array(READ_SIZE);
    while (!signal.aborted) {
      const n = await src.read(buffer);
      if (n === null) break;
      const arrived = performance.now();
      lastDue = Math.max(arrived + lane.holdFor(), lastDue);
      queue.push({ bytes: buffer.slice(0, n), arrived, due: lastDue });
      queued += n;
      notify();
      while (queued > MAX_QUEUED_BYTES && !signal.aborted) await changed();
    }
    ended = true;
    notify();
  }

  async function write(): Promise<void> {
    while (!signal.aborted) {
      const chunk = queue.shift();
      if (chunk === undefined) {
        if (ended) return await dst.closeWrite(); // all delivered: pass the end on
        await changed();
        continue;
      }
      await sleepUntil(chunk.due, signal);
      if (signal.aborted) return;
      lane.held(performance.now() - chunk.arrived);
      for (let sent = 0; sent < chunk.bytes.length;) {
        sent += await dst.write(chunk.bytes.subarray(sent)); // a write may take only part
      }
      lane.sent(chunk.bytes.length);
      queued -= chunk.bytes.length;
      notify();
    }
  }

  const fail = () => abort.abort(); // closes both sockets; a no-op when already aborted
  await Promise.all([read().catch(fail), write().catch(fail)]);
}

/**
 * Waits until `performance.now() >= due`, or until `signal` aborts. Deno's
 * timers fire about 1 ms after the time asked (`setTimeout(0)` takes ~2 ms),
 * so the timer is set that much early and the last millisecond is spent
 * yielding to the event loop; the chunk is never released early.
 */
async function sleepUntil(due: number, signal: AbortSignal): Promise<void> {
  for (let wait = due - performance.now(); wait > 0 && !signal.aborted;) {
    if (wait > TIMER_LATE_MS) await sleep(wait - TIMER_LATE_MS, signal);
    else await new Promise((resolve) => setImmediate(resolve));
    wait = due - performance.now();
  }
}

/** Waits `ms`, or less when `signal` aborts; leaves no timer behind. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

function tryTo(action: () => void): void {
  try {
    action();
  } catch {
    // already closed
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
}

/**
 * A PostgreSQL `ErrorResponse` (FATAL, SQLSTATE 08006) for {@link DelayProxyOptions.refusal},
 * so that a client connecting through a proxy to a stopped node fails at
 * once with this message, as it would connecting directly.
 *
 * @example
 * ```ts
 * startDelayProxy(target, { refusal: () => postgresRefusal('node "us_db_1" is not running') });
 * ```
 */
export function postgresRefusal(message: string): Uint8Array {
  const encoder = new TextEncoder();
  const fields = [["S", "FATAL"], ["V", "FATAL"], ["C", "08006"], ["M", message]]
    .map(([code, value]) => encoder.encode(`${code}${value}\0`));
  const body = new Uint8Array([...fields.flatMap((f) => [...f]), 0]);
  const out = new Uint8Array(5 + body.length);
  out[0] = "E".charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}
