/**
 * Lesson 02, manual sharding by country: section resets, the notebook's
 * small helpers, and the exercises.
 *
 * The cluster: `eu_db` (London, the coordinator), `eu_db_2` (London),
 * `us_db` (N. Virginia) and `jp_db` (Tokyo). `global.customer` on `eu_db` is
 * LIST-partitioned by country; the partitions `eu.customer`, `us.customer`
 * and `jp.customer` are postgres_fdw foreign tables whose rows live in the
 * table of the same name on the shard's node; everything else lands in the
 * local `global.customer_default`.
 *
 * ```ts
 * import { lesson02 } from "../lib/mod.ts";
 * await lesson02.reset(cluster, "direct-inserts"); // the state at the start of section 6
 * ```
 *
 * @module
 */

import type { Cluster, NodeOptions } from "../cluster.ts";
import { WorkshopError } from "../errors.ts";
import { defineExercise } from "../exercises.ts";
import { linkNodes } from "../fdw.ts";
import { type PartitionRow, partitionTree } from "../inspect.ts";
import type { Node } from "../node.ts";
import type { RegionId } from "../regions.ts";
import { type ShopCustomer, shopCustomers } from "../shop.ts";
import { currentRun } from "../_runs.ts";
import { freePort } from "../ports.ts";
import { pgBinaries, pgRunAs } from "../providers/_pg_binaries.ts";

/** Notebook this module belongs to. */
export const NOTEBOOK = "02_manual_sharding";

/** The sections of the notebook, in order; {@link reset} brings a cluster to the start of any. */
export const SECTIONS = [
  "before",
  "expand-uk",
  "us-jp-arrive",
  "shard",
  "all-data-on-all-nodes",
  "direct-inserts",
  "purchase",
  "after",
  "exercises",
] as const;

/** A section name, see {@link SECTIONS}. */
export type Section = typeof SECTIONS[number];

/** The lesson's nodes. */
export const NODES = {
  eu_db: { name: "eu_db", region: "eu-west-2", role: "coordinator" },
  eu_db_2: { name: "eu_db_2", region: "eu-west-2", role: "shard" },
  us_db: { name: "us_db", region: "us-east-1", role: "shard" },
  jp_db: { name: "jp_db", region: "ap-northeast-1", role: "shard" },
} as const satisfies Record<string, NodeOptions>;

/** One shard of `global.customer`: schema, node and the countries routed to it (the source's lists). */
export interface Shard {
  schema: string;
  node: string;
  region: RegionId;
  countries: readonly string[];
}

/** The source's country lists and where each lives. */
export const SHARDS: readonly Shard[] = [
  { schema: "eu", node: "eu_db_2", region: "eu-west-2", countries: ["de", "fr", "ei", "uk"] },
  { schema: "us", node: "us_db", region: "us-east-1", countries: ["us", "mx", "ca", "br"] },
  { schema: "jp", node: "jp_db", region: "ap-northeast-1", countries: ["jp", "zh", "in", "sg"] },
];

/** Countries the notebook sends to the default partition. */
export const DEFAULT_ROWS = [
  { country: "ie", email: "ie_a@gmail.com" },
  { country: "cn", email: "cn_a@gmail.com" },
  { country: "au", email: "au_a@gmail.com" },
  { country: "au", email: "au_b@gmail.com" },
] as const;

/**
 * The shop's customers: 4 in the UK, 3 in the US, 3 in Japan (seeded ids, the same on every run).
 *
 * @example
 * ```ts
 * const { eu, us, jp } = lesson02.shoppers();
 * ```
 */
export function shoppers(): { eu: ShopCustomer[]; us: ShopCustomer[]; jp: ShopCustomer[] } {
  return { eu: shopCustomers("uk", 4), us: shopCustomers("us", 3), jp: shopCustomers("jp", 3) };
}

/** Rows the notebook inserts straight into the shards in section 6, with the node they went to. */
export const DIRECT_INSERTS = {
  right: [
    "jp_direct@gmail.com",
    "us_direct@gmail.com",
    "de_direct@gmail.com",
    "fr_direct@gmail.com",
  ],
  misrouted: ["us_in_jp@gmail.com", "us_in_eu@gmail.com"],
  moved: "us_direct@gmail.com",
} as const;

// ---------------------------------------------------------------------------
// SQL shared by the resets (the notebook shows the same statements)

const CUSTOMER_COLUMNS = `
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    country TEXT NOT NULL,
    email TEXT NOT NULL`;

/**
 * The customer table of one shard, to run on the shard's node.
 *
 * @example
 * ```ts
 * await us.exec(workerCustomerDdl("us")); // CREATE SCHEMA us; CREATE TABLE us.customer ...
 * ```
 */
export function workerCustomerDdl(schema: string): string {
  return `CREATE SCHEMA IF NOT EXISTS ${schema};
  CREATE TABLE IF NOT EXISTS ${schema}.customer (${CUSTOMER_COLUMNS}
  );`;
}

/**
 * The purchase table of one shard, next to its customers, to run on the shard's node.
 *
 * @example
 * ```ts
 * await us.exec(workerPurchaseDdl("us")); // ... REFERENCES us.customer (id)
 * ```
 */
export function workerPurchaseDdl(schema: string): string {
  return `CREATE TABLE IF NOT EXISTS ${schema}.purchase (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    country TEXT NOT NULL,
    customer_id UUID NOT NULL REFERENCES ${schema}.customer (id),
    amount DECIMAL NOT NULL
  );`;
}

