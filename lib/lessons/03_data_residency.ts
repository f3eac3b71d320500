/**
 * Lesson 03, data residency with postgres_fdw: section resets, the lesson's
 * data steps, and its exercises.
 *
 * ```ts
 * import { lesson03 } from "../lib/mod.ts";
 * await lesson03.reset(cluster, "hierarchy"); // 10 000 people, no manager tree yet
 * ```
 *
 * @module
 */

import type { Cluster } from "../cluster.ts";
import { type CheckResult, defineExercise } from "../exercises.ts";
import {
  awaitMirror,
  dropModel,
  homeNodes,
  installModel,
  partitionScans,
  placements,
  residencyNodes,
  SOURCE_UPSERTS,
} from "../residency.ts";
import { sectionIndex } from "./_lesson.ts";

const NOTEBOOK = "03_data_residency";

/** The sections of notebook 03, in order; {@link reset} brings a cluster to the start of any of them. */
export const SECTIONS = [
  "model",
  "people",
  "routing",
  "bulk",
  "hierarchy",
  "audit",
  "exercises",
] as const;

/** A section of notebook 03. */
export type Section = typeof SECTIONS[number];

/**
 * The routing demonstration: one person per region inserted with plain
 * INSERTs on usa, no function, so PostgreSQL routes each row itself.
 */
export const ROUTING_SQL = `
INSERT INTO shared.identity (uuid, region) VALUES
  ('11111111-1111-4111-8111-111111111111', 'usa'),
  ('22222222-2222-4222-8222-222222222222', 'gbr'),
  ('33333333-3333-4333-8333-333333333333', 'aus')
ON CONFLICT DO NOTHING;

INSERT INTO shared.identity_details (uuid, region, name, notes) VALUES
  ('11111111-1111-4111-8111-111111111111', 'usa', 'Routed Ruth', 'plain INSERT on usa'),
  ('22222222-2222-4222-8222-222222222222', 'gbr', 'Routed Rupert', 'plain INSERT on usa'),
  ('33333333-3333-4333-8333-333333333333', 'aus', 'Routed Ruby', 'plain INSERT on usa')
ON CONFLICT DO NOTHING;
`.trim();

/** The uuids {@link ROUTING_SQL} inserts, by region. */
export const ROUTED = {
  usa: "11111111-1111-4111-8111-111111111111",
  gbr: "22222222-2222-4222-8222-222222222222",
  aus: "33333333-3333-4333-8333-333333333333",
} as const;

/** The source's bulk step. */
export const GENERATE_SQL = `select * from util.generate_identities(1, 10000, false);`;

/** A small row-by-row run for comparison (20 people through shared.upsert_identity). */
export const GENERATE_ROW_BY_ROW_SQL =
  `select * from util.generate_identities(10001, 10020, true);`;

/** The source's hierarchy step. */
export const MANAGER_TREE_SQL = `select * from util.create_manager_tree(15);`;

/**
 * Brings `cluster` to the state at the start of `section` of notebook 03:
 * the three home nodes running (started if missing), the model rebuilt from
 * scratch, and the data steps of the earlier sections replayed.
 *
 * @throws {WorkshopError} `INVALID_SETTING` for an unknown section.
 * @example
 * ```ts
 * await lesson03.reset(cluster, "audit"); // model, people, 10 000 more, a manager tree
 * ```
 */
export async function reset(cluster: Cluster, section: Section): Promise<void> {
  sectionIndex(NOTEBOOK, SECTIONS, section);
  const reached = (s: Section) => SECTIONS.indexOf(section) > SECTIONS.indexOf(s);
  await cluster.addNodes(residencyNodes());
  await dropModel(cluster);
  if (!reached("model")) return;
  await installModel(cluster);
  if (!reached("people")) return;
  await createSourcePeople(cluster);
  if (!reached("routing")) return;
  await cluster.node("usa").exec(ROUTING_SQL);
  if (!reached("bulk")) return;
  await cluster.node("usa").exec(GENERATE_SQL);
  await cluster.node("usa").exec(GENERATE_ROW_BY_ROW_SQL);
  if (!reached("hierarchy")) return;
  await cluster.node("usa").exec(MANAGER_TREE_SQL);
  await awaitMirror(cluster);
}

