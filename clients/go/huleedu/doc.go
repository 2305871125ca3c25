// Package huleedu is the Go client SDK of the HuleEdu pipeline mesh: the BatchService (batches of
// essays and the pipeline runs over them) and the PipelineConductor (pipeline definitions and
// per-step state).
//
// The clients embed the generated gRPC clients (package gen/huleedu/batch/v1 and
// gen/huleedu/conductor/v1), so every RPC is a method taking and returning the generated
// messages. What the SDK adds, on every call:
//
//   - transport security: TLS with the system roots unless WithTLS gives a config, or WithInsecure
//     asks for plaintext (local development);
//   - an API key, sent as "authorization: Bearer <key>" metadata (WithAPIKey);
//   - a deadline (10 s unless WithTimeout says otherwise) on unary calls that have none; streams
//     (WatchBatch) run until the run ends or their context is done;
//   - retries with exponential backoff on UNAVAILABLE for the idempotent calls only (see
//     RetryPolicy); CreateBatch, StartPipeline and RetryRun are made idempotent by a request id
//     the SDK fills in when the caller leaves it empty (so a retry cannot start a second
//     attempt); TriggerSpellcheck and ResolvePipeline are never retried;
//   - failures as *Error, with the google.rpc details the servers attach (ErrorInfo, BadRequest,
//     PreconditionFailure, RetryInfo, ResourceInfo) as typed fields; errors.Is matches the
//     sentinels ErrNotFound, ErrInvalidArgument, ErrFailedPrecondition and the others.
//
// For example:
//
//	client, err := huleedu.NewBatchClient("127.0.0.1:5000", huleedu.WithInsecure())
//	if err != nil { ... }
//	defer client.Close()
//	res, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{...})
//	var e *huleedu.Error
//	if errors.As(err, &e) && e.BadRequest != nil { ... e.BadRequest.GetFieldViolations() ... }
package huleedu

// Version is the SDK's version; it moves with the contract's (protos/released/).
const Version = "0.1.0"