const SLIPPED_LAYOUT = `
  CREATE SCHEMA IF NOT EXISTS global;
  CREATE SCHEMA IF NOT EXISTS eu;
  CREATE SCHEMA IF NOT EXISTS us;
  CREATE SCHEMA IF NOT EXISTS jp;

  CREATE TABLE IF NOT EXISTS global.customer (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    country TEXT NOT NULL,
    email TEXT NOT NULL
  ) PARTITION BY LIST (country);

  CREATE FOREIGN TABLE IF NOT EXISTS eu.customer PARTITION OF global.customer
    FOR VALUES IN ('de', 'fr', 'ei', 'uk')
    SERVER eu_db_2 OPTIONS (schema_name 'eu', table_name 'customer');

  CREATE FOREIGN TABLE IF NOT EXISTS us.customer PARTITION OF global.customer
    FOR VALUES IN ('us', 'mx', 'ca', 'br')
    SERVER eu_db_2 OPTIONS (schema_name 'eu', table_name 'customer');

  CREATE FOREIGN TABLE IF NOT EXISTS jp.customer PARTITION OF global.customer
    FOR VALUES IN ('jp', 'zh', 'in', 'sg')
    SERVER eu_db_2 OPTIONS (schema_name 'eu', table_name 'customer');

  CREATE TABLE IF NOT EXISTS global.customer_default PARTITION OF global.customer DEFAULT;`;

const SOURCE_TEST_ROWS = `
  INSERT INTO global.customer (country, email) VALUES
    ('de', 'uk_a@gmail.com'),
    ('fr', 'uk_a@gmail.com'),
    ('ei', 'uk_a@gmail.com'),
    ('uk', 'uk_a@gmail.com'),
    ('us', 'us_a@gmail.com'),
    ('mx', 'us_a@gmail.com'),
    ('ca', 'us_a@gmail.com'),
    ('br', 'us_a@gmail.com'),
    ('jp', 'jp_a@gmail.com'),
    ('zh', 'jp_a@gmail.com'),
    ('in', 'jp_a@gmail.com'),
    ('sg', 'jp_a@gmail.com');`;

const FIX_LAYOUT = `
  BEGIN;
  DROP FOREIGN TABLE us.customer;
  DROP FOREIGN TABLE jp.customer;

  CREATE FOREIGN TABLE us.customer PARTITION OF global.customer
    FOR VALUES IN ('us', 'mx', 'ca', 'br')
    SERVER us_db OPTIONS (schema_name 'us', table_name 'customer');

  CREATE FOREIGN TABLE jp.customer PARTITION OF global.customer
    FOR VALUES IN ('jp', 'zh', 'in', 'sg')
    SERVER jp_db OPTIONS (schema_name 'jp', table_name 'customer');
  COMMIT;

  BEGIN;
  INSERT INTO global.customer
    SELECT * FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
  DELETE FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
  COMMIT;`;

const CO_LOCATED_PURCHASE = `
  CREATE TABLE IF NOT EXISTS global.purchase (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    country TEXT NOT NULL,
    customer_id UUID NOT NULL,
    amount DECIMAL NOT NULL
  ) PARTITION BY LIST (country);

  CREATE FOREIGN TABLE IF NOT EXISTS eu.purchase PARTITION OF global.purchase
    FOR VALUES IN ('de', 'fr', 'ei', 'uk')
    SERVER eu_db_2 OPTIONS (schema_name 'eu', table_name 'purchase');
  CREATE FOREIGN TABLE IF NOT EXISTS us.purchase PARTITION OF global.purchase
    FOR VALUES IN ('us', 'mx', 'ca', 'br')
    SERVER us_db OPTIONS (schema_name 'us', table_name 'purchase');
  CREATE FOREIGN TABLE IF NOT EXISTS jp.purchase PARTITION OF global.purchase
    FOR VALUES IN ('jp', 'zh', 'in', 'sg')
    SERVER jp_db OPTIONS (schema_name 'jp', table_name 'purchase');

  -- the default partitions are both local on eu_db, so a plain foreign key works between them
  CREATE TABLE IF NOT EXISTS global.purchase_default PARTITION OF global.purchase DEFAULT;
  ALTER TABLE global.customer_default ADD PRIMARY KEY (id);
  ALTER TABLE global.purchase_default
    ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (customer_id) REFERENCES global.customer_default (id);`;

// ---------------------------------------------------------------------------
// Section resets

/**
 * Brings a cluster, fresh or broken, to the state at the start of `section`:
 * drops everything the lesson creates on every node, starts the nodes the
 * section needs (and removes others), then replays the earlier sections'
 * statements. The shop's background purchases are replaced by a few fixed
 * purchases per customer. Stop running shops before resetting.
 *
 * @returns The nodes the section starts with, by name.
 * @throws {WorkshopError} `INVALID_SETTING` for an unknown section.
 * @example
 * ```ts
 * await lesson02.reset(cluster, "direct-inserts");
 * ```
 */
