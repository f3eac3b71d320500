/**
 * The functions of the residency model, as SQL: `shared.upsert_identity`,
 * `util.generate_identities`, `util.create_manager_tree` and
 * `util.residency_audit`, plus the source's first upserts. Part of the
 * residency module (see residency.ts, which re-exports the public names).
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";
import { literal } from "./fdw.ts";
import type { Home } from "./_residency_layout.ts";

/**
 * Share of generated identities per region (the source does not state its
 * split; this is ours): half American, 30% British, 20% Australian.
 */
export const REGION_WEIGHTS: Record<Home, number> = { usa: 0.5, gbr: 0.3, aus: 0.2 };

/** Columns whose values are PII wherever they are stored (what the audit looks for). */
export const PII_COLUMNS = ["name", "notes"] as const;

/**
 * `shared.upsert_identity(uuid, name, region, notes)` and its result type.
 * Idempotent.
 *
 * @example
 * ```ts
 * await usa.exec(upsertSql());
 * ```
 */
export function upsertSql(): string {
  return `
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = 'shared' AND t.typname = 'upsert_result') THEN
    CREATE TYPE shared.upsert_result AS (uuid uuid, created boolean, owner boolean);
  END IF;
END $$;

-- Creates or updates a person: identity here (mirrored everywhere), details
-- routed by PostgreSQL to the partition of their region (PostgreSQL 11+).
-- Returns the uuid, whether it was created, and whether this node owns the person.
CREATE OR REPLACE FUNCTION shared.upsert_identity(
  p_uuid uuid, p_name text, p_region text, p_notes text
) RETURNS shared.upsert_result
LANGUAGE plpgsql AS $$
DECLARE
  existing text;
  was_created boolean;
BEGIN
  IF p_region IS NULL OR p_region NOT IN ('usa', 'gbr', 'aus') THEN
    RAISE EXCEPTION 'Unknown region "%" for identity %', p_region, p_uuid
      USING HINT = 'Use one of: usa, gbr, aus', ERRCODE = 'check_violation';
  END IF;
  SELECT i.region INTO existing FROM shared.identity i WHERE i.uuid = p_uuid FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO shared.identity (uuid, region) VALUES (p_uuid, p_region);
    INSERT INTO shared.identity_details (uuid, region, name, notes)
      VALUES (p_uuid, p_region, p_name, p_notes);
    was_created := true;
  ELSIF existing <> p_region THEN
    RAISE EXCEPTION 'Identity % lives in region %, not %', p_uuid, existing, p_region
      USING HINT = 'Moving a person between regions is not an upsert: delete the details at home, insert them in the new region, then update shared.identity';
  ELSE
    UPDATE shared.identity SET updated_at = now() WHERE uuid = p_uuid;
    UPDATE shared.identity_details SET name = p_name, notes = p_notes
      WHERE uuid = p_uuid AND region = p_region;
    IF NOT FOUND THEN
      INSERT INTO shared.identity_details (uuid, region, name, notes)
        VALUES (p_uuid, p_region, p_name, p_notes);
    END IF;
    was_created := false;
  END IF;
  RETURN ROW(p_uuid, was_created, p_region = util.home_region())::shared.upsert_result;
END $$;
`.trim();
}

/**
 * `util.generate_identities(first_n, last_n, row_by_row)` and the region
 * weights it draws from ({@link REGION_WEIGHTS}). Idempotent.
 */
