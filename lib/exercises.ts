/**
 * Self-paced exercises: each has a check that looks at the live database
 * and tells "not attempted" from "wrong" from "correct", in the learner's
 * terms. Hints and solutions live here and show on request.
 *
 * Notebook side:
 *
 * ```ts
 * const ex1 = exercise("01.modulus4", cluster);
 * // starter cell with a visible blank ____, then:
 * await ex1.check();
 * ex1.hint();      // shows the next hint
 * ex1.solution();  // shows the solution code
 * ```
 *
 * Exercise modules (`lib/lessons/NN_*_exercises.ts`) register definitions with
 * {@link defineExercise}; tests run every solution and a wrong attempt
 * through each check.
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import { callout, type Displayable, markdown } from "./display.ts";
import { WorkshopError } from "./errors.ts";

/** Outcome of a check. */
export type CheckStatus = "not-attempted" | "wrong" | "correct";

/** What a check found. */
export interface CheckResult {
  status: CheckStatus;
  /** What was found, in the learner's terms. */
  message: string;
}

/** An exercise, as an exercise module defines it. */
export interface ExerciseDefinition {
  /** Id, `<notebook number>.<slug>`, e.g. "01.modulus4". */
  id: string;
  /** Notebook the exercise belongs to, e.g. "01_horizontal_scaling". */
  notebook: string;
  /** One-line title. */
  title: string;
  /** The task, in markdown (the notebook shows the same words). */
  prompt: string;
  /** Hints, gentlest first. */
  hints: string[];
  /** Solution code as it would go into the starter cell. */
  solution: string;
  /**
   * Brings a fresh cluster to the state the exercise starts from (the end of
   * its notebook). Used by tests; in a notebook the state is already there.
   */
  setup(cluster: Cluster): Promise<void>;
  /** Looks at the live database and judges the learner's work. */
  check(cluster: Cluster): Promise<CheckResult>;
  /** Applies the solution (the same steps as {@link ExerciseDefinition.solution}). */
  solve(cluster: Cluster): Promise<void>;
  /** Makes a plausible mistake, so tests can prove the check catches it. */
  attemptWrong(cluster: Cluster): Promise<void>;
}

const registry = new Map<string, ExerciseDefinition>();

/**
 * Registers an exercise (called by exercise modules at import time).
 *
 * @example
 * ```ts
 * defineExercise({ id: "01.modulus4", notebook: "01_horizontal_scaling", title: "…", … });
 * ```
 */
export function defineExercise(definition: ExerciseDefinition): ExerciseDefinition {
  registry.set(definition.id, definition);
  return definition;
}

/** Every registered exercise, in id order. */
export function allExercises(): ExerciseDefinition[] {
  return [...registry.values()].sort((a, b) => a.id.localeCompare(b.id));
}

/** An exercise bound to a live cluster, as a notebook uses it. */
export interface BoundExercise {
  /** The definition. */
  readonly definition: ExerciseDefinition;
  /** Runs the check and shows the verdict. Never throws on a wrong answer. */
  check(): Promise<Displayable & CheckResult>;
  /** Shows the next hint (all hints once they are used up). */
  hint(): Displayable;
  /** Shows the solution code. */
  solution(): Displayable;
}

/**
 * An exercise bound to a live cluster.
 *
 * @throws {WorkshopError} `INVALID_SETTING` for an unknown exercise id.
 * @example
 * ```ts
 * const ex1 = exercise("01.modulus4", cluster);
 * await ex1.check(); // "Not attempted yet: …" until the learner does it
 * ```
 */
export function exercise(id: string, cluster: Cluster): BoundExercise {
  const definition = registry.get(id);
  if (!definition) {
    throw new WorkshopError("INVALID_SETTING", `Unknown exercise "${id}"`, {
      fix: `Use one of: ${[...registry.keys()].join(", ") || "(none loaded: import lib/mod.ts)"}`,
    });
  }
  let hintsShown = 0;
  return {
    definition,
    async check() {
      let result: CheckResult;
      try {
        result = await definition.check(cluster);
      } catch (error) {
        result = {
          status: "wrong",
          message: `The check hit an error: ${(error as Error).message}`,
        };
      }
      return { ...result, ...verdict(definition, result) };
    },
    hint() {
      hintsShown = Math.min(hintsShown + 1, definition.hints.length);
      const shown = definition.hints.slice(0, hintsShown).map((h, i) => `${i + 1}. ${h}`).join(
        "\n",
      );
      return markdown(`**Hint${hintsShown > 1 ? "s" : ""} for "${definition.title}"**\n\n${shown}`);
    },
    solution() {
      return markdown(
        `**Solution: ${definition.title}**\n\n\`\`\`ts\n${definition.solution.trim()}\n\`\`\``,
      );
    },
  };
}

function verdict(definition: ExerciseDefinition, result: CheckResult): Displayable {
  switch (result.status) {
    case "not-attempted":
      return callout(
        "note",
        `Not attempted yet: ${result.message} (.hint() on the exercise shows a hint)`,
      );
    case "wrong":
      return callout("warning", `Not quite: ${result.message}`);
    case "correct":
      return callout("ok", `Correct: ${result.message}`);
    default:
      return callout("fail", `${definition.id}: unknown status`);
  }
}