export async function reset(cluster: Cluster, section: Section): Promise<Record<string, Node>> {
  const index = SECTIONS.indexOf(section);
  if (index < 0) {
    throw new WorkshopError("INVALID_SETTING", `Unknown section "${section}" of lesson 02`, {
      fix: `Use one of: ${SECTIONS.join(", ")}`,
    });
  }
  const wanted = index <= 1 ? ["eu_db"] : index <= 3 ? ["eu_db", "eu_db_2"] : Object.keys(NODES);
  for (const node of cluster.nodes) {
    if (!wanted.includes(node.name)) await cluster.removeNode(node.name);
  }
  for (const name of wanted) {
    const spec = NODES[name as keyof typeof NODES];
    if (cluster.has(name)) {
      const node = cluster.node(name);
      if (node.region !== spec.region || node.role !== spec.role || node.stopped) {
        await cluster.removeNode(name);
      }
    }
    await cluster.addNode(spec);
  }
  await Promise.all(cluster.nodes.map(wipe));
  const steps = [
    buildBefore,
    buildExpandUk,
    buildUsJpArrive,
    buildShard,
    buildFix,
    buildDirectInserts,
    buildPurchase,
    buildAfter,
  ];
  for (const step of steps.slice(0, index)) await step(cluster);
  return Object.fromEntries(cluster.nodes.map((n) => [n.name, n]));
}

/** Drops every table, schema, function and foreign server the lesson (or a learner) made. */
async function wipe(node: Node): Promise<void> {
  await node.exec(`
    DO $$ DECLARE r record; BEGIN
      FOR r IN SELECT nspname FROM pg_namespace
               WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%' LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
      END LOOP;
      FOR r IN SELECT format('public.%I', c.relname) AS rel, c.relkind FROM pg_class c
               WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'f', 'v', 'm') LOOP
        EXECUTE format('DROP %s IF EXISTS %s CASCADE',
          CASE r.relkind WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'v' THEN 'VIEW'
                         WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, r.rel);
      END LOOP;
      FOR r IN SELECT p.oid::regprocedure::text AS fn FROM pg_proc p
               WHERE p.pronamespace = 'public'::regnamespace
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.fn);
      END LOOP;
      FOR r IN SELECT srvname FROM pg_foreign_server LOOP
        EXECUTE format('DROP SERVER %I CASCADE', r.srvname);
      END LOOP;
    END $$;`);
}

async function buildBefore(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  await eu.exec(`
    CREATE TABLE IF NOT EXISTS customer (
      id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
      email TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS purchase (
      id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
      customer_id UUID NOT NULL REFERENCES customer(id),
      amount DECIMAL NOT NULL
    );`);
  const { eu: customers } = shoppers();
  await eu.sql`INSERT INTO customer ${eu.sql(customers, "id", "email")} ON CONFLICT DO NOTHING`;
  await simulatedPurchases(eu, customers);
}

async function simulatedPurchases(node: Node, customers: ShopCustomer[]): Promise<void> {
  await node.sql`
    INSERT INTO purchase (customer_id, amount)
    SELECT id::uuid, 10 + g FROM unnest(${customers.map((c) => c.id)}::text[]) AS id,
      generate_series(1, 3) AS g`;
}

async function buildExpandUk(cluster: Cluster): Promise<void> {
  await cluster.addNode(NODES.eu_db_2);
}

async function buildUsJpArrive(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  await eu.exec(
    `ALTER TABLE customer ADD COLUMN IF NOT EXISTS country TEXT NOT NULL DEFAULT 'uk';`,
  );
  const { us, jp } = shoppers();
  await eu.sql`INSERT INTO customer ${eu.sql([...us, ...jp], "id", "country", "email")}
    ON CONFLICT DO NOTHING`;
  await simulatedPurchases(eu, [...us, ...jp]);
}

async function buildShard(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  for (const shard of SHARDS) {
    const node = await cluster.addNode(NODES[shard.node as keyof typeof NODES]);
    await node.exec(workerCustomerDdl(shard.schema));
    await linkNodes(eu, node, { batchSize: 100 });
  }
  await eu.exec(SLIPPED_LAYOUT);
  await eu.exec(SOURCE_TEST_ROWS);
}

async function buildFix(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  await eu.exec(FIX_LAYOUT);
  await eu.exec(`INSERT INTO global.customer (country, email) VALUES
    ${DEFAULT_ROWS.map((r) => `('${r.country}', '${r.email}')`).join(",\n    ")};`);
  await eu.exec(`INSERT INTO global.customer (id, country, email)
    SELECT id, country, email FROM customer;`);
}

async function buildDirectInserts(cluster: Cluster): Promise<void> {
  const [eu, us, jp] = ["eu_db", "us_db", "jp_db"].map((n) => cluster.node(n));
  await jp.exec(`INSERT INTO jp.customer (country, email) VALUES ('jp', 'jp_direct@gmail.com');`);
  await us.exec(`INSERT INTO us.customer (country, email) VALUES ('us', 'us_direct@gmail.com');`);
  await eu.exec(`INSERT INTO eu.customer (country, email) VALUES ('de', 'de_direct@gmail.com');`);
  await eu.exec(`INSERT INTO eu.customer (country, email) VALUES ('fr', 'fr_direct@gmail.com');`);
  await jp.exec(`INSERT INTO jp.customer (country, email) VALUES ('us', 'us_in_jp@gmail.com');`);
  await eu.exec(`INSERT INTO eu.customer (country, email) VALUES ('us', 'us_in_eu@gmail.com');`);
  await eu.exec(`UPDATE global.customer SET country = 'jp' WHERE email = 'us_direct@gmail.com';`);
}

