package huleedu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	batchv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/batch/v1"
	conductorv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/conductor/v1"
)

// BatchClient calls the BatchService. Every RPC of batchv1.BatchServiceClient is a method.
type BatchClient struct {
	batchv1.BatchServiceClient
	conn *grpc.ClientConn
}

// batchIdempotent are the BatchService methods retried on UNAVAILABLE. TriggerSpellcheck is not:
// a repeat stores the text again under a new essay id.
var batchIdempotent = []string{
	batchv1.BatchService_CreateBatch_FullMethodName, // with the request id the SDK fills in
	batchv1.BatchService_StartPipeline_FullMethodName,
	batchv1.BatchService_GetBatchStatus_FullMethodName,
	batchv1.BatchService_ListBatches_FullMethodName,
	batchv1.BatchService_WatchBatch_FullMethodName,
	batchv1.BatchService_CancelRun_FullMethodName, // cancelling a cancelled run returns it
	batchv1.BatchService_RetryRun_FullMethodName,  // with the request id the SDK fills in
	batchv1.BatchService_UpdateBatch_FullMethodName,
	batchv1.BatchService_GetEssay_FullMethodName,
	batchv1.BatchService_ListEssays_FullMethodName,
}

// NewBatchClient connects lazily to the BatchService at target ("host:port", or any gRPC target).
func NewBatchClient(target string, opts ...Option) (*BatchClient, error) {
	conn, err := dial(target, newOptions(opts), batchIdempotent)
	if err != nil {
		return nil, err
	}
	return &BatchClient{batchv1.NewBatchServiceClient(conn), conn}, nil
}

// Close closes the connection.
func (c *BatchClient) Close() error { return c.conn.Close() }

// Watch streams a run's progress to fn until the run ends (nil), fn returns an error (that
// error), or the stream fails (an *Error). runID "" watches the batch's newest run.
func (c *BatchClient) Watch(
	ctx context.Context, batchID, runID string, fn func(*batchv1.WatchBatchResponse) error,
) error {
	stream, err := c.WatchBatch(ctx, &batchv1.WatchBatchRequest{BatchId: batchID, RunId: runID})
	if err != nil {
		return err
	}
	for {
		update, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(update); err != nil {
			return err
		}
	}
}

// ConductorClient calls the PipelineConductor. Every RPC of
// conductorv1.PipelineConductorServiceClient is a method.
type ConductorClient struct {
	conductorv1.PipelineConductorServiceClient
	conn *grpc.ClientConn
}

// conductorIdempotent are the conductor methods retried on UNAVAILABLE. ResolvePipeline is not:
// unless dry_run is set it publishes a PhaseSkipped event per pruned step.
var conductorIdempotent = []string{
	conductorv1.PipelineConductorService_ListPipelines_FullMethodName,
	conductorv1.PipelineConductorService_GetPipeline_FullMethodName,
	conductorv1.PipelineConductorService_RegisterBatch_FullMethodName,
	conductorv1.PipelineConductorService_ValidatePrerequisites_FullMethodName,
	conductorv1.PipelineConductorService_RecordStepOutcome_FullMethodName,
	conductorv1.PipelineConductorService_GetBatchPipelineState_FullMethodName,
	conductorv1.PipelineConductorService_ReopenEssays_FullMethodName,
	conductorv1.PipelineConductorService_ExpireStep_FullMethodName,
	conductorv1.PipelineConductorService_GetEssayOutcomes_FullMethodName,
}

// NewConductorClient connects lazily to the PipelineConductor at target.
func NewConductorClient(target string, opts ...Option) (*ConductorClient, error) {
	conn, err := dial(target, newOptions(opts), conductorIdempotent)
	if err != nil {
		return nil, err
	}
	return &ConductorClient{conductorv1.NewPipelineConductorServiceClient(conn), conn}, nil
}

// Close closes the connection.
func (c *ConductorClient) Close() error { return c.conn.Close() }

// unaryInterceptor gives a call without a deadline the default one, fills in missing request ids
// (so that retrying a create, start or retry is safe) and turns failures into *Error.
func unaryInterceptor(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(
		ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
	) error {
		if _, ok := ctx.Deadline(); !ok && timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return FromError(invoker(ctx, method, withRequestID(req), reply, cc, opts...))
	}
}

// withRequestID is req, or a copy of it with a random request id when it has an empty one.
func withRequestID(req any) any {
	switch r := req.(type) {
	case *batchv1.CreateBatchRequest:
		if r.GetRequestId() == "" {
			r = proto.CloneOf(r)
			r.RequestId = newRequestID()
			return r
		}
	case *batchv1.StartPipelineRequest:
		if r.GetRequestId() == "" {
			r = proto.CloneOf(r)
			r.RequestId = newRequestID()
			return r
		}
	case *batchv1.RetryRunRequest:
		if r.GetRequestId() == "" {
			r = proto.CloneOf(r)
			r.RequestId = newRequestID()
			return r
		}
	}
	return req
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "go-" + hex.EncodeToString(b)
}

// streamInterceptor turns a stream's failures into *Error (io.EOF, the normal end, stays io.EOF).
func streamInterceptor(
	ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption,
) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return errorStream{stream}, nil
}

type errorStream struct{ grpc.ClientStream }

func (s errorStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return FromError(err)
}

func (s errorStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return FromError(err)
}
