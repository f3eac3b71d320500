/**
 * The exercises of notebook 02, registered on import (the lesson module
 * imports this one): give Australia its own shard, put misplaced customers
 * where they belong, and make every shard refuse a purchase whose country
 * differs from its customer's.
 *
 * The lesson module imports this module, so this one uses the lesson's
 * exports only inside functions (never while loading), and spells out the
 * notebook name.
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { defineExercise } from "../exercises.ts";
import { linkNodes } from "../fdw.ts";
import { partitionTree } from "../inspect.ts";
import type { Node } from "../node.ts";
import {
  DEFAULT_ROWS,
  DIRECT_INSERTS,
  NODES,
  reset,
  SHARDS,
  workerCustomerDdl,
} from "./02_manual_sharding.ts";
import { misplacedCustomers } from "./02_manual_sharding_probes.ts";

const NOTEBOOK = "02_manual_sharding";

const setupExercises = async (cluster: Cluster) => {
  await reset(cluster, "exercises");
};

function needNodes(cluster: Cluster): string | undefined {
  const missing = Object.keys(NODES).filter((n) => !cluster.has(n));
  return missing.length
    ? `the cluster has no ${missing.join(", ")}; run await lesson02.reset(cluster, "exercises")`
    : undefined;
}

/**
 * Exercise 1's move, on eu_db: a foreign table for au_db's customers, the
 * Australians copied there and deleted from the default partition, then
 * attached for 'au', in one transaction. The solution shows the same text.
 */
const ROUTE_AU = `
  BEGIN;
  CREATE SCHEMA IF NOT EXISTS au;
  CREATE FOREIGN TABLE au.customer (id UUID NOT NULL, country TEXT NOT NULL, email TEXT NOT NULL)
    SERVER au_db OPTIONS (schema_name 'au', table_name 'customer');
  INSERT INTO au.customer SELECT * FROM global.customer_default WHERE country = 'au';
  DELETE FROM global.customer_default WHERE country = 'au';
  ALTER TABLE global.customer ATTACH PARTITION au.customer FOR VALUES IN ('au');
  COMMIT;`;

/** The node au_db in Sydney with its customer table, linked from eu_db; returns eu_db. */
async function addAuShard(cluster: Cluster): Promise<Node> {
  const eu = cluster.node("eu_db");
  const au = await cluster.addNode({ name: "au_db", region: "ap-southeast-2", role: "shard" });
  await au.exec(workerCustomerDdl("au"));
  await linkNodes(eu, au, { batchSize: 100 });
  return eu;
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
await eu.exec(\`${ROUTE_AU}\`);`,
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
    const eu = await addAuShard(cluster);
    await eu.exec(ROUTE_AU);
  },
  async attemptWrong(cluster) {
    const eu = await addAuShard(cluster);
    await eu.exec(`
      DELETE FROM global.customer_default WHERE country = 'au';
      CREATE SCHEMA IF NOT EXISTS au;
      CREATE FOREIGN TABLE au.customer PARTITION OF global.customer FOR VALUES IN ('au')
        SERVER au_db OPTIONS (schema_name 'au', table_name 'customer');`);
  },
});

/**
 * Exercise 2's move, on eu_db: the misplaced rows kept in a temporary
 * table, deleted from the shards and inserted through the router, in one
 * transaction. The solution shows the same text.
 */
const MOVE_MISPLACED = `
  BEGIN;
  CREATE TEMP TABLE misplaced ON COMMIT DROP AS
    SELECT * FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk')
    UNION ALL SELECT * FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br')
    UNION ALL SELECT * FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
  DELETE FROM eu.customer WHERE country NOT IN ('de', 'fr', 'ei', 'uk');
  DELETE FROM us.customer WHERE country NOT IN ('us', 'mx', 'ca', 'br');
  DELETE FROM jp.customer WHERE country NOT IN ('jp', 'zh', 'in', 'sg');
  INSERT INTO global.customer SELECT * FROM misplaced;
  COMMIT;`;

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
await eu.exec(\`${MOVE_MISPLACED}\`);`,
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
    await cluster.node("eu_db").exec(MOVE_MISPLACED);
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

/** Where customers and their purchases are stored together: the default partitions on eu_db, and each shard. */
function purchasePlaces(): { node: string; customer: string; purchase: string }[] {
  return [
    { node: "eu_db", customer: "global.customer_default", purchase: "global.purchase_default" },
    ...SHARDS.map((s) => ({
      node: s.node,
      customer: `${s.schema}.customer`,
      purchase: `${s.schema}.purchase`,
    })),
  ];
}

/** Exercise 3's fix for one place: mismatched purchases corrected, then a two-column foreign key. */
function sameCountrySql(p: { customer: string; purchase: string }): string {
  return `
    UPDATE ${p.purchase} pu SET country = c.country
      FROM ${p.customer} c WHERE c.id = pu.customer_id AND pu.country <> c.country;
    ALTER TABLE ${p.customer} ADD UNIQUE (id, country);
    ALTER TABLE ${p.purchase} ADD FOREIGN KEY (customer_id, country)
      REFERENCES ${p.customer} (id, country);`;
}

/** Purchases whose country differs from their customer's, counted on every node. */
async function mismatchedPurchases(cluster: Cluster): Promise<string[]> {
  const found: string[] = [];
  for (const p of purchasePlaces()) {
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
    for (const p of purchasePlaces()) await cluster.node(p.node).exec(sameCountrySql(p));
  },
  async attemptWrong(cluster) {
    // Only the Tokyo shard gets the check.
    await cluster.node("jp_db").exec(
      sameCountrySql({ customer: "jp.customer", purchase: "jp.purchase" }),
    );
  },
});