async function buildPurchase(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  await eu.exec(`DROP TABLE customer CASCADE;`);
  await eu.exec(`INSERT INTO purchase (customer_id, amount) VALUES (gen_random_uuid(), 19.99);`);
  await eu.exec(`INSERT INTO purchase (customer_id, amount)
    SELECT id, 42.00 FROM global.customer WHERE country = 'mx';`);
  await cluster.node("us_db").exec(`DELETE FROM us.customer WHERE country = 'mx';`);
  for (const shard of SHARDS) await cluster.node(shard.node).exec(workerPurchaseDdl(shard.schema));
  await eu.exec(CO_LOCATED_PURCHASE);
  await eu.exec(`INSERT INTO global.purchase (id, country, customer_id, amount)
    SELECT p.id, c.country, p.customer_id, p.amount
    FROM purchase p JOIN global.customer c ON c.id = p.customer_id;`);
  await eu.exec(`INSERT INTO global.purchase (country, customer_id, amount)
    SELECT 'jp', id, 9.99 FROM global.customer WHERE country = 'jp' AND email = 'jp_shopper_1@shop.test';`);
  await eu.exec(`INSERT INTO global.purchase (country, customer_id, amount)
    SELECT 'sg', id, 5.00 FROM global.customer WHERE country = 'jp' AND email = 'jp_shopper_1@shop.test';`);
}

async function buildAfter(cluster: Cluster): Promise<void> {
  const eu = cluster.node("eu_db");
  await eu.exec(`INSERT INTO global.purchase (country, customer_id, amount)
    SELECT country, id, 7.50 FROM global.customer WHERE email LIKE '%\\_shopper\\_%@shop.test';`);
  for (const shard of SHARDS) {
    await cluster.node(shard.node).exec(
      `INSERT INTO ${shard.schema}.purchase (country, customer_id, amount)
      SELECT country, id, 8.50 FROM ${shard.schema}.customer WHERE email LIKE '%\\_shopper\\_%@shop.test';`,
    );
  }
}

// ---------------------------------------------------------------------------
// Helpers the notebook uses

/** What {@link attempt} saw. */
export interface Attempt {
  /** Node the statement ran on. */
  node: string;
  /** The statement, whitespace condensed. */
  statement: string;
  /** "ok" or "ERROR". */
  outcome: "ok" | "ERROR";
  /** The error (with detail) or the notices the server sent. */
  says: string;
}

/**
 * Runs SQL that may fail on purpose and reports what PostgreSQL said, so a
 * notebook can show refusals as data (and verify them) instead of crashing.
 *
 * @example
 * ```ts
 * const a = await attempt(eu, `ALTER TABLE global.customer ADD PRIMARY KEY (id)`);
 * a.outcome; // "ERROR"
 * ```
 */
export async function attempt(node: Node, sql: string): Promise<Attempt> {
  const statement = sql.replace(/--[^\n]*/g, "").replace(/\s+/g, " ").trim();
  if (node.notices.length > 80) node.notices.splice(0, node.notices.length - 20); // room to see new ones
  const before = node.notices.length;
  try {
    await node.exec(sql);
    const notices = node.notices.slice(before).join("; ");
    return { node: node.name, statement, outcome: "ok", says: notices || "(nothing)" };
  } catch (error) {
    const e = error as { message: string; detail?: string };
    return {
      node: node.name,
      statement,
      outcome: "ERROR",
      says: e.detail ? `${e.message}. ${e.detail}` : e.message,
    };
  }
}

/**
 * Partition rows with schema-qualified names (the lesson's partitions are all called "customer"),
 * root first, then by name.
 *
 * @example
 * ```ts
 * sharedTargets(qualified(await partitionTree(eu, "global.customer")));
 * ```
 */
export function qualified<T extends PartitionRow>(rows: readonly T[]): T[] {
  return rows.map((r) => ({ ...r, partition: `${r.schema}.${r.partition}` }))
    .sort((a, b) => a.level - b.level || a.partition.localeCompare(b.partition));
}

/**
 * Rows of one lesson table stored on each node, counted on the node itself (not through the FDW).
 *
 * @example
 * ```ts
 * await show(table(await storedRows(cluster))); // eu_db: 0, eu_db_2: 12, ...
 * ```
 */
export async function storedRows(
  cluster: Cluster,
  table: "customer" | "purchase" = "customer",
): Promise<{ node: string; region: string; table: string; rows: number }[]> {
  const places = [
    { node: "eu_db", table: `global.${table}_default` },
    ...SHARDS.map((s) => ({ node: s.node, table: `${s.schema}.${table}` })),
  ];
  return await Promise.all(places.map(async (p) => {
    const node = cluster.node(p.node);
    const [schema, name] = p.table.split(".");
    const [{ n }] = await node.sql`SELECT count(*) AS n FROM ${node.sql(schema)}.${node.sql(name)}`;
    return { node: p.node, region: node.region, table: p.table, rows: n as number };
  }));
}

/** A customer stored on a node its country does not belong to. */
export interface MisplacedRow {
  node: string;
  table: string;
  id: string;
  country: string;
  email: string;
  /** Countries the partition in front of this table accepts. */
  accepts: string;
}

