/**
 * Free-port helpers for nodes, proxies and helper services on 127.0.0.1.
 *
 * @module
 */

import { WorkshopError } from "./errors.ts";

/**
 * A port on 127.0.0.1 that was free a moment ago (the OS picks it).
 *
 * @example
 * ```ts
 * const port = await freePort();
 * ```
 */
export function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return Promise.resolve(port);
}

/**
 * Throws `PORT_IN_USE` when something already listens on `port`.
 *
 * @param port The port to check on 127.0.0.1.
 * @param action What was being done, for the message ("Cannot add node \"eu_db_2\"").
 */
export function assertPortFree(port: number, action: string): Promise<void> {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      throw new WorkshopError("PORT_IN_USE", `${action}: port ${port} is already in use`, {
        fix:
          `Choose another port, leave it unset to pick a free one, or stop what listens on ${port} (lsof -i :${port})`,
      });
    }
    throw error;
  }
  return Promise.resolve();
}
