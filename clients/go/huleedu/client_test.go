package huleedu

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	batchv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/batch/v1"
	conductorv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/conductor/v1"
)

// fakeBatch fails each method with UNAVAILABLE `failures` times, then answers; it records what
// the calls carried.
type fakeBatch struct {
	batchv1.UnimplementedBatchServiceServer
	mu        sync.Mutex
	failures  int
	calls     map[string]int
	deadlines []time.Duration
	auth      []string
	requestID string
	retryIDs  []string
}

func (f *fakeBatch) record(ctx context.Context, method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if d, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(d))
	}
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, md.Get("authorization")...)
	if f.calls[method] <= f.failures {
		return status.Error(codes.Unavailable, "try again")
	}
	return nil
}

func (f *fakeBatch) GetBatchStatus(
	ctx context.Context, req *batchv1.GetBatchStatusRequest,
) (*batchv1.GetBatchStatusResponse, error) {
	if err := f.record(ctx, "GetBatchStatus"); err != nil {
		return nil, err
	}
	if req.GetBatchId() == "missing" {
		st, _ := status.New(codes.NotFound, "batch missing not found").WithDetails(
			&errdetails.ErrorInfo{Reason: "BATCH_NOT_FOUND", Domain: "batch.huleedu"},
			&errdetails.ResourceInfo{ResourceType: "batch", ResourceName: "missing"},
		)
		return nil, st.Err()
	}
	return &batchv1.GetBatchStatusResponse{Batch: &batchv1.Batch{BatchId: req.GetBatchId()}}, nil
}

func (f *fakeBatch) TriggerSpellcheck(
	ctx context.Context, _ *batchv1.TriggerSpellcheckRequest,
) (*batchv1.TriggerSpellcheckResponse, error) {
	if err := f.record(ctx, "TriggerSpellcheck"); err != nil {
		return nil, err
	}
	return &batchv1.TriggerSpellcheckResponse{EssayId: "e"}, nil
}

func (f *fakeBatch) CreateBatch(
	ctx context.Context, req *batchv1.CreateBatchRequest,
) (*batchv1.CreateBatchResponse, error) {
	f.mu.Lock()
	f.requestID = req.GetRequestId()
	f.mu.Unlock()
	if len(req.GetEssays()) == 0 {
		st, _ := status.New(codes.InvalidArgument, "essays: must contain at least one essay").
			WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "essays", Description: "must contain at least one essay"},
			}})
		return nil, st.Err()
	}
	return &batchv1.CreateBatchResponse{Batch: &batchv1.Batch{BatchId: "b"}}, nil
}

func (f *fakeBatch) RetryRun(
	ctx context.Context, req *batchv1.RetryRunRequest,
) (*batchv1.RetryRunResponse, error) {
	f.mu.Lock()
	f.retryIDs = append(f.retryIDs, req.GetRequestId())
	f.mu.Unlock()
	if err := f.record(ctx, "RetryRun"); err != nil {
		return nil, err
	}
	run := &batchv1.PipelineRun{RunId: req.GetRunId(), Attempt: 2, Status: batchv1.RunStatus_RUN_STATUS_RUNNING}
	return &batchv1.RetryRunResponse{Run: run}, nil
}

func (f *fakeBatch) CancelRun(
	ctx context.Context, req *batchv1.CancelRunRequest,
) (*batchv1.CancelRunResponse, error) {
	if err := f.record(ctx, "CancelRun"); err != nil {
		return nil, err
	}
	run := &batchv1.PipelineRun{RunId: req.GetRunId(), Status: batchv1.RunStatus_RUN_STATUS_CANCELLED}
	return &batchv1.CancelRunResponse{Run: run}, nil
}

func serve(t *testing.T, fake *fakeBatch, opts ...Option) *BatchClient {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	batchv1.RegisterBatchServiceServer(server, fake)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	dialer := func(ctx context.Context, _ string) (net.Conn, error) { return listener.DialContext(ctx) }
	opts = append([]Option{
		WithInsecure(),
		WithDialOptions(grpc.WithContextDialer(dialer)),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Multiplier: 2}),
	}, opts...)
	client, err := NewBatchClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func TestIdempotentCallsAreRetriedOnUnavailable(t *testing.T) {
	fake := &fakeBatch{failures: 2, calls: map[string]int{}}
	client := serve(t, fake)
	res, err := client.GetBatchStatus(context.Background(), &batchv1.GetBatchStatusRequest{BatchId: "b1"})
	if err != nil {
		t.Fatalf("GetBatchStatus: %v", err)
	}
	if res.GetBatch().GetBatchId() != "b1" || fake.calls["GetBatchStatus"] != 3 {
		t.Fatalf("got %v after %d calls, want b1 after 3", res, fake.calls["GetBatchStatus"])
	}
}

func TestNonIdempotentCallsAreNotRetried(t *testing.T) {
	fake := &fakeBatch{failures: 2, calls: map[string]int{}}
	client := serve(t, fake)
	_, err := client.TriggerSpellcheck(context.Background(), &batchv1.TriggerSpellcheckRequest{Text: "x"})
	if !errors.Is(err, ErrUnavailable) || fake.calls["TriggerSpellcheck"] != 1 {
		t.Fatalf("got %v after %d calls, want UNAVAILABLE after 1", err, fake.calls["TriggerSpellcheck"])
	}
}