/**
 * Customers whose country does not match the partition bound of the foreign
 * partition that leads to their table: rows written around the router.
 * Read on each shard's node directly.
 *
 * @example
 * ```ts
 * (await misplacedCustomers(cluster)).map((m) => m.email); // ["us_in_eu@gmail.com", ...]
 * ```
 */
export async function misplacedCustomers(cluster: Cluster): Promise<MisplacedRow[]> {
  const tree = await partitionTree(cluster.node("eu_db"), "global.customer");
  const result: MisplacedRow[] = [];
  for (const leaf of tree.filter((p) => p.kind === "foreign" && p.node)) {
    const values = [...(leaf.bound ?? "").matchAll(/'([^']*)'/g)].map((m) => m[1]);
    const node = cluster.node(leaf.node!);
    const [schema, name] = leaf.remoteTable!.split(".");
    const rows = await node.sql`
      SELECT id::text, country, email FROM ${node.sql(schema)}.${node.sql(name)}
      WHERE country <> ALL(${values}::text[]) ORDER BY email`;
    for (const r of rows) {
      result.push({
        node: node.name,
        table: leaf.remoteTable!,
        id: r.id as string,
        country: r.country as string,
        email: r.email as string,
        accepts: values.join(", "),
      });
    }
  }
  return result;
}

/** What happened when a second postmaster was started on a running node's data directory. */
export interface SecondPostmaster {
  /** Exit code of the second `postgres` process. */
  exitCode: number;
  /** Whether PostgreSQL refused because of the lock file. */
  refused: boolean;
  /** Its log lines. */
  log: string;
  /** How long it ran, in ms. */
  ms: number;
}

/**
 * Starts a second `postgres` on the data directory of a running node, as the
 * source's copy-pasted `-v eu_db:/var/lib/postgresql/data` would, and
 * returns what PostgreSQL said. It reads `postmaster.pid`, finds the live
 * postmaster and exits before it touches anything; it listens on no address,
 * and if it were still running after 10 s it would be stopped at once.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when the node's data directory is not on this machine.
 * @example
 * ```ts
 * const second = await startSecondPostmaster(eu); // second.refused === true
 * ```
 */
