/**
 * Comparing LSNs, right and wrong (the bugs section of notebook 05): the
 * ways an application might compare two LSN strings, a table of where each
 * goes wrong against PostgreSQL's `pg_lsn`, and a fast-forward of the WAL
 * to where the LSN text grows a digit. Re-exported by the lesson module
 * (`lesson05`).
 *
 * @module
 */

import { WorkshopError } from "../errors.ts";
import type { Node } from "../node.ts";
import { currentLsn, lsnToBigInt, setApplyDelay, waitForReplay } from "../replication.ts";

/** Ways an application might compare two LSN strings ("is a >= b?"). */
export const LSN_COMPARISONS = {
  /** Compares the text: wrong as soon as the two have different lengths. */
  "as strings": (a: string, b: string) => a >= b,
  /** Splits the halves but parses them with parseInt without a radix: "9A000000" becomes 9. */
  "halves via parseInt(x)": (a: string, b: string) => {
    const [ah, al] = a.split("/").map((x) => parseInt(x));
    const [bh, bl] = b.split("/").map((x) => parseInt(x));
    return ah > bh || (ah === bh && al >= bl);
  },
  /** Joins the halves with 32-bit operators: `<< 32` shifts by 0 and `|` wraps to a negative int32. */
  "(hi << 32) | lo": (a: string, b: string) => {
    const join = (lsn: string) => {
      const [hi, lo] = lsn.split("/").map((x) => parseInt(x, 16));
      return (hi << 32) | lo;
    };
    return join(a) >= join(b);
  },
  /** Right: 64-bit positions as BigInt. */
  "BigInt (right)": (a: string, b: string) => lsnToBigInt(a) >= lsnToBigInt(b),
} as const;

/** Pairs (replica LSN, user's last write) that trip one comparison or another. */
export const LSN_PAIRS: readonly [string, string][] = [
  ["0/9A000000", "0/10000000"],
  ["0/FFFFFF", "0/1000000"],
  ["0/9A00000", "0/10000000"],
  ["0/19FFF00", "0/1A00010"],
  ["9/0", "10/0"],
  ["1/0", "0/FFFFFFFF"],
  ["0/16B3748", "0/16B3748"],
];

/**
 * Each pair compared by PostgreSQL (`a::pg_lsn >= b::pg_lsn`, the truth) and
 * by each of {@link LSN_COMPARISONS}; wrong answers are marked ✘, and those
 * that would serve a stale read say so.
 *
 * @example
 * ```ts
 * await show(table(await compareLsnTable(db)));
 * ```
 */
export async function compareLsnTable(
  node: Node,
  pairs: readonly [string, string][] = LSN_PAIRS,
): Promise<Record<string, string>[]> {
  const truth = await node.sql`
    SELECT a, b, a::pg_lsn >= b::pg_lsn AS fresh
    FROM unnest(${pairs.map((p) => p[0])}::text[], ${pairs.map((p) => p[1])}::text[]) AS t(a, b)`;
  return truth.map((row) => {
    const a = row.a as string;
    const b = row.b as string;
    const fresh = row.fresh as boolean;
    const cells: Record<string, string> = {
      "replica LSN": a,
      "user's last write": b,
      "pg_lsn >= (truth)": String(fresh),
    };
    for (const [name, compare] of Object.entries(LSN_COMPARISONS)) {
      const answer = compare(a, b);
      cells[name] = answer === fresh ? String(answer) : `${answer} ✘${answer ? " stale read" : ""}`;
    }
    return cells;
  });
}

/** What {@link approachLengthBoundary} did. */
export interface BoundaryApproach {
  /** WAL position before. */
  from: string;
  /** WAL position after (in the last segment below the boundary). */
  to: string;
  /** Where the LSN text grows a digit. */
  boundary: string;
  /** WAL segments closed with pg_switch_wal(). */
  switches: number;
}

/**
 * Fast-forwards the primary's WAL to the last segment before the next
 * position where the LSN's low half gains a hex digit (0/1000000 at
 * 16 MiB, 0/10000000 at 256 MiB), by closing segments with
 * `pg_switch_wal()`, and waits until the replica replayed it. A busy server
 * crosses these positions by itself; this makes it happen now.
 *
 * @throws {WorkshopError} `INVALID_SETTING` when the next such position is
 *   more than 300 MiB of WAL away (start over with `reset(cluster, "bugs")`).
 * @example
 * ```ts
 * const step = await approachLengthBoundary(db, replica); // { from: "0/9A1B20", to: "0/F00060", boundary: "0/1000000", ... }
 * ```
 */
export async function approachLengthBoundary(
  primary: Node,
  replica: Node,
): Promise<BoundaryApproach> {
  const from = await currentLsn(primary);
  const [{ seg }] = await primary
    .sql`SELECT setting::bigint AS seg FROM pg_settings WHERE name = 'wal_segment_size'`;
  const position = lsnToBigInt(from);
  const hi = position >> 32n;
  const lo = position & 0xFFFFFFFFn;
  let boundaryLo = 0x100000n;
  while (boundaryLo <= lo) boundaryLo *= 16n;
  const boundary = (hi << 32n) + boundaryLo;
  if (boundaryLo > 0xFFFFFFFFn || boundary - position > 300n * 1024n * 1024n) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `The WAL position ${from} is too far from the next place where the LSN text grows a digit`,
      { fix: 'Start over with a fresh pair: await lesson05.reset(cluster, "bugs")' },
    );
  }
  const target = boundary - BigInt(seg as number);
  const [{ delay }] = await replica.sql`
    SELECT setting::int AS delay FROM pg_settings WHERE name = 'recovery_min_apply_delay'`;
  if (delay !== 0) await setApplyDelay(replica, 0);
  await primary.exec(`CREATE TABLE IF NOT EXISTS wal_filler (at timestamptz DEFAULT now())`);
  let closed = 0;
  while (lsnToBigInt(await currentLsn(primary)) < target) {
    await primary.sql`
      WITH w AS (INSERT INTO wal_filler DEFAULT VALUES RETURNING 1)
      SELECT pg_switch_wal() FROM w`;
    closed++;
  }
  const to = await currentLsn(primary);
  await waitForReplay(replica, to);
  if (delay !== 0) await setApplyDelay(replica, delay as number);
  return {
    from,
    to,
    boundary: `${(boundary >> 32n).toString(16).toUpperCase()}/${
      (boundary & 0xFFFFFFFFn).toString(16).toUpperCase()
    }`,
    switches: closed,
  };
}