/**
 * Runs the source's three upserts on usa twice (the "Aftermath"), waiting
 * for the mirror each time: Dave, Da Queen and two Someone Randoms.
 *
 * @example
 * ```ts
 * await createSourcePeople(cluster);
 * ```
 */
export async function createSourcePeople(cluster: Cluster): Promise<void> {
  for (let i = 0; i < 2; i++) {
    await cluster.node("usa").exec(SOURCE_UPSERTS);
    await awaitMirror(cluster);
  }
}

/**
 * The root of the largest manager tree (made by `util.create_manager_tree`),
 * read on `usa`, or undefined when there is none.
 *
 * @example
 * ```ts
 * const root = await lesson03.managerTreeRoot(cluster);
 * ```
 */
export async function managerTreeRoot(cluster: Cluster): Promise<string | undefined> {
  const [row] = await cluster.node("usa").sql`
    SELECT path[1]::text AS root FROM shared.hierarchy
    GROUP BY path[1] ORDER BY count(*) DESC, max(depth) DESC LIMIT 1`;
  const root = row?.root as string | undefined;
  const [size] = root
    ? await cluster.node("usa")
      .sql`SELECT count(*) AS n FROM shared.hierarchy WHERE path[1] = ${root}::uuid`
    : [];
  return size && (size.n as number) > 1 ? root : undefined;
}

// ---------------------------------------------------------------------------
// Exercise 1: a query that needs only gbr PII reads only the gbr node
// ---------------------------------------------------------------------------

const GBR_VIEW = "shared.gbr_staff";

/**
 * Exercise 1's view, filtering on the region of `d` (shared.identity_details,
 * the solution) or of `i` (shared.identity). The solution shows the same text.
 */
function gbrStaffView(regionOf: "d" | "i"): string {
  return `
  CREATE OR REPLACE VIEW shared.gbr_staff AS
    SELECT d.name, d.uuid
    FROM shared.identity_details d
      JOIN shared.identity i ON i.uuid = d.uuid
    WHERE ${regionOf}.region = 'gbr'
      AND i.manager_uuid IS NOT NULL;`;
}

async function checkGbrOnly(cluster: Cluster): Promise<CheckResult> {
  const usa = cluster.node("usa");
  const [exists] = await usa.sql`SELECT to_regclass(${GBR_VIEW}) IS NOT NULL AS ok`;
  if (!exists.ok) {
    return { status: "not-attempted", message: `there is no view ${GBR_VIEW} on usa yet` };
  }
  const { scans } = await partitionScans(usa, `SELECT * FROM ${GBR_VIEW}`);
  const others = scans.filter((s) => s.node !== "gbr" && s.loops > 0);
  if (others.length) {
    return {
      status: "wrong",
      message: `querying ${GBR_VIEW} also reads PII from ${
        others.map((s) => `${s.partition} (${s.rows} rows)`).join(", ")
      }. Filter on the partition key of shared.identity_details itself (d.region), so the planner can prune the other partitions`,
    };
  }
  if (!scans.some((s) => s.node === "gbr" && s.loops > 0)) {
    return {
      status: "wrong",
      message:
        `${GBR_VIEW} does not read shared.identity_details at all: the names must come from there`,
    };
  }
  const columns = await usa.sql`
    SELECT attname FROM pg_attribute WHERE attrelid = ${GBR_VIEW}::regclass AND attnum > 0`;
  const names = columns.map((c) => c.attname as string);
  if (!names.includes("name") || !names.includes("uuid")) {
    return {
      status: "wrong",
      message: `${GBR_VIEW} has columns ${names.join(", ")}; it needs name and uuid`,
    };
  }
  const got = await usa.sql.unsafe(`SELECT uuid::text, name FROM ${GBR_VIEW} ORDER BY 1`);
  const managed = new Set(
    (await usa
      .sql`SELECT uuid::text FROM shared.identity WHERE region = 'gbr' AND manager_uuid IS NOT NULL`)
      .map((r) => r.uuid as string),
  );
  const gbrNames = new Map(
    (await cluster.node("gbr").sql`SELECT uuid::text, name FROM gbr.identity_details`)
      .map((r) => [r.uuid as string, r.name as string]),
  );
  const expected = [...managed].filter((u) => gbrNames.has(u)).sort();
  const gotKeys = got.map((r) => r.uuid as string);
  if (gotKeys.length !== expected.length || gotKeys.some((u, i) => u !== expected[i])) {
    return {
      status: "wrong",
      message:
        `${GBR_VIEW} returns ${gotKeys.length} people; there are ${expected.length} gbr people with a manager`,
    };
  }
  const badName = got.find((r) => gbrNames.get(r.uuid as string) !== r.name);
  if (badName) {
    return {
      status: "wrong",
      message: `the name shown for ${badName.uuid} is "${badName.name}", not the one stored on gbr`,
    };
  }
  return {
    status: "correct",
    message: `${expected.length} gbr people with a manager, read from gbr's partition only (${
      scans.filter((s) => s.loops > 0).map((s) => s.partition).join(", ")
    })`,
  };
}

