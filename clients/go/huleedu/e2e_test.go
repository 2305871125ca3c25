//go:build e2e

// The SDK against real servers: tests/e2e/test_sdk_go.py starts both servers and the demo
// workers on real backends and runs `go test -tags e2e` with their addresses in
// HULEEDU_BATCH_ADDRESS and HULEEDU_CONDUCTOR_ADDRESS.
package huleedu_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	batchv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/batch/v1"
	conductorv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/conductor/v1"
	"github.com/huleedu/pipeline-mesh/clients/go/huleedu"
)

func address(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set (tests/e2e/test_sdk_go.py sets it)", name)
	}
	return value
}

func batchClient(t *testing.T) *huleedu.BatchClient {
	t.Helper()
	client, err := huleedu.NewBatchClient(address(t, "HULEEDU_BATCH_ADDRESS"), huleedu.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func TestAComprehensiveRunEndsAndItsStatusReadsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := batchClient(t)
	created, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{
		Essays: []*batchv1.EssayInput{
			{Text: "Teh cat sat on teh mat.", ClientRef: "a"},
			{Text: "Essays are fun to write.", ClientRef: "b"},
		},
		Metadata: &batchv1.BatchMetadata{Name: "go-sdk", Flags: map[string]bool{"prompt_attached": true}},
	})
	if err != nil {
		t.Fatalf("CreateBatch: %v", err)
	}
	batchID := created.GetBatch().GetBatchId()
	started, err := client.StartPipeline(ctx, &batchv1.StartPipelineRequest{BatchId: batchID, Pipeline: "comprehensive"})
	if err != nil {
		t.Fatalf("StartPipeline: %v", err)
	}
	want := []string{"spellcheck", "nlp", "cj_assessment", "ai_feedback"}
	if got := started.GetSteps(); len(got) != len(want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	var last *batchv1.WatchBatchResponse
	err = client.Watch(ctx, batchID, started.GetRun().GetRunId(), func(u *batchv1.WatchBatchResponse) error {
		t.Logf("#%d %s", u.GetSequence(), u.GetRun().GetStatus())
		last = u
		return nil
	})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if last.GetRun().GetStatus() != batchv1.RunStatus_RUN_STATUS_COMPLETED {
		t.Fatalf("the run ended %v", last.GetRun().GetStatus())
	}
	status, err := client.GetBatchStatus(ctx, &batchv1.GetBatchStatusRequest{BatchId: batchID})
	if err != nil {
		t.Fatalf("GetBatchStatus: %v", err)
	}
	runs := status.GetRuns()
	if len(runs) != 1 || runs[0].GetStatus() != batchv1.RunStatus_RUN_STATUS_COMPLETED {
		t.Fatalf("runs %v", runs)
	}
	for _, step := range runs[0].GetSteps() {
		if step.GetStatus() != batchv1.RunStepStatus_RUN_STEP_STATUS_SATISFIED || step.GetSucceeded() != 2 {
			t.Fatalf("step %v", step)
		}
	}
	conductor, err := huleedu.NewConductorClient(address(t, "HULEEDU_CONDUCTOR_ADDRESS"), huleedu.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conductor.Close()
	state, err := conductor.GetBatchPipelineState(ctx, &conductorv1.GetBatchPipelineStateRequest{BatchId: batchID})
	if err != nil {
		t.Fatalf("GetBatchPipelineState: %v", err)
	}
	if len(state.GetSteps()) != len(want) {
		t.Fatalf("conductor state %v", state)
	}
}

func TestAnUnknownBatchIsNotFound(t *testing.T) {
	_, err := batchClient(t).GetBatchStatus(context.Background(), &batchv1.GetBatchStatusRequest{BatchId: "no-such-batch"})
	var e *huleedu.Error
	if !errors.As(err, &e) || !errors.Is(err, huleedu.ErrNotFound) {
		t.Fatalf("got %v, want NOT_FOUND", err)
	}
	if e.Reason() != "BATCH_NOT_FOUND" || e.ResourceInfo.GetResourceName() != "no-such-batch" {
		t.Fatalf("details: %v %v", e.ErrorInfo, e.ResourceInfo)
	}
}

func TestABatchWithoutEssaysIsAnInvalidArgumentNamingTheField(t *testing.T) {
	_, err := batchClient(t).CreateBatch(context.Background(), &batchv1.CreateBatchRequest{})
	var e *huleedu.Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
	violations := e.BadRequest.GetFieldViolations()
	if len(violations) != 1 || violations[0].GetField() != "essays" {
		t.Fatalf("field violations %v", violations)
	}
}

func TestAGatedPipelineWithoutItsFlagIsAFailedPrecondition(t *testing.T) {
	ctx := context.Background()
	client := batchClient(t)
	created, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{
		Essays: []*batchv1.EssayInput{{Text: "No prompt attached."}},
	})
	if err != nil {
		t.Fatalf("CreateBatch: %v", err)
	}
	_, err = client.StartPipeline(ctx, &batchv1.StartPipelineRequest{
		BatchId: created.GetBatch().GetBatchId(), Pipeline: "comprehensive",
	})
	var e *huleedu.Error
	if !errors.As(err, &e) || !errors.Is(err, huleedu.ErrFailedPrecondition) {
		t.Fatalf("got %v, want FAILED_PRECONDITION", err)
	}
	found := false
	for _, v := range e.PreconditionFailure.GetViolations() {
		found = found || (v.GetType() == "FLAG" && v.GetSubject() == "prompt_attached")
	}
	if !found {
		t.Fatalf("violations %v, want FLAG prompt_attached", e.PreconditionFailure.GetViolations())
	}
}
