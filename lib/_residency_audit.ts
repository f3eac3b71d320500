/**
 * Where the PII of the residency model is stored: per person, per node, and
 * the residency audit of every node, each read on the node itself (not
 * through the FDW). Part of the residency module (see residency.ts, which
 * re-exports the public names).
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import type { RegionId } from "./regions.ts";
import { type Home, HOME_REGIONS, homeNodes, HOMES } from "./_residency_layout.ts";

/** Where one person's PII is stored, read on every node directly (no FDW). */
export interface Placement {
  uuid: string;
  name: string;
  region: string;
  /** Nodes whose own partition holds the row. */
  storedOn: string[];
}

/**
 * Where the PII of the given people (or of everyone) is stored: each node's
 * own partition `<home>.identity_details` read on that node directly.
 *
 * @example
 * ```ts
 * await show(table(await placements(cluster, [DAVE, QUEEN])));
 * ```
 */
export async function placements(cluster: Cluster, uuids?: string[]): Promise<Placement[]> {
  const nodes = homeNodes(cluster);
  const byUuid = new Map<string, Placement>();
  for (const home of HOMES) {
    const sql = nodes[home].sql;
    const rows = uuids
      ? await sql`SELECT uuid::text, name, region FROM ${sql(home)}.identity_details
                  WHERE uuid = ANY(${uuids}::uuid[])`
      : await sql`SELECT uuid::text, name, region FROM ${sql(home)}.identity_details`;
    for (const r of rows) {
      const p = byUuid.get(r.uuid as string) ??
        {
          uuid: r.uuid as string,
          name: r.name as string,
          region: r.region as string,
          storedOn: [],
        };
      p.storedOn.push(home);
      byUuid.set(p.uuid, p);
    }
  }
  const order = uuids ?? [...byUuid.keys()];
  return order.flatMap((u) => byUuid.get(u) ?? []);
}

/**
 * Rows of PII each node stores in its own partition, and how many of them
 * belong to its region, counted on each node directly.
 *
 * @example
 * ```ts
 * await show(table(await piiPerNode(cluster)));
 * ```
 */
export async function piiPerNode(
  cluster: Cluster,
): Promise<{ node: Home; region: RegionId; rows: number; homeRows: number }[]> {
  const nodes = homeNodes(cluster);
  return await Promise.all(HOMES.map(async (home) => {
    const sql = nodes[home].sql;
    const [r] = await sql`
      SELECT count(*) AS rows, count(*) FILTER (WHERE region = ${home}) AS home_rows
      FROM ${sql(home)}.identity_details`;
    return {
      node: home,
      region: HOME_REGIONS[home],
      rows: r.rows as number,
      homeRows: r.home_rows as number,
    };
  }));
}

/** One row of the residency audit. */
export interface AuditRow {
  node: Home;
  relation: string;
  kind: string;
  pii_columns: string[];
  rows_stored: number;
  rows_outside_home: number;
  verdict: string;
}

/**
 * Runs `util.residency_audit()` on every node, connected to each node
 * directly (the audit looks at what each node stores, not through the FDW).
 *
 * @returns Every relation with PII on every node, and whether all are clean.
 * @example
 * ```ts
 * const audit = await residencyAudit(cluster);
 * await show(verifyThat("no PII outside its home region", audit.ok, `${audit.rows.length} relations`));
 * ```
 */
export async function residencyAudit(
  cluster: Cluster,
): Promise<{ ok: boolean; rows: AuditRow[]; violations: AuditRow[] }> {
  const nodes = homeNodes(cluster);
  const rows = (await Promise.all(
    HOMES.map(async (home) =>
      (await nodes[home].sql`SELECT * FROM util.residency_audit()`).map((r) => ({
        node: home,
        relation: r.relation as string,
        kind: r.kind as string,
        pii_columns: r.pii_columns as string[],
        rows_stored: r.rows_stored as number,
        rows_outside_home: r.rows_outside_home as number,
        verdict: r.verdict as string,
      }))
    ),
  )).flat();
  const violations = rows.filter((r) => r.rows_outside_home > 0);
  return { ok: violations.length === 0, rows, violations };
}

/**
 * Placements as table rows: one row per person, a column per node with a
 * mark where that node stores the person's PII.
 *
 * @example
 * ```ts
 * await show(table(placementRows(await placements(cluster))));
 * ```
 */
export function placementRows(list: readonly Placement[]): Record<string, string>[] {
  return list.map((p) => ({
    name: p.name,
    uuid: p.uuid,
    region: p.region,
    ...Object.fromEntries(
      HOMES.map((h) => [`stored on ${h}`, p.storedOn.includes(h) ? "✔" : "·"]),
    ),
  }));
}
