/**
 * postgres_fdw links between nodes: extension, foreign server, user mapping
 * and grant, created idempotently and verified against the catalog.
 *
 * A link from a node in one region to a node in another leads through the
 * cluster's delay proxy, so every foreign query pays the simulated round trips.
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";
import type { Node } from "./node.ts";

/** Options for {@link linkNodes}. */
export interface LinkOptions {
  /** Foreign server name. @default the target node's name */
  server?: string;
  /** Rows fetched per round trip when reading (postgres_fdw `fetch_size`). @default 100 (postgres_fdw's default) */
  fetchSize?: number;
  /** Rows sent per round trip when inserting (postgres_fdw `batch_size`). @default 1 (postgres_fdw's default) */
  batchSize?: number;
  /** Remote database. @default the target's database */
  dbname?: string;
  /** Remote user the mapping logs in as. @default the target's superuser */
  remoteUser?: string;
  /** Password for `remoteUser`. @default the cluster password */
  remotePassword?: string;
  /** Local role the user mapping is for. @default CURRENT_USER */
  localRole?: string;
}

/** A verified postgres_fdw link. */
export interface ForeignLink {
  /** Node that runs the foreign queries. */
  from: Node;
  /** Node that holds the data. */
  to: Node;
  /** Foreign server name on `from`. */
  server: string;
  /** Host and port in the server's options (a delay proxy across regions). */
  host: string;
  port: number;
}

/**
 * Makes `from` able to query `to` through postgres_fdw: creates the
 * extension, a foreign server named after `to`, a user mapping and the grant.
 * Re-running it updates the server's address and options in place.
 *
 * @param from The node that will run foreign queries (the coordinator).
 * @param to The node that holds the data.
 * @returns The link, verified against `pg_foreign_server` and `pg_user_mappings`.
 * @throws {WorkshopError} `FDW_LINK_FAILED` when the catalog does not show the link.
 * @example
 * ```ts
 * const link = await linkNodes(eu1, eu2); // CREATE SERVER eu_db_2 ...
 * await eu1.exec(`CREATE FOREIGN TABLE customer_1 ... SERVER ${link.server}`);
 * ```
 */
export async function linkNodes(
  from: Node,
  to: Node,
  options: LinkOptions = {},
): Promise<ForeignLink> {
  const server = options.server ?? to.name;
  const { host, port } = await from.cluster.peerRoute(from, to);
  const serverOptions: Record<string, string> = {
    host,
    port: String(port),
    dbname: options.dbname ?? to.database,
  };
  if (options.fetchSize !== undefined) serverOptions.fetch_size = String(options.fetchSize);
  if (options.batchSize !== undefined) serverOptions.batch_size = String(options.batchSize);
  const role = options.localRole ? ident(options.localRole) : "CURRENT_USER";
  const mapping = {
    user: options.remoteUser ?? to.user,
    password: options.remotePassword ?? to.password,
  };
  await from.exec(`
    CREATE EXTENSION IF NOT EXISTS postgres_fdw;
    CREATE SERVER IF NOT EXISTS ${ident(server)} FOREIGN DATA WRAPPER postgres_fdw;
    ${
    alterOptions(
      `SERVER ${ident(server)}`,
      await currentOptions(from, "server", server),
      serverOptions,
    )
  }
    CREATE USER MAPPING IF NOT EXISTS FOR ${role} SERVER ${ident(server)};
    ${
    alterOptions(
      `USER MAPPING FOR ${role} SERVER ${ident(server)}`,
      await currentOptions(from, "mapping", server, options.localRole),
      mapping,
    )
  }
    GRANT USAGE ON FOREIGN SERVER ${ident(server)} TO ${role};
  `);
  const [check] = await from.sql`
    SELECT s.srvoptions, (SELECT count(*) FROM pg_user_mappings m WHERE m.srvname = s.srvname) AS mappings
    FROM pg_foreign_server s WHERE s.srvname = ${server}`;
  const seen = optionMap(check?.srvoptions as string[] | null);
  if (!check || seen.host !== host || seen.port !== String(port) || Number(check.mappings) < 1) {
    throw new WorkshopError(
      "FDW_LINK_FAILED",
      `Cannot verify foreign server "${server}" on "${from.name}"`,
      {
        fix:
          "Check the node logs; the catalog does not show the server with its address and a user mapping",
        details: JSON.stringify(check ?? null),
      },
    );
  }
  return { from, to, server, host, port };
}

/**
 * The foreign servers defined on a node, with the node each one leads to.
 *
 * @example
 * ```ts
 * await show(table(await foreignServers(eu1)));
 * ```
 */
export async function foreignServers(node: Node): Promise<
  { server: string; host: string; port: number; target: string | null; options: string }[]
> {
  const rows = await node.sql`SELECT srvname, srvoptions FROM pg_foreign_server ORDER BY srvname`;
  return await Promise.all(rows.map(async (r) => {
    const o = optionMap(r.srvoptions as string[] | null);
    const target = await node.cluster.nodeAt(o.host ?? "", Number(o.port), o.dbname);
    return {
      server: r.srvname as string,
      host: o.host ?? "",
      port: Number(o.port),
      target: target?.name ?? null,
      options: (r.srvoptions as string[] | null)?.join(", ") ?? "",
    };
  }));
}

/** Parses a catalog options array (`{host=x,port=5432}`) into an object. */
export function optionMap(options: readonly string[] | null | undefined): Record<string, string> {
  return Object.fromEntries((options ?? []).map((o) => {
    const i = o.indexOf("=");
    return [o.slice(0, i), o.slice(i + 1)];
  }));
}

/** Quotes an SQL identifier. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes an SQL string literal. */
export function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

async function currentOptions(
  node: Node,
  kind: "server" | "mapping",
  server: string,
  role?: string,
): Promise<Set<string>> {
  const rows = kind === "server"
    ? await node.sql`SELECT srvoptions AS o FROM pg_foreign_server WHERE srvname = ${server}`
    : await node.sql`SELECT umoptions AS o FROM pg_user_mappings
        WHERE srvname = ${server} AND usename = coalesce(${
      role ?? null
    }::text, current_user::text)`;
  return new Set(Object.keys(optionMap(rows[0]?.o as string[] | null)));
}

function alterOptions(
  target: string,
  existing: Set<string>,
  wanted: Record<string, string>,
): string {
  const parts = Object.entries(wanted).map(([k, v]) =>
    `${existing.has(k) ? "SET" : "ADD"} ${k} ${literal(v)}`
  );
  return parts.length ? `ALTER ${target} OPTIONS (${parts.join(", ")});` : "";
}
