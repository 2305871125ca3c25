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
	"google.golang.org/protobuf/types/known/fieldmaskpb"

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

// Needs the run control of issue #19 on the servers: CancelRun, RetryRun.
func TestACancelledRunEndsCancelledAndARetryFinishesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := batchClient(t)
	created, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{
		Essays:   []*batchv1.EssayInput{{Text: "Teh first essay."}, {Text: "A second essay."}},
		Metadata: &batchv1.BatchMetadata{Flags: map[string]bool{"prompt_attached": true}},
	})
	if err != nil {
		t.Fatalf("CreateBatch: %v", err)
	}
	batchID := created.GetBatch().GetBatchId()
	started, err := client.StartPipeline(ctx, &batchv1.StartPipelineRequest{BatchId: batchID, Pipeline: "comprehensive"})
	if err != nil {
		t.Fatalf("StartPipeline: %v", err)
	}
	runID := started.GetRun().GetRunId()
	request := &batchv1.CancelRunRequest{BatchId: batchID, RunId: runID, Reason: "wrong prompt"}
	cancelled, err := client.CancelRun(ctx, request)
	if err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	run := cancelled.GetRun()
	if run.GetStatus() != batchv1.RunStatus_RUN_STATUS_CANCELLED || run.GetCancelReason() != "wrong prompt" {
		t.Fatalf("cancelled run %v", run)
	}
	if again, err := client.CancelRun(ctx, request); err != nil || again.GetRun().GetStatus() != batchv1.RunStatus_RUN_STATUS_CANCELLED {
		t.Fatalf("cancelling again: %v, %v", again, err)
	}
	retried, err := client.RetryRun(ctx, &batchv1.RetryRunRequest{BatchId: batchID, RunId: runID})
	if err != nil {
		t.Fatalf("RetryRun: %v", err)
	}
	if retried.GetRun().GetAttempt() != 2 || len(retried.GetRetriedSteps()) == 0 {
		t.Fatalf("retried %v", retried)
	}
	var last *batchv1.WatchBatchResponse
	err = client.Watch(ctx, batchID, runID, func(u *batchv1.WatchBatchResponse) error {
		last = u
		return nil
	})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if last.GetRun().GetStatus() != batchv1.RunStatus_RUN_STATUS_COMPLETED || last.GetRun().GetAttempt() != 2 {
		t.Fatalf("the retried run ended %v", last.GetRun())
	}
	_, err = client.RetryRun(ctx, &batchv1.RetryRunRequest{BatchId: batchID, RunId: runID})
	var e *huleedu.Error
	if !errors.As(err, &e) || !errors.Is(err, huleedu.ErrFailedPrecondition) || e.Reason() != "NOTHING_TO_RETRY" {
		t.Fatalf("retrying a completed run: %v, want FAILED_PRECONDITION NOTHING_TO_RETRY", err)
	}
}

// Needs UpdateBatch, GetEssay and ListEssays (issue #19) on the servers.
func TestABatchIsUpdatedAndItsEssaysRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := batchClient(t)
	created, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{
		Essays: []*batchv1.EssayInput{{Text: "Teh first essay.", ClientRef: "a"}, {Text: "Second.", ClientRef: "b"}},
	})
	if err != nil {
		t.Fatalf("CreateBatch: %v", err)
	}
	batchID := created.GetBatch().GetBatchId()
	updated, err := client.UpdateBatch(ctx, &batchv1.UpdateBatchRequest{
		BatchId:    batchID,
		Metadata:   &batchv1.BatchMetadata{Labels: map[string]string{"term": "ht25"}, Name: "ignored"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}},
	})
	if err != nil {
		t.Fatalf("UpdateBatch: %v", err)
	}
	if meta := updated.GetBatch().GetMetadata(); meta.GetLabels()["term"] != "ht25" || meta.GetName() != "" {
		t.Fatalf("metadata after the update %v", meta)
	}
	page, err := client.ListEssays(ctx, &batchv1.ListEssaysRequest{BatchId: batchID, PageSize: 1})
	if err != nil {
		t.Fatalf("ListEssays: %v", err)
	}
	if len(page.GetEssays()) != 1 || page.GetEssays()[0].GetClientRef() != "a" || page.GetNextPageToken() == "" {
		t.Fatalf("first page %v", page)
	}
	essay, err := client.GetEssay(ctx, &batchv1.GetEssayRequest{EssayId: page.GetEssays()[0].GetEssayId()})
	if err != nil {
		t.Fatalf("GetEssay: %v", err)
	}
	if essay.GetEssay().GetOriginalText() != "Teh first essay." || essay.GetEssay().GetBatchId() != batchID {
		t.Fatalf("essay %v", essay.GetEssay())
	}
}
