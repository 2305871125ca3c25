/**
 * TypeScript client SDK of the HuleEdu pipeline mesh: the BatchService and the PipelineConductor
 * over gRPC (Connect's gRPC transport for Node.js).
 *
 * ```ts
 * import { createBatchClient, MeshError, Code } from "@huleedu/pipeline-mesh-client";
 * const batches = createBatchClient({ baseUrl: "http://127.0.0.1:5000" });
 * const { batch } = await batches.createBatch({ essays: [{ text: "Teh cat sat." }] });
 * ```
 */
import { createClient, type Client } from "@connectrpc/connect";
import { BatchService } from "./gen/huleedu/batch/v1/batch_pb.js";
import { PipelineConductorService } from "./gen/huleedu/conductor/v1/conductor_pb.js";
import { createMeshTransport, type ClientOptions } from "./transport.js";

export { Code } from "@connectrpc/connect";
export { MeshError } from "./errors.js";
export {
  createMeshTransport,
  DEFAULT_RETRY_POLICY,
  DEFAULT_TIMEOUT_MS,
  IDEMPOTENT_METHODS,
  type ClientOptions,
  type RetryPolicy,
} from "./transport.js";
export * as batch from "./gen/huleedu/batch/v1/batch_pb.js";
export * as conductor from "./gen/huleedu/conductor/v1/conductor_pb.js";
export * as events from "./gen/huleedu/events/v1/events_pb.js";
export * as rpc from "./gen/google/rpc/error_details_pb.js";

/** The SDK's version; it moves with the contract's (protos/released/). */
export const VERSION = "0.1.0";

export type BatchClient = Client<typeof BatchService>;
export type ConductorClient = Client<typeof PipelineConductorService>;

/** A client of the BatchService: one method per RPC, e.g. `createBatch`, `watchBatch`. */
export function createBatchClient(options: ClientOptions): BatchClient {
  return createClient(BatchService, createMeshTransport(options));
}

/** A client of the PipelineConductor: one method per RPC, e.g. `getBatchPipelineState`. */
export function createConductorClient(options: ClientOptions): ConductorClient {
  return createClient(PipelineConductorService, createMeshTransport(options));
}
