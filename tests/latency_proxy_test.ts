import assert from "node:assert/strict";
import { startDelayProxy } from "../lib/latency_proxy.ts";
import { isWorkshopError } from "../lib/errors.ts";
import { seededRandom } from "../lib/random.ts";

// A London <-> N. Virginia round trip (76 ms), as in lib/regions.ts.
const LONDON_VIRGINIA_ONE_WAY_MS = 38;

/** An echo server on a free port: writes back every byte, and ends when the client ends. */
function startEcho() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const serving = (async () => {
    const handlers: Promise<void>[] = [];
    for await (const conn of listener) {
      conns.add(conn);
      handlers.push((async () => {
        try {
          const buffer = new Uint8Array(64 * 1024);
          while (true) {
            const n = await conn.read(buffer);
            if (n === null) break;
            await writeAll(conn, buffer.subarray(0, n));
          }
          await conn.closeWrite(); // the client ended: end the echo too
        } catch {
          // the proxy closed the link
        } finally {
          conns.delete(conn);
          try {
            conn.close();
          } catch { /* closed already */ }
        }
      })());
    }
    await Promise.all(handlers);
  })();
  return {
    host: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await serving;
    },
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
}

/** Reads until the peer ends (or `limit` bytes arrived) and returns everything read. */
async function readAll(conn: Deno.Conn, limit = Infinity): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  while (total < limit) {
    const n = await conn.read(buffer.subarray(0, Math.min(buffer.length, limit - total)));
    if (n === null) break;
    parts.push(buffer.slice(0, n));
    total += n;
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    all.set(part, offset);
    offset += part.length;
  }
  return all;
}

function payload(size: number, seed: number): Uint8Array {
  const rng = seededRandom(seed);
  return Uint8Array.from({ length: size }, () => Math.floor(rng() * 256));
}

/** Sends `bytes`, half-closes, and returns what comes back before the echo ends. */
async function echoThrough(port: number, bytes: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const [, received] = await Promise.all([
      writeAll(conn, bytes).then(() => conn.closeWrite()),
      readAll(conn),
    ]);
    return received;
  } finally {
    conn.close();
  }
}

/** Round-trip times (ms) of `count` 32-byte ping-pongs on one connection. */
async function pingPongs(conn: Deno.Conn, count: number): Promise<number[]> {
  const ping = payload(32, 1);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await writeAll(conn, ping);
    assert.deepEqual(await readAll(conn, ping.length), ping);
    times.push(performance.now() - start);
  }
  return times;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Resolves with what `promise` gave, or rejects when it took longer than `ms` (a hang guard). */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} not done after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

Deno.test("startDelayProxy() delivers 1 byte, 64 KiB and 8 MiB intact and in order", async () => {
  await using echo = startEcho();
  await using proxy = await startDelayProxy(echo, { oneWayMs: 2, jitter: 0.5 });
  for (const [size, seed] of [[1, 1], [64 * 1024, 2], [8 * 1024 * 1024, 3]]) {
    const sent = payload(size, seed);
    const received = await echoThrough(proxy.port, sent);
    assert.equal(received.length, sent.length, `${size} bytes sent`);
    assert.ok(received.every((byte, i) => byte === sent[i]), `${size} bytes differ`);
  }
  const stats = proxy.stats();
  assert.equal(stats.connections, 3);
  assert.equal(stats.bytesUp, 1 + 64 * 1024 + 8 * 1024 * 1024);
  assert.equal(stats.bytesDown, stats.bytesUp);
});

Deno.test("startDelayProxy() keeps 50 concurrent connections apart", async () => {
  await using echo = startEcho();
  await using proxy = await startDelayProxy(echo, { oneWayMs: 5 });
  const sent = Array.from({ length: 50 }, (_, i) => payload(16 * 1024 + i, 100 + i));
  const received = await Promise.all(sent.map((bytes) => echoThrough(proxy.port, bytes)));
  received.forEach((bytes, i) => assert.deepEqual(bytes, sent[i], `connection ${i}`));
  assert.equal(proxy.stats().connections, 50);
});

Deno.test("startDelayProxy() adds the one-way delay to each direction and never releases early", async () => {
  await using echo = startEcho();
  await using proxy = await startDelayProxy(echo, { oneWayMs: LONDON_VIRGINIA_ONE_WAY_MS });
  const conn = await Deno.connect({ hostname: proxy.host, port: proxy.port });
  try {
    const rtt = median(await pingPongs(conn, 15));
    const configured = 2 * LONDON_VIRGINIA_ONE_WAY_MS;
    console.log(`median round trip ${rtt.toFixed(1)} ms, configured ${configured} ms`);
    assert.ok(rtt >= configured, `median round trip ${rtt} ms < ${configured} ms`);
    assert.ok(rtt < 3 * configured, `median round trip ${rtt} ms, far above ${configured} ms`);
    assert.ok(proxy.stats().minHoldMs! >= LONDON_VIRGINIA_ONE_WAY_MS, `${proxy.stats().minHoldMs}`);
  } finally {
    conn.close();
  }
});

