import { Code, MeshError, batch, createBatchClient } from "@huleedu/pipeline-mesh-client";

const address = process.env["BATCH_ADDRESS"] ?? "127.0.0.1:5000";
const batches = createBatchClient({ baseUrl: `http://${address}` });

const { batch: created } = await batches.createBatch({
  essays: [{ text: "Teh cat sat on teh mat." }],
  metadata: { flags: { prompt_attached: true } },
});
const batchId = created?.batchId ?? "";
const started = await batches.startPipeline({ batchId, pipeline: "comprehensive" });
for await (const update of batches.watchBatch({ batchId, runId: started.run?.runId ?? "" })) {
  const run = update.run;
  const steps = run?.steps.map((s) => `${s.step}=${batch.RunStepStatus[s.status]}`) ?? [];
  console.log(String(update.sequence), batch.RunStatus[run?.status ?? 0], ...steps);
}

try {
  await batches.getBatchStatus({ batchId: "no-such-batch" });
} catch (e) {
  if (e instanceof MeshError && e.code === Code.NotFound) {
    console.log("not found:", Code[e.code], e.reason);
  }
}
