import assert from "node:assert/strict";
import {
  callout,
  distributionPlot,
  mimeBundle,
  type ShardRow,
  show,
  table,
  verify,
  verifyThat,
} from "../lib/mod.ts";

const SHARDS: ShardRow[] = [
  {
    partition: "customer_0",
    schema: "public",
    parent: "customer",
    level: 1,
    kind: "local",
    bound: null,
    server: null,
    remoteTable: null,
    node: "eu_db_1",
    region: "eu-west-2",
    rows: 1012,
    bytes: 180224,
  },
  {
    partition: "customer_1",
    schema: "public",
    parent: "customer",
    level: 1,
    kind: "foreign",
    bound: null,
    server: "eu_db_2",
    remoteTable: "public.customer",
    node: "eu_db_2",
    region: "eu-west-2",
    rows: 988,
    bytes: 172032,
  },
  {
    partition: "customer_2",
    schema: "public",
    parent: "customer",
    level: 1,
    kind: "foreign",
    bound: null,
    server: "us_db_1",
    remoteTable: "public.customer",
    node: "us_db_1",
    region: "us-east-1",
    rows: 0,
    bytes: 8192,
  },
];

Deno.test("distributionPlot() renders an SVG with one bar and one label per partition", async () => {
  const figure = await distributionPlot(SHARDS, { title: "Year 1" });
  const html = figure.html;
  assert.match(html, /<svg[^>]*>/);
  const bars = html.match(/<g aria-label="bar"[^>]*>([\s\S]*?)<\/g>/)?.[1] ?? "";
  assert.equal(bars.match(/<rect /g)?.length, 3, "three bars");
  const labels = html.match(/<g aria-label="text"[^>]*>([\s\S]*?)<\/g>/)?.[1] ?? "";
  for (const n of ["1012", "988", "0"]) assert.ok(labels.includes(`>${n}<`), `label ${n}`);
  assert.ok(html.includes("Year 1"), "title");
  assert.ok(html.includes("us_db_1 (us-east-1)"), "legend names node and region");
  assert.ok(html.includes("rows stored on the node"), "axis label with unit");
  assert.equal(mimeBundle(figure)["text/html"], html);
});

Deno.test("distributionPlot() can show bytes in KiB instead of rows", async () => {
  const figure = await distributionPlot(SHARDS, { measure: "bytes" });
  assert.ok(figure.html.includes("size on disk (KiB)"));
  assert.ok(figure.html.includes(">176<"), "180224 bytes = 176 KiB");
});

Deno.test("distributionPlot() keeps each node's colour when a node that sorts first joins", async () => {
  const shard = (partition: string, node: string): ShardRow => ({
    ...SHARDS[0],
    partition,
    node,
    region: null,
  });
  const barFills = async (shards: ShardRow[]) => {
    const html = (await distributionPlot(shards)).html;
    const bars = html.match(/<g aria-label="bar"[^>]*>([\s\S]*?)<\/g>/)?.[1] ?? "";
    const fills = [...bars.matchAll(/fill="([^"]+)"/g)].map((m) => m[1]);
    return new Map(shards.map((s, i) => [s.node!, fills[i]]));
  };
  const before = await barFills([shard("t_eu", "zz_eu_db"), shard("t_us", "zz_us_db")]);
  const after = await barFills([
    shard("t_as", "zz_asia"),
    shard("t_eu", "zz_eu_db"),
    shard("t_us", "zz_us_db"),
  ]);
  assert.equal(before.size, 2);
  assert.notEqual(before.get("zz_eu_db"), before.get("zz_us_db"));
  assert.equal(after.get("zz_eu_db"), before.get("zz_eu_db"), "eu keeps its colour");
  assert.equal(after.get("zz_us_db"), before.get("zz_us_db"), "us keeps its colour");
  assert.equal(new Set(after.values()).size, 3, "the newcomer gets a colour of its own");

  // More nodes than colours over time: two nodes charted together still differ.
  for (let i = 0; i < 11; i++) await barFills([shard("t", `zz_many_${i}`)]);
  const pair = await barFills([shard("a", "zz_many_0"), shard("b", "zz_many_10")]);
  assert.notEqual(pair.get("zz_many_0"), pair.get("zz_many_10"));
});

Deno.test("table() renders rows as an HTML table and aligned text, escaping HTML", () => {
  const bundle = mimeBundle(table([{ name: "<b>x</b>", rows: 3, note: null }], { caption: "c" }));
  assert.match(bundle["text/html"], /<caption>c<\/caption>/);
  assert.ok(bundle["text/html"].includes("&lt;b&gt;x&lt;/b&gt;"));
  assert.ok(bundle["text/html"].includes('class="num">3<'));
  assert.ok(bundle["text/html"].includes("NULL"));
  assert.match(bundle["text/plain"], /name\s+\| rows \| note/);
});

Deno.test("verify() shows a passing check and throws on a failing one", () => {
  assert.match(mimeBundle(verify("rows", 2000, 2000))["text/plain"], /rows: 2000/);
  assert.throws(() => verify("rows", 1999, 2000), /Check failed: rows: expected 2000, got 1999/);
  assert.throws(
    () => verifyThat("even", false, "a: 1, b: 999"),
    /Check failed: even \(a: 1, b: 999\)/,
  );
});

Deno.test("callout() makes presenter notes visible with a label", () => {
  const bundle = mimeBundle(callout("presenter", "MENTION PAUSE"));
  assert.match(bundle["text/html"], /Presenter:<\/strong> MENTION PAUSE/);
  assert.match(bundle["text/plain"], /Presenter: MENTION PAUSE/);
});

Deno.test("show() prints the text form outside Jupyter instead of throwing", async () => {
  const printed: string[] = [];
  const original = console.log;
  console.log = (text: string) => printed.push(text);
  try {
    await show(table([{ a: 1 }]), callout("note", "hello"));
  } finally {
    console.log = original;
  }
  assert.equal(printed.length, 2);
  assert.match(printed[1], /Note: hello/);
});