defineExercise({
  id: "03.gbr_only",
  notebook: NOTEBOOK,
  title: "A query that needs only gbr PII reads only the gbr node",
  prompt:
    `Create a view \`${GBR_VIEW}\` on usa with the \`name\` and \`uuid\` of every gbr person ` +
    `who has a manager. Querying it must read PII from the gbr node only: no scan of ` +
    `usa.identity_details or aus.identity_details.`,
  hints: [
    "Which people have a manager is non-PII: shared.identity knows it on every node.",
    "Partition pruning only looks at conditions on the partitioned table's own key: " +
    "a filter on i.region does not prune shared.identity_details, a filter on d.region does.",
    "partitionScans(usa, `SELECT * FROM shared.gbr_staff`) shows which partitions a query reads.",
  ],
  solution: `await usa.exec(\`${gbrStaffView("d")}
\`);`,
  setup: (cluster) => reset(cluster, "exercises"),
  check: checkGbrOnly,
  solve: async (cluster) => {
    await cluster.node("usa").exec(gbrStaffView("d"));
  },
  attemptWrong: async (cluster) => {
    // The region of shared.identity (i) is the same value, but not the partition key: no pruning.
    await cluster.node("usa").exec(gbrStaffView("i"));
  },
});

// ---------------------------------------------------------------------------
// Exercise 2: move a person to another region without leaving PII behind
// ---------------------------------------------------------------------------

const MOVE_FUNCTION = "shared.move_identity(uuid,text)";
/** The person the move check creates, moves from gbr to aus, and removes again. */
const PROBE = "99999999-9999-4999-8999-999999999999";

async function removeProbe(cluster: Cluster): Promise<void> {
  const usa = cluster.node("usa");
  await usa.exec(`DELETE FROM shared.identity_details WHERE uuid = '${PROBE}'`);
  await usa.exec(`DELETE FROM shared.identity WHERE uuid = '${PROBE}'`);
  await awaitMirror(cluster);
}

