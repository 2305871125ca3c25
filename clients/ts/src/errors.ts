import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type PreconditionFailure,
  type ResourceInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";

/**
 * A failed RPC: its status code and message, and the google.rpc details the server attached,
 * decoded. A detail the server did not send is undefined. Every SDK call rejects with a
 * MeshError (the Connect error is its `cause`).
 *
 * ```ts
 * try { await batches.getBatchStatus({ batchId }); }
 * catch (e) { if (e instanceof MeshError && e.code === Code.NotFound) { ... } }
 * ```
 */
export class MeshError extends Error {
  override readonly name = "MeshError";
  /** The status code (Code.NotFound, Code.InvalidArgument, ...). */
  readonly code: Code;
  /** The server's message, without the code. */
  readonly rawMessage: string;
  /** The machine-readable reason ("BATCH_NOT_FOUND", "PREREQUISITES_NOT_MET", ...; docs/errors.md
   * lists them) and the error domain. */
  readonly errorInfo?: ErrorInfo;
  /** Each invalid field (INVALID_ARGUMENT). */
  readonly badRequest?: BadRequest;
  /** Each unmet precondition (FAILED_PRECONDITION), e.g. type "FLAG", subject "prompt_attached". */
  readonly preconditionFailure?: PreconditionFailure;
  /** How long to wait before trying again (RESOURCE_EXHAUSTED, UNAVAILABLE). */
  readonly retryInfo?: RetryInfo;
  /** The resource concerned (a batch, a run, a backend). */
  readonly resourceInfo?: ResourceInfo;

  constructor(error: ConnectError) {
    super(`${Code[error.code]}: ${error.rawMessage}`, { cause: error });
    this.code = error.code;
    this.rawMessage = error.rawMessage;
    this.errorInfo = error.findDetails(ErrorInfoSchema)[0];
    this.badRequest = error.findDetails(BadRequestSchema)[0];
    this.preconditionFailure = error.findDetails(PreconditionFailureSchema)[0];
    this.retryInfo = error.findDetails(RetryInfoSchema)[0];
    this.resourceInfo = error.findDetails(ResourceInfoSchema)[0];
  }

  /** The ErrorInfo reason, or "" without an ErrorInfo. */
  get reason(): string {
    return this.errorInfo?.reason ?? "";
  }

  /** `reason` as a MeshError (a MeshError is returned as it is). */
  static from(reason: unknown): MeshError {
    return reason instanceof MeshError ? reason : new MeshError(ConnectError.from(reason));
  }
}