export async function startSecondPostmaster(node: Node): Promise<SecondPostmaster> {
  if (!node.dataDir) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Cannot reach the data directory of "${node.name}" from this machine`,
      { fix: "Run this demonstration with the embedded provider (WORKSHOP_PROVIDER=embedded)" },
    );
  }
  const [bins, user, run] = await Promise.all([pgBinaries(), pgRunAs(), currentRun()]);
  const started = performance.now();
  const child = new Deno.Command(bins.postgres, {
    args: ["-D", node.dataDir, "-c", `port=${await freePort()}`, "-c", "listen_addresses="],
    uid: user.uid,
    gid: user.gid,
    env: { LC_ALL: "C" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pidFile = `${run.pidsDir}/second-postmaster-${child.pid}.pid`;
  await Deno.writeTextFile(pidFile, `${child.pid} postgres\n`);
  const timer = setTimeout(() => {
    try {
      child.kill("SIGQUIT");
    } catch { /* already gone */ }
  }, 10_000);
  try {
    const out = await child.output();
    const log = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    return {
      exitCode: out.code,
      refused: !out.success && /lock file "postmaster\.pid" already exists/.test(log),
      log: log.trim().replace(/^\S+ \S+ UTC \[\d+\] /gm, ""),
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
    await Deno.remove(pidFile).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Exercises

const setupExercises = async (cluster: Cluster) => {
  await reset(cluster, "exercises");
};

function needNodes(cluster: Cluster): string | undefined {
  const missing = Object.keys(NODES).filter((n) => !cluster.has(n));
  return missing.length
    ? `the cluster has no ${missing.join(", ")}; run await lesson02.reset(cluster, "exercises")`
    : undefined;
}

/** Exercise 1: route 'au' to its own shard without losing the default partition's Australians. */
export const routeAu = defineExercise({
  id: "02.route_au",
  notebook: NOTEBOOK,
  title: "Give Australia its own shard",
  prompt:
    "Two Australian customers (`au_a@gmail.com`, `au_b@gmail.com`) sit in the default partition on `eu_db`. " +
    "Route `'au'` to a new node `au_db` in Sydney (`ap-southeast-2`), or to `jp_db`, so that the existing " +
    "Australians move there and nothing is lost from the default partition.",
  hints: [
    "PostgreSQL refuses a new partition for 'au' while the default partition still holds 'au' rows " +
    '("updated partition constraint for default partition would be violated").',
    "Create the remote table and the foreign table first (not yet a partition), copy the 'au' rows into it, " +
    "delete them from global.customer_default, then ATTACH PARTITION ... FOR VALUES IN ('au'), all in one transaction.",
    'A new node: `await cluster.addNode({ name: "au_db", region: "ap-southeast-2", role: "shard" })`, ' +
    "then `await linkNodes(eu, au)` for the foreign server.",
  ],
  solution: `
const au = await cluster.addNode({ name: "au_db", region: "ap-southeast-2", role: "shard" });
await au.exec(\`
  CREATE SCHEMA IF NOT EXISTS au;
  CREATE TABLE IF NOT EXISTS au.customer (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    country TEXT NOT NULL,
    email TEXT NOT NULL
  );\`);
await linkNodes(eu, au, { batchSize: 100 });
await eu.exec(\`
  BEGIN;
  CREATE SCHEMA IF NOT EXISTS au;
  CREATE FOREIGN TABLE au.customer (id UUID NOT NULL, country TEXT NOT NULL, email TEXT NOT NULL)
    SERVER au_db OPTIONS (schema_name 'au', table_name 'customer');
  INSERT INTO au.customer SELECT * FROM global.customer_default WHERE country = 'au';
  DELETE FROM global.customer_default WHERE country = 'au';
  ALTER TABLE global.customer ATTACH PARTITION au.customer FOR VALUES IN ('au');
  COMMIT;\`);`,
  setup: setupExercises,
  async check(cluster) {
    const missing = needNodes(cluster);
    if (missing) return { status: "wrong", message: missing };
    const eu = cluster.node("eu_db");
    const tree = await partitionTree(eu, "global.customer");
    const auLeaf = tree.find((p) => p.kind !== "partitioned" && /'au'/.test(p.bound ?? ""));
    const defaultLeaf = tree.find((p) => p.bound === "DEFAULT");
    const expected = DEFAULT_ROWS.filter((r) => r.country === "au").map((r) => r.email);
    const seen =
      (await eu.sql`SELECT email FROM global.customer WHERE country = 'au' ORDER BY email`)
        .map((r) => r.email as string);
    if (!defaultLeaf) {
      return {
        status: "wrong",
        message:
          "global.customer has no default partition any more, so the 'ie' and 'cn' customers vanished " +
          "from it; attach global.customer_default again (ATTACH PARTITION ... DEFAULT)",
      };
    }
    const [{ n: inDefault }] = await eu.sql`
      SELECT count(*) AS n FROM global.customer_default WHERE country = 'au'`;
    if (!auLeaf) {
      if (inDefault === expected.length) {
        return {
          status: "not-attempted",
          message: "'au' still goes to the default partition, where both Australians are",
        };
      }
      return {
        status: "wrong",
        message: `no partition accepts 'au', and the default partition holds ${inDefault} of the ` +
          `${expected.length} Australians`,
      };
    }
    if (JSON.stringify(seen) !== JSON.stringify(expected)) {
      return {
        status: "wrong",
        message:
          `global.customer should show ${expected.join(" and ")} once each with country 'au', ` +
          `it shows ${
            seen.length ? seen.join(", ") : "none"
          }: were they deleted from the default ` +
          "partition before being copied?",
      };
    }
    const region = auLeaf.node ? cluster.node(auLeaf.node).region : undefined;
    if (auLeaf.kind !== "foreign" || !["ap-southeast-2", "ap-northeast-1"].includes(region ?? "")) {
      return {
        status: "wrong",
        message: `'au' goes to ${auLeaf.schema}.${auLeaf.partition} on ${auLeaf.node ?? "?"} ` +
          `(${
            region ?? "unknown region"
          }); it should live on a node in ap-southeast-2 (or on jp_db)`,
      };
    }
    const holder = cluster.node(auLeaf.node!);
    const [schema, name] = auLeaf.remoteTable!.split(".");
    const [{ n: stored }] = await holder.sql`
      SELECT count(*) AS n FROM ${holder.sql(schema)}.${holder.sql(name)} WHERE country = 'au'`;
    if (stored !== expected.length) {
      return {
        status: "wrong",
        message: `${holder.name} stores ${stored} 'au' customers, expected ${expected.length}`,
      };
    }
    const [{ n: others }] = await eu.sql`
      SELECT count(*) AS n FROM global.customer_default WHERE country IN ('ie', 'cn')`;
    if (others !== 2) {
      return {
        status: "wrong",
        message:
          `the default partition should still hold the 'ie' and 'cn' customers, it holds ${others}`,
      };
    }
    return {
      status: "correct",
      message:
        `'au' routes to ${auLeaf.schema}.${auLeaf.partition} on ${holder.name} (${region}); ` +
        "both Australians moved there and the default partition kept the rest",
    };
  },
  async solve(cluster) {
    const eu = cluster.node("eu_db");
    const au = await cluster.addNode({ name: "au_db", region: "ap-southeast-2", role: "shard" });
    await au.exec(workerCustomerDdl("au"));
    await linkNodes(eu, au, { batchSize: 100 });
    await eu.exec(`
      BEGIN;
      CREATE SCHEMA IF NOT EXISTS au;
      CREATE FOREIGN TABLE au.customer (id UUID NOT NULL, country TEXT NOT NULL, email TEXT NOT NULL)
        SERVER au_db OPTIONS (schema_name 'au', table_name 'customer');
      INSERT INTO au.customer SELECT * FROM global.customer_default WHERE country = 'au';
      DELETE FROM global.customer_default WHERE country = 'au';
      ALTER TABLE global.customer ATTACH PARTITION au.customer FOR VALUES IN ('au');
      COMMIT;`);
  },
  async attemptWrong(cluster) {
    const eu = cluster.node("eu_db");
    const au = await cluster.addNode({ name: "au_db", region: "ap-southeast-2", role: "shard" });
    await au.exec(workerCustomerDdl("au"));
    await linkNodes(eu, au, { batchSize: 100 });
    await eu.exec(`
      DELETE FROM global.customer_default WHERE country = 'au';
      CREATE SCHEMA IF NOT EXISTS au;
      CREATE FOREIGN TABLE au.customer PARTITION OF global.customer FOR VALUES IN ('au')
        SERVER au_db OPTIONS (schema_name 'au', table_name 'customer');`);
  },
});

