/**
 * Lesson 02, manual sharding by country: the lesson's facts, the SQL the
 * resets replay, and `reset()`. The notebook's probes (statements that may
 * fail, rows per node, misplaced customers, a second postmaster) are in
 * 02_manual_sharding_probes.ts, the exercises in
 * 02_manual_sharding_exercises.ts; this module re-exports both, so
 * `lesson02` in mod.ts has them all.
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
import { linkNodes } from "../fdw.ts";
import type { Node } from "../node.ts";
import type { RegionId } from "../regions.ts";
import { type ShopCustomer, shopCustomers } from "../shop.ts";
import { sectionIndex } from "./_lesson.ts";

export { moveMisplaced, purchaseCountry, routeAu } from "./02_manual_sharding_exercises.ts";
export {
  type Attempt,
  attempt,
  misplacedCustomers,
  type MisplacedRow,
  qualified,
  type SecondPostmaster,
  startSecondPostmaster,
  storedRows,
} from "./02_manual_sharding_probes.ts";

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
  const index = sectionIndex(NOTEBOOK, SECTIONS, section);
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