export function generateSql(): string {
  const weights = Object.entries(REGION_WEIGHTS).map(([r, w]) => `(${literal(r)}, ${w})`).join(
    ", ",
  );
  return `
-- The region split of generated people (ours: the source does not state one).
CREATE TABLE IF NOT EXISTS util.region_weight (
  region text PRIMARY KEY CHECK (region IN ('usa', 'gbr', 'aus')),
  weight numeric NOT NULL CHECK (weight >= 0)
);
INSERT INTO util.region_weight VALUES ${weights} ON CONFLICT (region) DO NOTHING;

-- Generates people numbered first_n..last_n, each in a random region drawn
-- with util.region_weight. Set-based by default: one INSERT for the identities
-- and one for the details, which PostgreSQL routes to the home nodes in
-- batches (postgres_fdw batch_size). row_by_row = true calls
-- shared.upsert_identity once per person instead (slow across regions).
CREATE OR REPLACE FUNCTION util.generate_identities(
  first_n integer, last_n integer, row_by_row boolean DEFAULT false
) RETURNS TABLE (region text, generated bigint)
LANGUAGE plpgsql AS $$
DECLARE
  person record;
BEGIN
  IF first_n IS NULL OR last_n IS NULL OR last_n < first_n THEN
    RAISE EXCEPTION 'Invalid range % .. % for util.generate_identities', first_n, last_n
      USING HINT = 'Pass first_n <= last_n, e.g. util.generate_identities(1, 10000, false)';
  END IF;
  CREATE TEMP TABLE IF NOT EXISTS pg_temp.generated_identity
    (uuid uuid, region text, n integer) ON COMMIT DELETE ROWS;
  TRUNCATE pg_temp.generated_identity;
  INSERT INTO pg_temp.generated_identity (uuid, region, n)
    SELECT uuid_generate_v4(), pick.region, g.n
    FROM (SELECT n, random() AS r FROM generate_series(first_n, last_n) AS g (n)) g
      CROSS JOIN LATERAL (
        SELECT w.region
        FROM (SELECT rw.region,
                     sum(rw.weight) OVER (ORDER BY rw.region) / sum(rw.weight) OVER () AS upto
              FROM util.region_weight rw) w
        WHERE g.r < w.upto
        ORDER BY w.upto
        LIMIT 1
      ) pick;
  IF row_by_row THEN
    FOR person IN SELECT * FROM pg_temp.generated_identity ORDER BY n LOOP
      PERFORM shared.upsert_identity(person.uuid, format('%s person %s', upper(person.region), person.n),
                                     person.region, 'generated one by one');
    END LOOP;
  ELSE
    INSERT INTO shared.identity (uuid, region)
      SELECT gi.uuid, gi.region FROM pg_temp.generated_identity gi;
    INSERT INTO shared.identity_details (uuid, region, name, notes)
      SELECT gi.uuid, gi.region, format('%s person %s', upper(gi.region), gi.n), 'generated'
      FROM pg_temp.generated_identity gi;
  END IF;
  RETURN QUERY
    SELECT gi.region, count(*) FROM pg_temp.generated_identity gi
    GROUP BY gi.region ORDER BY gi.region;
END $$;
`.trim();
}

/**
 * `util.create_manager_tree(levels)`. Idempotent.
 */
export function managerTreeSql(): string {
  return `
-- Picks a random identity that has no manager and manages nobody, and builds
-- a tree under it, levels deep (the root is level 1). Each level below the
-- root gets "levels" employees, all reporting to one randomly selected
-- person of the level above. Returns the root's uuid.
CREATE OR REPLACE FUNCTION util.create_manager_tree(levels integer)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
  root uuid;
  boss uuid;
  placed integer;
BEGIN
  IF levels IS NULL OR levels < 1 THEN
    RAISE EXCEPTION 'Invalid depth % for util.create_manager_tree', levels
      USING HINT = 'Pass a depth of 1 or more, e.g. util.create_manager_tree(15)';
  END IF;
  SELECT i.uuid INTO root FROM shared.identity i
  WHERE i.manager_uuid IS NULL
    AND NOT EXISTS (SELECT 1 FROM shared.identity r WHERE r.manager_uuid = i.uuid)
  ORDER BY random() LIMIT 1;
  IF root IS NULL THEN
    RAISE EXCEPTION 'No identity without a manager and without reports is left'
      USING HINT = 'Generate more with util.generate_identities()';
  END IF;
  boss := root;
  FOR level IN 2..levels LOOP
    UPDATE shared.identity i SET manager_uuid = boss, updated_at = now()
    WHERE i.uuid IN (
      SELECT c.uuid FROM shared.identity c
      WHERE c.manager_uuid IS NULL AND c.uuid <> root
        AND NOT EXISTS (SELECT 1 FROM shared.identity r WHERE r.manager_uuid = c.uuid)
      ORDER BY random() LIMIT levels
    );
    GET DIAGNOSTICS placed = ROW_COUNT;
    IF placed < levels THEN
      RAISE EXCEPTION 'Only % free identities for level % of the manager tree (need %)', placed, level, levels
        USING HINT = 'Generate more with util.generate_identities()';
    END IF;
    SELECT i.uuid INTO boss FROM shared.identity i WHERE i.manager_uuid = boss ORDER BY random() LIMIT 1;
  END LOOP;
  RETURN root;
END $$;
`.trim();
}

/**
 * `util.residency_audit()` and the PII column names it looks for
 * ({@link PII_COLUMNS}). Idempotent.
 */
