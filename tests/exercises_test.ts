/**
 * Every registered exercise, run the way a learner would meet it: untouched
 * it says "not attempted", a plausible mistake is caught as "wrong", and the
 * solution passes as "correct", each against a fresh cluster.
 */

import assert from "node:assert/strict";
import { allExercises, type Cluster, exercise, mimeBundle, startCluster } from "../lib/mod.ts";

async function fresh(id: string, run: (cluster: Cluster) => Promise<void>): Promise<void> {
  await using cluster = await startCluster({ name: `t-ex-${id}` });
  await run(cluster);
}

for (const definition of allExercises()) {
  Deno.test(`exercise ${definition.id} (${definition.title}): untouched, wrong and solved are told apart`, async () => {
    await fresh(definition.id, async (cluster) => {
      await definition.setup(cluster);
      const untouched = await exercise(definition.id, cluster).check();
      assert.equal(untouched.status, "not-attempted", untouched.message);
      await definition.attemptWrong(cluster);
      const wrong = await exercise(definition.id, cluster).check();
      assert.equal(wrong.status, "wrong", wrong.message);
      assert.ok(wrong.message.length > 10, "a wrong answer is explained");
    });
    await fresh(definition.id, async (cluster) => {
      await definition.setup(cluster);
      await definition.solve(cluster);
      const solved = await exercise(definition.id, cluster).check();
      assert.equal(solved.status, "correct", solved.message);
    });
    const bound = exercise(definition.id, undefined as unknown as Cluster);
    assert.ok(definition.hints.length > 0, "at least one hint");
    assert.match(mimeBundle(bound.hint())["text/markdown"], /Hint/);
    assert.match(mimeBundle(bound.solution())["text/markdown"], /Solution/);
  });
}

Deno.test("exercise() names the known exercises when the id is unknown", () => {
  assert.throws(
    () => exercise("99.nope", undefined as unknown as Cluster),
    /Unknown exercise "99\.nope"/,
  );
});
