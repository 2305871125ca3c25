-- ListBatches filters (batch_server/store/postgres.py, _LIST_BATCHES).
--
-- The newest run of each listed batch, for its status and the latest_run_statuses filter: one
-- probe of this index per batch, an index-only scan (status is included), whatever the number
-- of runs the batch has.
CREATE INDEX pipeline_runs_newest ON pipeline_runs (batch_id, created_at DESC, run_id DESC)
    INCLUDE (status);

-- The labels filter (labels @> '{"term": "spring"}'): a label few batches have is found through
-- this index instead of a scan of every batch.
CREATE INDEX batches_labels ON batches USING gin (labels jsonb_path_ops);
