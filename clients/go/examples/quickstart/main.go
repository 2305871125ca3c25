package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	batchv1 "github.com/huleedu/pipeline-mesh/clients/go/gen/huleedu/batch/v1"
	"github.com/huleedu/pipeline-mesh/clients/go/huleedu"
)

func main() {
	address := os.Getenv("BATCH_ADDRESS")
	if address == "" {
		address = "127.0.0.1:5000"
	}
	client, err := huleedu.NewBatchClient(address, huleedu.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()

	created, err := client.CreateBatch(ctx, &batchv1.CreateBatchRequest{
		Essays:   []*batchv1.EssayInput{{Text: "Teh cat sat on teh mat."}},
		Metadata: &batchv1.BatchMetadata{Flags: map[string]bool{"prompt_attached": true}},
	})
	if err != nil {
		log.Fatal(err)
	}
	batchID := created.GetBatch().GetBatchId()
	started, err := client.StartPipeline(ctx, &batchv1.StartPipelineRequest{BatchId: batchID, Pipeline: "comprehensive"})
	if err != nil {
		log.Fatal(err)
	}
	err = client.Watch(ctx, batchID, started.GetRun().GetRunId(), func(u *batchv1.WatchBatchResponse) error {
		steps := []string{}
		for _, s := range u.GetRun().GetSteps() {
			steps = append(steps, fmt.Sprintf("%s=%s", s.GetStep(), s.GetStatus()))
		}
		fmt.Println(u.GetSequence(), u.GetRun().GetStatus(), strings.Join(steps, " "))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	_, err = client.GetBatchStatus(ctx, &batchv1.GetBatchStatusRequest{BatchId: "no-such-batch"})
	var e *huleedu.Error
	if errors.As(err, &e) && errors.Is(err, huleedu.ErrNotFound) {
		fmt.Println("not found:", e.Code, e.Reason())
	}
}