export function auditSql(): string {
  const pii = PII_COLUMNS.map(literal).map((c) => `(${c})`).join(", ");
  return `
-- Column names that hold PII wherever they appear (the audit looks for them).
CREATE TABLE IF NOT EXISTS util.pii_column (column_name text PRIMARY KEY);
INSERT INTO util.pii_column VALUES ${pii} ON CONFLICT DO NOTHING;

-- Residency audit of THIS node: every relation stored here (tables and
-- materialized views, not foreign tables or views) with a PII column.
-- Rows whose region is not this node's home, or rows of a relation that has
-- no region column (their home cannot be proven), are violations.
CREATE OR REPLACE FUNCTION util.residency_audit()
RETURNS TABLE (relation text, kind text, pii_columns text[], rows_stored bigint,
               rows_outside_home bigint, verdict text)
LANGUAGE plpgsql AS $$
DECLARE
  rel record;
  has_region boolean;
BEGIN
  FOR rel IN
    SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'm' THEN 'materialized view' END AS kind,
           array_agg(a.attname::text ORDER BY a.attnum) AS pii
    FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN util.pii_column p ON p.column_name = a.attname
    WHERE c.relkind IN ('r', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'
      AND c.relpersistence <> 't'
    GROUP BY c.oid, n.nspname, c.relname, c.relkind
    ORDER BY 2
  LOOP
    relation := rel.name;
    kind := rel.kind;
    pii_columns := rel.pii;
    has_region := EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = rel.oid AND a.attname = 'region' AND NOT a.attisdropped);
    IF has_region THEN
      EXECUTE format('SELECT count(*), count(*) FILTER (WHERE region IS DISTINCT FROM %L) FROM %s',
                     util.home_region(), rel.name)
        INTO rows_stored, rows_outside_home;
    ELSE
      EXECUTE format('SELECT count(*), count(*) FROM %s', rel.name) INTO rows_stored, rows_outside_home;
    END IF;
    verdict := CASE
      WHEN rows_outside_home = 0 THEN 'ok'
      WHEN has_region THEN 'VIOLATION: PII of other regions stored in ' || util.home_region()
      ELSE 'VIOLATION: PII without a region column (home unknown)'
    END;
    RETURN NEXT;
  END LOOP;
END $$;
`.trim();
}

/**
 * Every function of the model: {@link upsertSql}, {@link generateSql},
 * {@link managerTreeSql} and {@link auditSql}, in that order.
 *
 * @example
 * ```ts
 * for (const node of cluster.nodes) await node.exec(functionsSql());
 * ```
 */
export function functionsSql(): string {
  return [upsertSql(), generateSql(), managerTreeSql(), auditSql()].join("\n\n");
}

/** The fixed uuid of the source's first person, David Welch (usa). */
export const DAVE = "7139f8aa-7f93-4657-83ad-b7d74a22159f";
/** The fixed uuid of the source's second person, Da Queen (gbr). */
export const QUEEN = "d0c4d726-225c-426d-80d2-7406eb1c9739";

/** The source's three calls (the usa person, the gbr person, a random aus person). */
export const SOURCE_UPSERTS = `select
  shared.upsert_identity(
      '${DAVE}',
      'David Welch',
      'usa',
      'Dave is really nice'
  ) as dave,
  shared.upsert_identity(
      '${QUEEN}',
      'Da Queen',
      'gbr',
      'Da queen is a powerhouse, but sort of an acquired taste'
  ) as queen,
  shared.upsert_identity(
      uuid_generate_v4(),
      'Someone Random',
      'aus',
      'This will always make someone new'
  ) as rando,

  true as dummy
;`;

/** One upsert outcome, parsed from the composite `(uuid,created,owner)`. */
export interface UpsertResult {
  uuid: string;
  created: boolean;
  owner: boolean;
}

/**
 * Parses a `shared.upsert_result` as PostgreSQL prints it: `(uuid,t,f)`.
 *
 * @example
 * ```ts
 * parseUpsert("(7139f8aa-7f93-4657-83ad-b7d74a22159f,t,t)"); // { uuid: "7139…", created: true, owner: true }
 * ```
 */
export function parseUpsert(text: string): UpsertResult {
  const m = /^\(([0-9a-f-]{36}),([tf]),([tf])\)$/.exec(String(text));
  if (!m) {
    throw new WorkshopError("INVALID_SETTING", `Not an upsert result: "${text}"`, {
      fix: "Pass the text of a shared.upsert_result, e.g. (7139f8aa-…,t,t)",
    });
  }
  return { uuid: m[1], created: m[2] === "t", owner: m[3] === "t" };
}
