import type {
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  MessageInitShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { MeshError } from "./errors.js";

/** How idempotent unary calls are retried on UNAVAILABLE (maxAttempts 1: no retries). */
export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

/** 5 attempts, 100 ms doubling up to 2 s, each wait drawn at random up to its bound. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  multiplier: 2,
};

/** Deadline of a unary call that has none. */
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface ClientOptions {
  /** "http://host:port" for plaintext, "https://host:port" for TLS. */
  baseUrl: string;
  /** Sent on every call as "authorization: Bearer <apiKey>". */
  apiKey?: string;
  /** Deadline of unary calls without their own timeoutMs; streams have none by default. */
  timeoutMs?: number;
  retry?: RetryPolicy;
  /** Roots and, for mTLS, a client certificate (PEM), for an https baseUrl. */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** More Connect interceptors, run inside the SDK's behaviour (per attempt). */
  interceptors?: Interceptor[];
}

/**
 * Methods ("package.Service/Method") retried on UNAVAILABLE. Left out: TriggerSpellcheck (a
 * repeat stores the text again) and ResolvePipeline (it publishes PhaseSkipped events unless
 * dry_run). CreateBatch, StartPipeline and RetryRun are idempotent through the request id the SDK
 * fills in (so a retry cannot start a second attempt); cancelling a cancelled run returns it.
 */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "huleedu.batch.v1.BatchService/CreateBatch",
  "huleedu.batch.v1.BatchService/StartPipeline",
  "huleedu.batch.v1.BatchService/GetBatchStatus",
  "huleedu.batch.v1.BatchService/ListBatches",
  "huleedu.batch.v1.BatchService/CancelRun",
  "huleedu.batch.v1.BatchService/RetryRun",
  "huleedu.batch.v1.BatchService/UpdateBatch",
  "huleedu.batch.v1.BatchService/GetEssay",
  "huleedu.batch.v1.BatchService/ListEssays",
  "huleedu.conductor.v1.PipelineConductorService/ListPipelines",
  "huleedu.conductor.v1.PipelineConductorService/GetPipeline",
  "huleedu.conductor.v1.PipelineConductorService/RegisterBatch",
  "huleedu.conductor.v1.PipelineConductorService/ValidatePrerequisites",
  "huleedu.conductor.v1.PipelineConductorService/RecordStepOutcome",
  "huleedu.conductor.v1.PipelineConductorService/GetBatchPipelineState",
  "huleedu.conductor.v1.PipelineConductorService/ReopenEssays",
  "huleedu.conductor.v1.PipelineConductorService/ExpireStep",
  "huleedu.conductor.v1.PipelineConductorService/GetEssayOutcomes",
]);

const WITH_REQUEST_ID = new Set([
  "huleedu.batch.v1.BatchService/CreateBatch",
  "huleedu.batch.v1.BatchService/StartPipeline",
  "huleedu.batch.v1.BatchService/RetryRun",
]);

type HeadersInit = ConstructorParameters<typeof Headers>[0];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A Connect transport over gRPC (HTTP/2) with the SDK's behaviour around `inner` (by default
 * connect-node's gRPC transport for `options.baseUrl`): the API key, a default deadline on unary
 * calls, retries of idempotent unary calls on UNAVAILABLE with backoff, request ids, and every
 * failure as a MeshError.
 */
export function createMeshTransport(options: ClientOptions, inner?: Transport): Transport {
  const transport =
    inner ??
    createGrpcTransport({
      baseUrl: options.baseUrl,
      interceptors: options.interceptors ?? [],
      nodeOptions: options.tls ? { ...options.tls } : {},
    });
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const retry = options.retry ?? DEFAULT_RETRY_POLICY;
  const headers = (init: HeadersInit | undefined): Headers => {
    const header = new Headers(init);
    if (options.apiKey) header.set("authorization", `Bearer ${options.apiKey}`);
    return header;
  };
  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      callTimeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: Parameters<Transport["unary"]>[5],
    ) {
      const name = `${method.parent.typeName}/${method.name}`;
      const message = withRequestId(name, input);
      const deadline = Date.now() + (callTimeoutMs ?? timeoutMs);
      const attempts = IDEMPOTENT_METHODS.has(name) ? Math.max(retry.maxAttempts, 1) : 1;
      let backoff = retry.initialBackoffMs;
      for (let attempt = 1; ; attempt++) {
        const remaining = Math.max(deadline - Date.now(), 1);
        try {
          return await transport.unary(
            method,
            signal,
            remaining,
            headers(header),
            message,
            contextValues,
          );
        } catch (reason) {
          const error = ConnectError.from(reason);
          const pause = Math.random() * backoff;
          const late = Date.now() + pause >= deadline;
          if (error.code !== Code.Unavailable || attempt >= attempts || late || signal?.aborted) {
            throw new MeshError(error);
          }
          await sleep(pause);
          backoff = Math.min(backoff * retry.multiplier, retry.maxBackoffMs);
        }
      }
    },
    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      callTimeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: Parameters<Transport["stream"]>[5],
    ) {
      try {
        const response = await transport.stream(
          method,
          signal,
          callTimeoutMs,
          headers(header),
          input,
          contextValues,
        );
        return { ...response, message: translated(response.message) };
      } catch (reason) {
        throw MeshError.from(reason);
      }
    },
  };
}

function withRequestId<I extends DescMessage>(
  name: string,
  input: MessageInitShape<I>,
): MessageInitShape<I> {
  const fields = input as { requestId?: string };
  if (WITH_REQUEST_ID.has(name) && !fields.requestId) {
    return { ...input, requestId: `ts-${randomUUID()}` };
  }
  return input;
}

async function* translated<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    throw MeshError.from(reason);
  }
}
