import assert from "node:assert/strict";
import {
  isWorkshopError,
  type Sample,
  shopCustomers,
  shopLatencyRows,
  shopTimeline,
  startCluster,
  startShop,
  type Workload,
} from "../lib/mod.ts";

const TABLES = `
  CREATE TABLE customer (id UUID PRIMARY KEY, country TEXT NOT NULL, email TEXT NOT NULL);
  CREATE SCHEMA shop;
  CREATE TABLE shop.purchase (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    country TEXT,
    customer_id UUID NOT NULL REFERENCES customer (id),
    amount DECIMAL NOT NULL
  );`;

/** A stand-in with a workload's data (samples, marks, clock) for the pure timeline functions. */
function recorded(
  from: string,
  startedMsAgo: number,
  samples: Partial<Sample>[],
  marks = [{ t: 0, step: "s" }],
): Workload {
  const full = samples.map((s) => ({ op: "purchase", ok: true, step: "s", ...s }) as Sample);
  return { from, samples: full, marks, elapsed: () => startedMsAgo } as unknown as Workload;
}

Deno.test("shopCustomers() gives the same ids for the same seed and country, others for another country", () => {
  const a = shopCustomers("uk", 4, { seed: 7 });
  const b = shopCustomers("uk", 4, { seed: 7 });
  const c = shopCustomers("us", 4, { seed: 7 });
  assert.deepEqual(a, b);
  assert.equal(new Set([...a, ...c].map((x) => x.id)).size, 8);
  assert.deepEqual(a.map((x) => x.email), [1, 2, 3, 4].map((i) => `uk_shopper_${i}@shop.test`));
  assert.ok(a.every((x) => x.country === "uk" && /^[0-9a-f-]{36}$/.test(x.id)));
  assert.throws(() => shopCustomers("uk", 0), (e) => isWorkshopError(e, "INVALID_SETTING"));
});

Deno.test("startShop() has every customer buy in turn, with the country when asked, into a qualified table", async () => {
  await using cluster = await startCluster({ name: "t-shop", nodes: [{ name: "eu_db" }] });
  const eu = cluster.node("eu_db");
  await eu.exec(TABLES);
  const customers = shopCustomers("jp", 3);
  await eu.sql`INSERT INTO customer ${eu.sql(customers, "id", "country", "email")}`;
  const shop = await startShop(eu, {
    customers,
    table: "shop.purchase",
    withCountry: true,
    intervalMs: 20,
  });
  await shop.waitForSamples(12);
  await shop.stop();
  assert.ok(
    shop.samples.every((s) => s.ok && s.op === "purchase"),
    JSON.stringify(shop.samples[0]),
  );
  const rows = await eu.sql`
    SELECT customer_id::text, country, count(*) AS n FROM shop.purchase GROUP BY 1, 2 ORDER BY 1`;
  assert.deepEqual(
    rows.map((r) => r.customer_id).sort(),
    customers.map((c) => c.id).sort(),
    "every customer bought something",
  );
  assert.ok(rows.every((r) => r.country === "jp"));
  const counts = rows.map((r) => r.n as number);
  assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `round robin: ${counts}`);
  assert.equal(counts.reduce((a, b) => a + b, 0), shop.acknowledged.length);
  assert.deepEqual(await shop.lostWrites("shop.purchase"), []);
});

Deno.test("startShop() refuses to open without customers", async () => {
  await using cluster = await startCluster({ name: "t-shop-empty", nodes: [{ name: "eu_db" }] });
  await assert.rejects(
    startShop(cluster.node("eu_db"), { customers: [] }),
    (e) => isWorkshopError(e, "INVALID_SETTING") && /without customers/.test(e.message),
  );
});

Deno.test("shopTimeline() puts shops started at different times on one clock and merges their marks", () => {
  const first = recorded("eu-west-2", 5000, [{ t: 100, ms: 1 }], [{ t: 0, step: "1" }, {
    t: 3000,
    step: "3",
  }]);
  const second = recorded("us-east-1", 2000, [{ t: 10, ms: 8 }], [{ t: 0, step: "3" }]);
  const timeline = shopTimeline([first, second]);
  assert.deepEqual(
    timeline.samples.map((s) => [s.t, s.op]),
    [[100, "purchase from London (eu-west-2)"], [3010, "purchase from N. Virginia (us-east-1)"]],
  );
  assert.deepEqual(timeline.marks, [{ t: 0, step: "1" }, { t: 3000, step: "3" }]);
  assert.deepEqual(shopTimeline([]), { samples: [], marks: [] });
});

Deno.test("shopLatencyRows() gives the median per region without each connection's first purchase or failures", () => {
  const us = recorded("us-east-1", 0, [
    { t: 0, ms: 300 }, // opens the connection
    { t: 1, ms: 250 }, // started before the first one finished: first round too
    { t: 400, ms: 8 },
    { t: 500, ms: 9 },
    { t: 600, ms: 10 },
    { t: 700, ms: 999, ok: false },
    { t: 800, ms: 7, step: "other" },
  ]);
  const [row] = shopLatencyRows([us], { step: "before", onlyStep: "s" });
  assert.equal(row.region, "us-east-1");
  assert.equal(row.step, "before");
  assert.deepEqual(row.samples, [8, 9, 10]);
  assert.equal(row.ms, 9);
  assert.equal(shopLatencyRows([us], { step: "all" })[0].samples.length, 4);
});