/** Exercise 2: move the customers written around the router to their shard. */
export const moveMisplaced = defineExercise({
  id: "02.move_misplaced",
  notebook: NOTEBOOK,
  title: "Put misplaced customers where they belong",
  prompt:
    "Section 6 left three customers on a node their country does not belong to (`lesson02.misplacedCustomers(cluster)` " +
    "lists them). Move each to the shard its country routes to, keeping its id, so that no customer is lost or doubled.",
  hints: [
    "A row changes node by an INSERT through the router (global.customer) and a DELETE where it is; " +
    "UPDATE of the country does not move rows out of a foreign partition.",
    "Through the coordinator you can reach each shard's table as eu.customer, us.customer, jp.customer. " +
    "Copy the misplaced rows into a temporary table, delete them from the shards, insert them into global.customer, in one transaction.",
    "Bonus: a CHECK (country IN (...)) on each shard's table makes the shard itself refuse rows from other countries.",
  ],
  solution: `
await eu.exec(\`
  BEGIN;
  CREATE TEMP TABLE misplaced ON COMMIT DROP AS
    SELECT * FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk')
    UNION ALL SELECT * FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br')
    UNION ALL SELECT * FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
  DELETE FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
  DELETE FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br');
  DELETE FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
  INSERT INTO global.customer SELECT * FROM misplaced;
  COMMIT;\`);`,
  setup: setupExercises,
  async check(cluster) {
    const missing = needNodes(cluster);
    if (missing) return { status: "wrong", message: missing };
    const eu = cluster.node("eu_db");
    const targets = [...DIRECT_INSERTS.misrouted, DIRECT_INSERTS.moved];
    const misplaced = await misplacedCustomers(cluster);
    const rows = await eu.sql`
      SELECT email, country, tableoid::regclass::text AS partition FROM global.customer
      WHERE email = ANY(${targets}) ORDER BY email`;
    const initial = misplaced.length === targets.length &&
      misplaced.every((m) => targets.includes(m.email as typeof targets[number]));
    if (initial) {
      return {
        status: "not-attempted",
        message: `${misplaced.length} customers are still on the wrong node: ` +
          misplaced.map((m) => `${m.email} ('${m.country}') on ${m.node}`).join(", "),
      };
    }
    const lost = targets.filter((t) => !rows.some((r) => r.email === t));
    if (lost.length) {
      return {
        status: "wrong",
        message: `${lost.join(", ")} no longer exist anywhere: deleted before they were copied`,
      };
    }
    const doubled = targets.filter((t) => rows.filter((r) => r.email === t).length > 1);
    if (doubled.length) {
      return {
        status: "wrong",
        message: `${doubled.join(", ")} exist twice (copied but not deleted from the old node)`,
      };
    }
    if (misplaced.length) {
      return {
        status: "wrong",
        message: `still on the wrong node: ` +
          misplaced.map((m) => `${m.email} ('${m.country}') on ${m.node}`).join(", "),
      };
    }
    return {
      status: "correct",
      message: "every customer now lives on the shard its country routes to: " +
        rows.map((r) => `${r.email} in ${r.partition}`).join(", "),
    };
  },
  async solve(cluster) {
    await cluster.node("eu_db").exec(`
      BEGIN;
      CREATE TEMP TABLE misplaced ON COMMIT DROP AS
        SELECT * FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk')
        UNION ALL SELECT * FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br')
        UNION ALL SELECT * FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
      DELETE FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
      DELETE FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br');
      DELETE FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
      INSERT INTO global.customer SELECT * FROM misplaced;
      COMMIT;`);
  },
  async attemptWrong(cluster) {
    // Deletes the misplaced rows and forgets to re-insert them.
    await cluster.node("eu_db").exec(`
      DELETE FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
      DELETE FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');`);
  },
});

/** One probe of exercise 3: a purchase whose country disagrees with its customer's. */
const MISMATCH_PROBES = [
  { partition: "eu.purchase", customerCountry: "uk", purchaseCountry: "de" },
  { partition: "us.purchase", customerCountry: "us", purchaseCountry: "mx" },
  { partition: "jp.purchase", customerCountry: "jp", purchaseCountry: "sg" },
  { partition: "global.purchase_default", customerCountry: "ie", purchaseCountry: "cn" },
] as const;

/** Tries a purchase inside a transaction that is always rolled back; returns the error or "accepted". */
async function probePurchase(eu: Node, country: string, customerCountry: string): Promise<string> {
  const rollback = new Error("rollback");
  try {
    await eu.sql.begin(async (tx) => {
      await tx`
        INSERT INTO global.purchase (country, customer_id, amount)
        SELECT ${country}, id, 1.00 FROM global.customer WHERE country = ${customerCountry} LIMIT 1`;
      throw rollback;
    });
  } catch (error) {
    if (error === rollback) return "accepted";
    return (error as Error).message;
  }
  return "accepted";
}

