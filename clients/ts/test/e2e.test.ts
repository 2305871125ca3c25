// The SDK against real servers: tests/e2e/test_sdk_ts.py starts both servers and the demo workers
// on real backends and runs `npm run test:e2e` with their addresses in HULEEDU_BATCH_ADDRESS and
// HULEEDU_CONDUCTOR_ADDRESS.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, MeshError, batch, createBatchClient, createConductorClient } from "../src/index.js";

function address(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} is not set (tests/e2e/test_sdk_ts.py sets it)`);
  return `http://${value}`;
}

const batches = () => createBatchClient({ baseUrl: address("HULEEDU_BATCH_ADDRESS") });

test("a comprehensive run ends and its status reads back", async () => {
  const client = batches();
  const { batch: created } = await client.createBatch({
    essays: [
      { text: "Teh cat sat on teh mat.", clientRef: "a" },
      { text: "Essays are fun to write.", clientRef: "b" },
    ],
    metadata: { name: "ts-sdk", flags: { prompt_attached: true } },
  });
  assert.ok(created);
  const started = await client.startPipeline({ batchId: created.batchId, pipeline: "comprehensive" });
  assert.deepEqual(started.steps, ["spellcheck", "nlp", "cj_assessment", "ai_feedback"]);
  let last: batch.WatchBatchResponse | undefined;
  const watch = client.watchBatch(
    { batchId: created.batchId, runId: started.run?.runId ?? "" },
    { timeoutMs: 120_000 },
  );
  for await (const update of watch) {
    last = update;
  }
  assert.equal(batch.RunStatus[last?.run?.status ?? 0], "COMPLETED");
  const status = await client.getBatchStatus({ batchId: created.batchId });
  assert.equal(status.runs.length, 1);
  const [run] = status.runs;
  assert.equal(run?.status, batch.RunStatus.COMPLETED);
  for (const step of run?.steps ?? []) {
    assert.equal(step.status, batch.RunStepStatus.SATISFIED, step.step);
    assert.equal(step.succeeded, 2, step.step);
  }
  const conductor = createConductorClient({ baseUrl: address("HULEEDU_CONDUCTOR_ADDRESS") });
  const state = await conductor.getBatchPipelineState({ batchId: created.batchId });
  assert.equal(state.steps.length, 4);
});

test("an unknown batch is NOT_FOUND", async () => {
  await assert.rejects(batches().getBatchStatus({ batchId: "no-such-batch" }), (e: unknown) => {
    assert.ok(e instanceof MeshError, String(e));
    assert.equal(e.code, Code.NotFound);
    assert.equal(e.reason, "BATCH_NOT_FOUND");
    assert.equal(e.resourceInfo?.resourceName, "no-such-batch");
    return true;
  });
});

test("a batch without essays is INVALID_ARGUMENT naming the field", async () => {
  await assert.rejects(batches().createBatch({ essays: [] }), (e: unknown) => {
    assert.ok(e instanceof MeshError, String(e));
    assert.equal(e.code, Code.InvalidArgument);
    assert.deepEqual(
      e.badRequest?.fieldViolations.map((v) => v.field),
      ["essays"],
    );
    return true;
  });
});

test("a gated pipeline without its flag is FAILED_PRECONDITION with its violations", async () => {
  const client = batches();
  const { batch: created } = await client.createBatch({ essays: [{ text: "No prompt attached." }] });
  assert.ok(created);
  await assert.rejects(
    client.startPipeline({ batchId: created.batchId, pipeline: "comprehensive" }),
    (e: unknown) => {
      assert.ok(e instanceof MeshError, String(e));
      assert.equal(e.code, Code.FailedPrecondition);
      const violations = e.preconditionFailure?.violations ?? [];
      assert.ok(
        violations.some((v) => v.type === "FLAG" && v.subject === "prompt_attached"),
        JSON.stringify(violations),
      );
      return true;
    },
  );
});

// Needs the run control of issue #19 on the servers: CancelRun, RetryRun.
test("a cancelled run ends CANCELLED and a retry finishes it", async () => {
  const client = batches();
  const { batch: created } = await client.createBatch({
    essays: [{ text: "Teh first essay." }, { text: "A second essay." }],
    metadata: { flags: { prompt_attached: true } },
  });
  assert.ok(created);
  const batchId = created.batchId;
  const started = await client.startPipeline({ batchId, pipeline: "comprehensive" });
  const runId = started.run?.runId ?? "";
  const cancelled = await client.cancelRun({ batchId, runId, reason: "wrong prompt" });
  assert.equal(cancelled.run?.status, batch.RunStatus.CANCELLED);
  assert.equal(cancelled.run?.cancelReason, "wrong prompt");
  const retried = await client.retryRun({ batchId, runId });
  assert.equal(retried.run?.attempt, 2);
  assert.ok(retried.retriedSteps.length > 0);
  let last: batch.WatchBatchResponse | undefined;
  for await (const update of client.watchBatch({ batchId, runId }, { timeoutMs: 120_000 })) {
    last = update;
  }
  assert.equal(batch.RunStatus[last?.run?.status ?? 0], "COMPLETED");
  assert.equal(last?.run?.attempt, 2);
  await assert.rejects(client.retryRun({ batchId, runId }), (e: unknown) => {
    assert.ok(e instanceof MeshError, String(e));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.equal(e.reason, "NOTHING_TO_RETRY");
    return true;
  });
});

// Needs UpdateBatch, GetEssay and ListEssays (issue #19) on the servers.
test("a batch is updated and its essays read", async () => {
  const client = batches();
  const { batch: created } = await client.createBatch({
    essays: [
      { text: "Teh first essay.", clientRef: "a" },
      { text: "Second.", clientRef: "b" },
    ],
  });
  assert.ok(created);
  const batchId = created.batchId;
  const updated = await client.updateBatch({
    batchId,
    metadata: { labels: { term: "ht25" }, name: "ignored" },
    updateMask: { paths: ["labels"] },
  });
  assert.equal(updated.batch?.metadata?.labels["term"], "ht25");
  assert.equal(updated.batch?.metadata?.name, "");
  const page = await client.listEssays({ batchId, pageSize: 1 });
  assert.deepEqual(
    page.essays.map((e) => e.clientRef),
    ["a"],
  );
  assert.ok(page.nextPageToken);
  const { essay } = await client.getEssay({ essayId: page.essays[0]?.essayId ?? "" });
  assert.equal(essay?.originalText, "Teh first essay.");
  assert.equal(essay?.batchId, batchId);
});