Deno.test("startDelayProxy() reads a oneWayMs function per chunk; 0 adds no delay", async () => {
  await using echo = startEcho();
  let oneWayMs = 30;
  await using proxy = await startDelayProxy(echo, { oneWayMs: () => oneWayMs });
  const conn = await Deno.connect({ hostname: proxy.host, port: proxy.port });
  try {
    const slow = median(await pingPongs(conn, 5));
    assert.ok(slow >= 60, `median round trip ${slow} ms with 30 ms each way`);
    oneWayMs = 0;
    const fast = median(await pingPongs(conn, 15));
    console.log(`median round trip ${fast.toFixed(2)} ms, configured 0 ms`);
    assert.ok(fast < 20, `median round trip ${fast} ms with no delay`);
    oneWayMs = 15;
    const again = median(await pingPongs(conn, 5));
    assert.ok(again >= 30 && again < 90, `median round trip ${again} ms with 15 ms each way`);
  } finally {
    conn.close();
  }
});

Deno.test("startDelayProxy() close() closes connections, frees the port and is idempotent", async () => {
  await using echo = startEcho();
  const proxy = await startDelayProxy(echo, { oneWayMs: 5 });
  const conns = await Promise.all(
    [1, 2, 3].map(() => Deno.connect({ hostname: proxy.host, port: proxy.port })),
  );
  for (const conn of conns) await pingPongs(conn, 1); // every link is up
  assert.equal(proxy.activeConnections, 3);

  await proxy.close();
  assert.equal(proxy.activeConnections, 0);
  for (const conn of conns) {
    const end = await conn.read(new Uint8Array(1)).catch((error) => error);
    assert.ok(end === null || end instanceof Deno.errors.ConnectionReset, `read gave ${end}`);
    conn.close();
  }
  await proxy.close(); // a second close resolves too
  const again = Deno.listen({ hostname: proxy.host, port: proxy.port });
  again.close();
});

Deno.test("startDelayProxy() close() drops held chunks without waiting for them", async () => {
  await using echo = startEcho();
  const proxy = await startDelayProxy(echo, { oneWayMs: 60_000 });
  const conn = await Deno.connect({ hostname: proxy.host, port: proxy.port });
  await writeAll(conn, payload(1000, 4)); // held for a minute
  while (proxy.activeConnections === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  await within(2000, "close()", proxy.close());
  assert.equal(await conn.read(new Uint8Array(1)).catch(() => null), null);
  assert.equal(proxy.stats().bytesUp, 0);
  conn.close();
});

Deno.test("startDelayProxy() closes the client at once when the target refuses", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const target = { host: "127.0.0.1", port: (free.addr as Deno.NetAddr).port };
  free.close(); // nothing listens there now
  await using proxy = await startDelayProxy(target, { oneWayMs: 38 });
  const conn = await Deno.connect({ hostname: proxy.host, port: proxy.port });
  try {
    const end = await within(2000, "close", conn.read(new Uint8Array(1)).catch((error) => error));
    assert.ok(end === null || end instanceof Deno.errors.ConnectionReset, `read gave ${end}`);
    assert.equal(proxy.activeConnections, 0);
  } finally {
    conn.close();
  }
});

Deno.test("startDelayProxy() throws PORT_IN_USE for a listenPort that is taken", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  await assert.rejects(
    startDelayProxy({ host: "127.0.0.1", port: 1 }, {
      listenPort: port,
      label: "eu-west-2 -> us_db_1",
    }),
    (error) => isWorkshopError(error, "PORT_IN_USE") && error.message.includes(`port ${port}`),
  );
});

Deno.test("startDelayProxy() throws INVALID_SETTING for a negative delay or a jitter above 1", async () => {
  const target = { host: "127.0.0.1", port: 1 };
  await assert.rejects(
    startDelayProxy(target, { oneWayMs: -5 }),
    (error) => isWorkshopError(error, "INVALID_SETTING") && error.message.includes("-5 ms"),
  );
  await assert.rejects(
    startDelayProxy(target, { jitter: 2 }),
    (error) => isWorkshopError(error, "INVALID_SETTING") && error.message.includes("jitter 2"),
  );
});

Deno.test("startDelayProxy() never keeps a process alive when it is not closed", async () => {
  const module = new URL("../lib/latency_proxy.ts", import.meta.url).href;
  const script = `import { startDelayProxy } from "${module}";
    const proxy = await startDelayProxy({ host: "127.0.0.1", port: 1 }, { oneWayMs: 38 });
    console.log(proxy.port);`;
  const child = new Deno.Command(Deno.execPath(), { args: ["eval", script], stdout: "piped" })
    .spawn();
  const { success, stdout } = await within(20_000, "Process exit", child.output())
    .catch((error) => {
      child.kill();
      throw error;
    });
  assert.ok(success);
  assert.match(new TextDecoder().decode(stdout), /^\d+\n$/); // it started, printed, and ended
});