async function checkMove(cluster: Cluster): Promise<CheckResult> {
  const usa = cluster.node("usa");
  const [exists] = await usa.sql`SELECT to_regprocedure(${MOVE_FUNCTION}) IS NOT NULL AS ok`;
  if (!exists.ok) {
    return {
      status: "not-attempted",
      message: "there is no function shared.move_identity(uuid, text) on usa yet",
    };
  }
  await removeProbe(cluster);
  try {
    await usa.exec(
      `SELECT shared.upsert_identity('${PROBE}', 'Probe Person', 'gbr', 'moved by the exercise check')`,
    );
    await awaitMirror(cluster);
    try {
      await usa.exec(`SELECT shared.move_identity('${PROBE}', 'aus')`);
    } catch (error) {
      return {
        status: "wrong",
        message: `moving a gbr person to aus failed: ${(error as Error).message}`,
      };
    }
    await awaitMirror(cluster);
    const [placed] = await placements(cluster, [PROBE]);
    const stored = placed?.storedOn ?? [];
    if (stored.includes("gbr")) {
      return {
        status: "wrong",
        message:
          "the person's PII is still stored on gbr after the move: delete it at the old home",
      };
    }
    if (!stored.includes("aus")) {
      return {
        status: "wrong",
        message: `after the move the person's PII is stored on ${
          stored.join(", ") || "no node"
        }, not on aus`,
      };
    }
    if (placed.name !== "Probe Person" || placed.region !== "aus") {
      return {
        status: "wrong",
        message: `on aus the details say name "${placed.name}", region "${placed.region}": ` +
          `keep the name and notes, and set region to aus`,
      };
    }
    const regions = await Promise.all(
      Object.values(homeNodes(cluster)).map(async (n) => {
        const [r] = await n.sql`SELECT region FROM shared.identity WHERE uuid = ${PROBE}::uuid`;
        return `${n.name}: ${r?.region ?? "missing"}`;
      }),
    );
    if (!regions.every((r) => r.endsWith(": aus"))) {
      return {
        status: "wrong",
        message: `shared.identity does not say aus everywhere (${
          regions.join(", ")
        }): update the person's region too`,
      };
    }
    return {
      status: "correct",
      message: "a gbr person moved to aus: PII only on aus, shared.identity says aus on every node",
    };
  } finally {
    await removeProbe(cluster);
  }
}

const MOVE_SOLUTION_SQL = `
CREATE OR REPLACE FUNCTION shared.move_identity(p_uuid uuid, p_region text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  old_region text;
  person record;
BEGIN
  SELECT region INTO old_region FROM shared.identity WHERE uuid = p_uuid FOR UPDATE;
  IF old_region IS NULL THEN
    RAISE EXCEPTION 'No identity %', p_uuid;
  END IF;
  IF old_region = p_region THEN
    RETURN;
  END IF;
  -- Read the details at the old home, delete them there, insert them at the new home.
  -- (UPDATE ... SET region cannot move a row out of a foreign partition.)
  DELETE FROM shared.identity_details
    WHERE uuid = p_uuid AND region = old_region
    RETURNING name, notes INTO person;
  INSERT INTO shared.identity_details (uuid, region, name, notes)
    VALUES (p_uuid, p_region, person.name, person.notes);
  UPDATE shared.identity SET region = p_region, updated_at = now() WHERE uuid = p_uuid;
END $$;`.trim();

defineExercise({
  id: "03.move_person",
  notebook: NOTEBOOK,
  title: "Move a person to another region without leaving PII behind",
  prompt: "Write `shared.move_identity(p_uuid uuid, p_region text)` on usa: it moves a " +
    "person's details to the node of the new region, leaves no copy on the old one, and " +
    "updates the person's region in `shared.identity`.",
  hints: [
    "Try `UPDATE shared.identity_details SET region = 'aus' WHERE uuid = ...` first: " +
    "the error tells you why PostgreSQL cannot do the move for you.",
    "DELETE ... RETURNING name, notes INTO a record gives you the details while removing them.",
    "Insert the details with the new region (routing puts them on the right node), then " +
    "update shared.identity: the mirror carries the new region to every node.",
  ],
  solution: `await usa.exec(\`\n${MOVE_SOLUTION_SQL}\n\`);`,
  setup: (cluster) => reset(cluster, "exercises"),
  check: checkMove,
  solve: async (cluster) => {
    await cluster.node("usa").exec(MOVE_SOLUTION_SQL);
  },
  attemptWrong: async (cluster) => {
    await cluster.node("usa").exec(`
      CREATE OR REPLACE FUNCTION shared.move_identity(p_uuid uuid, p_region text)
      RETURNS void LANGUAGE sql AS $$
        UPDATE shared.identity SET region = p_region WHERE uuid = p_uuid;
      $$;`);
  },
});