func TestCallsCarryTheDefaultDeadlineAndTheAPIKey(t *testing.T) {
	fake := &fakeBatch{calls: map[string]int{}}
	client := serve(t, fake, WithTimeout(3*time.Second), WithAPIKey("k-123"))
	if _, err := client.GetBatchStatus(context.Background(), &batchv1.GetBatchStatusRequest{BatchId: "b"}); err != nil {
		t.Fatal(err)
	}
	if len(fake.deadlines) != 1 || fake.deadlines[0] > 3*time.Second || fake.deadlines[0] < time.Second {
		t.Fatalf("deadlines %v, want one of about 3s", fake.deadlines)
	}
	if len(fake.auth) != 1 || fake.auth[0] != "Bearer k-123" {
		t.Fatalf("authorization %v, want [Bearer k-123]", fake.auth)
	}
}

func TestCreateBatchGetsARequestIDWhenTheCallerGaveNone(t *testing.T) {
	fake := &fakeBatch{calls: map[string]int{}}
	client := serve(t, fake)
	request := &batchv1.CreateBatchRequest{Essays: []*batchv1.EssayInput{{Text: "x"}}}
	if _, err := client.CreateBatch(context.Background(), request); err != nil {
		t.Fatal(err)
	}
	if fake.requestID == "" || request.GetRequestId() != "" {
		t.Fatalf("server saw %q, caller's request now %q", fake.requestID, request.GetRequestId())
	}
}

func TestFailuresAreTypedErrors(t *testing.T) {
	client := serve(t, &fakeBatch{calls: map[string]int{}})
	_, err := client.GetBatchStatus(context.Background(), &batchv1.GetBatchStatusRequest{BatchId: "missing"})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("got %#v, want a NOT_FOUND *Error", err)
	}
	if e.Reason() != "BATCH_NOT_FOUND" || e.ResourceInfo.GetResourceName() != "missing" {
		t.Fatalf("details %v %v", e.ErrorInfo, e.ResourceInfo)
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("status.Code sees %v", status.Code(err))
	}
	_, err = client.CreateBatch(context.Background(), &batchv1.CreateBatchRequest{})
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
	if v := e.BadRequest.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "essays" {
		t.Fatalf("field violations %v", v)
	}
}

func TestRetryRunIsRetriedUnderTheOneRequestIDTheSDKFilledIn(t *testing.T) {
	fake := &fakeBatch{failures: 2, calls: map[string]int{}}
	client := serve(t, fake)
	request := &batchv1.RetryRunRequest{BatchId: "b", RunId: "r", Steps: []string{"nlp"}}
	res, err := client.RetryRun(context.Background(), request)
	if err != nil {
		t.Fatalf("RetryRun: %v", err)
	}
	if res.GetRun().GetAttempt() != 2 || len(fake.retryIDs) != 3 {
		t.Fatalf("got %v after %d attempts, want attempt 2 after 3", res, len(fake.retryIDs))
	}
	if fake.retryIDs[0] == "" || fake.retryIDs[1] != fake.retryIDs[0] || fake.retryIDs[2] != fake.retryIDs[0] {
		t.Fatalf("request ids %q, want one non-empty id for every attempt", fake.retryIDs)
	}
	if request.GetRequestId() != "" {
		t.Fatalf("the caller's request was changed: %q", request.GetRequestId())
	}
	if _, err := client.RetryRun(context.Background(), &batchv1.RetryRunRequest{BatchId: "b", RunId: "r", RequestId: "mine"}); err != nil {
		t.Fatal(err)
	}
	if last := fake.retryIDs[len(fake.retryIDs)-1]; last != "mine" {
		t.Fatalf("the caller's request id became %q", last)
	}
}

func TestCancelRunIsRetriedOnUnavailable(t *testing.T) {
	fake := &fakeBatch{failures: 1, calls: map[string]int{}}
	client := serve(t, fake)
	res, err := client.CancelRun(context.Background(), &batchv1.CancelRunRequest{BatchId: "b", RunId: "r"})
	if err != nil || res.GetRun().GetStatus() != batchv1.RunStatus_RUN_STATUS_CANCELLED || fake.calls["CancelRun"] != 2 {
		t.Fatalf("got %v, %v after %d calls", res, err, fake.calls["CancelRun"])
	}
}

// Every RPC is either retried or named here with the reason it is not: a new RPC must be classified.
func TestEveryRPCIsRetriedUnlessARepeatWouldDoItsWorkTwice(t *testing.T) {
	notRetried := map[string]bool{
		batchv1.BatchService_TriggerSpellcheck_FullMethodName:               true, // stores the text again
		conductorv1.PipelineConductorService_ResolvePipeline_FullMethodName: true, // publishes events
	}
	for _, service := range []struct {
		desc       grpc.ServiceDesc
		idempotent []string
	}{
		{batchv1.BatchService_ServiceDesc, batchIdempotent},
		{conductorv1.PipelineConductorService_ServiceDesc, conductorIdempotent},
	} {
		retried := map[string]bool{}
		for _, name := range service.idempotent {
			retried[name] = true
		}
		names := []string{}
		for _, m := range service.desc.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range service.desc.Streams {
			names = append(names, s.StreamName)
		}
		for _, name := range names {
			full := "/" + service.desc.ServiceName + "/" + name
			if retried[full] == notRetried[full] {
				t.Errorf("%s: retried %v, listed as not retried %v", full, retried[full], notRetried[full])
			}
		}
	}
}
