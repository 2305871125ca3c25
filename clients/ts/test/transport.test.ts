// The SDK's behaviour around a transport, against a fake inner transport (no server).
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import {
  BatchService,
  CancelRunResponseSchema,
  GetBatchStatusResponseSchema,
  RetryRunResponseSchema,
  TriggerSpellcheckResponseSchema,
  CreateBatchResponseSchema,
} from "../src/gen/huleedu/batch/v1/batch_pb.js";
import { PipelineConductorService } from "../src/gen/huleedu/conductor/v1/conductor_pb.js";
import { createMeshTransport, IDEMPOTENT_METHODS, MeshError } from "../src/index.js";

interface Call {
  method: string;
  timeoutMs: number | undefined;
  authorization: string | null;
  input: Record<string, unknown>;
}

/** Fails each call with `failure` `failures` times, then answers with an empty response. */
function fake(failures: number, failure = new ConnectError("try again", Code.Unavailable)) {
  const calls: Call[] = [];
  const inner = {
    async unary(method, _signal, timeoutMs, header, input) {
      calls.push({
        method: method.name,
        timeoutMs,
        authorization: new Headers(header).get("authorization"),
        input: input as Record<string, unknown>,
      });
      if (calls.filter((c) => c.method === method.name).length <= failures) throw failure;
      const schema = {
        GetBatchStatus: GetBatchStatusResponseSchema,
        TriggerSpellcheck: TriggerSpellcheckResponseSchema,
        CreateBatch: CreateBatchResponseSchema,
        CancelRun: CancelRunResponseSchema,
        RetryRun: RetryRunResponseSchema,
      }[method.name as "GetBatchStatus"];
      return { stream: false, service: method.parent, method, header: new Headers(), trailer: new Headers(), message: create(schema) };
    },
    async stream() {
      throw new Error("not used");
    },
  } as Transport;
  return { calls, inner };
}

const retry = { maxAttempts: 5, initialBackoffMs: 1, maxBackoffMs: 4, multiplier: 2 };

test("idempotent calls are retried on UNAVAILABLE", async () => {
  const { calls, inner } = fake(2);
  const client = createClient(BatchService, createMeshTransport({ baseUrl: "", retry }, inner));
  await client.getBatchStatus({ batchId: "b" });
  assert.equal(calls.length, 3);
});

test("non-idempotent calls are not retried", async () => {
  const { calls, inner } = fake(2);
  const client = createClient(BatchService, createMeshTransport({ baseUrl: "", retry }, inner));
  await assert.rejects(client.triggerSpellcheck({ text: "x" }), (e: unknown) => {
    return e instanceof MeshError && e.code === Code.Unavailable;
  });
  assert.equal(calls.length, 1);
});

test("calls carry the default deadline, the API key and a request id", async () => {
  const { calls, inner } = fake(0);
  const options = { baseUrl: "", timeoutMs: 3000, apiKey: "k-123" };
  const client = createClient(BatchService, createMeshTransport(options, inner));
  await client.createBatch({ essays: [{ text: "x" }] });
  const [call] = calls;
  assert.ok(call && call.timeoutMs !== undefined && call.timeoutMs <= 3000 && call.timeoutMs > 2000);
  assert.equal(call.authorization, "Bearer k-123");
  assert.match(String(call.input["requestId"]), /^ts-/);
});

test("failures are MeshErrors with their details decoded", async () => {
  const error = new ConnectError("essays: must contain at least one essay", Code.InvalidArgument);
  error.details.push(
    { desc: ErrorInfoSchema, value: { reason: "INVALID_ARGUMENT", domain: "batch.huleedu" } },
    {
      desc: BadRequestSchema,
      value: { fieldViolations: [{ field: "essays", description: "must contain at least one essay" }] },
    },
  );
  const { inner } = fake(1, error);
  const client = createClient(BatchService, createMeshTransport({ baseUrl: "" }, inner));
  await assert.rejects(client.createBatch({}), (e: unknown) => {
    assert.ok(e instanceof MeshError);
    assert.equal(e.code, Code.InvalidArgument);
    assert.equal(e.reason, "INVALID_ARGUMENT");
    assert.equal(e.badRequest?.fieldViolations[0]?.field, "essays");
    assert.equal(e.preconditionFailure, undefined);
    return true;
  });
});

test("RetryRun is retried under the one request id the SDK filled in", async () => {
  const { calls, inner } = fake(2);
  const client = createClient(BatchService, createMeshTransport({ baseUrl: "", retry }, inner));
  await client.retryRun({ batchId: "b", runId: "r", steps: ["nlp"] });
  const ids = calls.map((c) => String(c.input["requestId"]));
  assert.equal(ids.length, 3);
  assert.match(ids[0] ?? "", /^ts-/);
  assert.deepEqual(new Set(ids).size, 1);
  await client.retryRun({ batchId: "b", runId: "r", requestId: "mine" });
  assert.equal(calls.at(-1)?.input["requestId"], "mine");
});

test("CancelRun is retried on UNAVAILABLE", async () => {
  const { calls, inner } = fake(1);
  const client = createClient(BatchService, createMeshTransport({ baseUrl: "", retry }, inner));
  await client.cancelRun({ batchId: "b", runId: "r", reason: "wrong prompt" });
  assert.equal(calls.length, 2);
});

test("every unary RPC is retried unless a repeat would do its work twice", () => {
  const notRetried = new Set([
    "huleedu.batch.v1.BatchService/TriggerSpellcheck", // stores the text again
    "huleedu.conductor.v1.PipelineConductorService/ResolvePipeline", // publishes events
  ]);
  for (const service of [BatchService, PipelineConductorService]) {
    for (const method of service.methods.filter((m) => m.methodKind === "unary")) {
      const name = `${service.typeName}/${method.name}`;
      assert.notEqual(IDEMPOTENT_METHODS.has(name), notRetried.has(name), name);
    }
  }
});
