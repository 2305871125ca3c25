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
