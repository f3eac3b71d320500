/**
 * What the lesson modules share: checking the section a learner passes to
 * `reset()`.
 *
 * @module
 */

import { WorkshopError } from "../errors.ts";

/**
 * The position of `section` among a notebook's sections, for `reset()`.
 *
 * @param notebook The notebook's file name, e.g. "01_horizontal_scaling" (its number goes in the message).
 * @param sections The notebook's sections, in order.
 * @param section The section asked for (from a learner: any string).
 * @returns Its index in `sections`.
 * @throws {WorkshopError} `INVALID_SETTING` naming the sections there are.
 * @example
 * ```ts
 * const index = sectionIndex("02_manual_sharding", SECTIONS, section);
 * ```
 */
export function sectionIndex(
  notebook: string,
  sections: readonly string[],
  section: string,
): number {
  const index = sections.indexOf(section);
  if (index < 0) {
    throw new WorkshopError(
      "INVALID_SETTING",
      `Unknown section "${section}" of notebook ${notebook.slice(0, 2)}`,
      { fix: `Use one of: ${sections.join(", ")}` },
    );
  }
  return index;
}