/** Purchases whose country differs from their customer's, counted on every node. */
async function mismatchedPurchases(cluster: Cluster): Promise<string[]> {
  const places = [
    { node: "eu_db", customer: "global.customer_default", purchase: "global.purchase_default" },
    ...SHARDS.map((s) => ({
      node: s.node,
      customer: `${s.schema}.customer`,
      purchase: `${s.schema}.purchase`,
    })),
  ];
  const found: string[] = [];
  for (const p of places) {
    const node = cluster.node(p.node);
    const [{ n }] = await node.sql.unsafe(`
      SELECT count(*) AS n FROM ${p.purchase} pu JOIN ${p.customer} c ON c.id = pu.customer_id
      WHERE pu.country <> c.country`);
    if ((n as number) > 0) found.push(`${n} on ${p.node} (${p.purchase})`);
  }
  return found;
}

/** Exercise 3: make every shard refuse purchases whose country disagrees with the customer's. */
export const purchaseCountry = defineExercise({
  id: "02.purchase_country",
  notebook: NOTEBOOK,
  title: "Add the missing purchase check",
  prompt:
    "Each shard's `purchase` has a foreign key to its own `customer`, but a purchase tagged `'sg'` for a " +
    "customer from `'jp'` still gets in (both live on `jp_db`). Make every shard, and the default " +
    "partition on `eu_db`, refuse a purchase whose country differs from its customer's, and fix the one " +
    "such purchase section 7 made.",
  hints: [
    "A foreign key can span two columns: FOREIGN KEY (customer_id, country) REFERENCES customer (id, country). " +
    "It needs a UNIQUE (id, country) on the customer table.",
    "Run it on each shard's node (eu_db_2, us_db, jp_db) for <schema>.customer / <schema>.purchase, and on " +
    "eu_db for global.customer_default / global.purchase_default.",
    "Adding a foreign key checks the rows already there: first correct the purchase on jp_db whose country " +
    "is 'sg' while its customer's is 'jp' (UPDATE ... SET country = c.country FROM ...).",
  ],
  solution: `
const places = [
  { node: eu2, customer: "eu.customer", purchase: "eu.purchase" },
  { node: us, customer: "us.customer", purchase: "us.purchase" },
  { node: jp, customer: "jp.customer", purchase: "jp.purchase" },
  { node: eu, customer: "global.customer_default", purchase: "global.purchase_default" },
];
for (const p of places) {
  await p.node.exec(\`
    UPDATE \${p.purchase} pu SET country = c.country
      FROM \${p.customer} c WHERE c.id = pu.customer_id AND pu.country <> c.country;
    ALTER TABLE \${p.customer} ADD UNIQUE (id, country);
    ALTER TABLE \${p.purchase} ADD FOREIGN KEY (customer_id, country)
      REFERENCES \${p.customer} (id, country);\`);
}`,
  setup: setupExercises,
  async check(cluster) {
    const missing = needNodes(cluster);
    if (missing) return { status: "wrong", message: missing };
    const eu = cluster.node("eu_db");
    const results = [];
    for (const probe of MISMATCH_PROBES) {
      const said = await probePurchase(eu, probe.purchaseCountry, probe.customerCountry);
      results.push({ ...probe, said });
    }
    const accepted = results.filter((r) => r.said === "accepted");
    const matching = await probePurchase(eu, "jp", "jp");
    if (accepted.length === results.length) {
      return {
        status: "not-attempted",
        message: "every shard still accepts a purchase whose country differs from its customer's " +
          `(for example '${results[2].purchaseCountry}' for a '${
            results[2].customerCountry
          }' customer)`,
      };
    }
    if (matching !== "accepted") {
      return {
        status: "wrong",
        message: `a correct purchase ('jp' for a 'jp' customer) is now refused too: ${matching}`,
      };
    }
    if (accepted.length) {
      return {
        status: "wrong",
        message: "still accepted: " +
          accepted.map((r) =>
            `'${r.purchaseCountry}' for a '${r.customerCountry}' customer (goes to ${r.partition})`
          ).join(", "),
      };
    }
    const old = await mismatchedPurchases(cluster);
    if (old.length) {
      return {
        status: "wrong",
        message: `new mismatches are refused, but old ones remain: ${old.join(", ")} ` +
          "(a NOT VALID constraint skips existing rows)",
      };
    }
    return {
      status: "correct",
      message:
        "every shard and the default partition refuse a purchase whose country differs from " +
        "its customer's, and no such purchase is left",
    };
  },
  async solve(cluster) {
    const places = [
      ...SHARDS.map((s) => ({
        node: s.node,
        customer: `${s.schema}.customer`,
        purchase: `${s.schema}.purchase`,
      })),
      { node: "eu_db", customer: "global.customer_default", purchase: "global.purchase_default" },
    ];
    for (const p of places) {
      await cluster.node(p.node).exec(`
        UPDATE ${p.purchase} pu SET country = c.country
          FROM ${p.customer} c WHERE c.id = pu.customer_id AND pu.country <> c.country;
        ALTER TABLE ${p.customer} ADD UNIQUE (id, country);
        ALTER TABLE ${p.purchase} ADD FOREIGN KEY (customer_id, country)
          REFERENCES ${p.customer} (id, country);`);
    }
  },
  async attemptWrong(cluster) {
    // Only the Tokyo shard gets the check.
    await cluster.node("jp_db").exec(`
      UPDATE jp.purchase pu SET country = c.country
        FROM jp.customer c WHERE c.id = pu.customer_id AND pu.country <> c.country;
      ALTER TABLE jp.customer ADD UNIQUE (id, country);
      ALTER TABLE jp.purchase ADD FOREIGN KEY (customer_id, country) REFERENCES jp.customer (id, country);`);
  },
});
