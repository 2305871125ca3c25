-- A stamp on each batch, new with every transaction that writes what a run's advancement reads
-- (the batch's essays, step results, runs and run steps): a BatchService that keeps the progress
-- it committed (batch_server.store.postgres) reads the stamp under the batch's row lock and uses
-- what it kept only when the stamp is the one it wrote. The stamps come from a sequence, so a
-- value is never written twice.
--
-- The BatchService stamps a batch in the statement that locks it, and marks its transaction
-- (batch.stamped), as CreateBatch does; a write from any transaction not so marked (a
-- BatchService of an earlier version during a rolling update, an operator's SQL) is stamped by
-- these triggers: each batch a row is written into or moves out of, once per transaction, and
-- every batch on a TRUNCATE (mesh_stamp_once and mesh_stamp_every, mesh's 0004). The batch's own
-- row is read under the lock every time (its metadata is never kept), and
-- run_steps.expiring_since (the deadline watch's lease) is not read by advancement: neither
-- needs a stamp.
SET LOCAL lock_timeout = '5s';

CREATE SEQUENCE batch_progress_stamps;
ALTER TABLE batches ADD COLUMN progress_stamp BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION batch_stamp_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM mesh_stamp_once(
            'batches', 'batch_id', 'progress_stamp', 'batch_progress_stamps', OLD.batch_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM mesh_stamp_once(
            'batches', 'batch_id', 'progress_stamp', 'batch_progress_stamps', NEW.batch_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION batch_stamp_run_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM mesh_stamp_once('batches', 'batch_id', 'progress_stamp', 'batch_progress_stamps',
                                (SELECT batch_id FROM pipeline_runs WHERE run_id = OLD.run_id));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM mesh_stamp_once('batches', 'batch_id', 'progress_stamp', 'batch_progress_stamps',
                                (SELECT batch_id FROM pipeline_runs WHERE run_id = NEW.run_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER batch_essays_stamp
    AFTER INSERT OR UPDATE OR DELETE ON batch_essays
    FOR EACH ROW WHEN (current_setting('batch.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION batch_stamp_progress();

CREATE TRIGGER batch_step_results_stamp
    AFTER INSERT OR UPDATE OR DELETE ON batch_step_results
    FOR EACH ROW WHEN (current_setting('batch.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION batch_stamp_progress();

CREATE TRIGGER pipeline_runs_stamp
    AFTER INSERT OR UPDATE OR DELETE ON pipeline_runs
    FOR EACH ROW WHEN (current_setting('batch.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION batch_stamp_progress();

CREATE TRIGGER run_steps_stamp
    AFTER INSERT OR DELETE OR UPDATE OF run_id, position, step, command, depends_on, status,
        succeeded, failed, total, essay_ids, attempt, timeout_seconds, deadline, timed_out,
        retry_essays
    ON run_steps
    FOR EACH ROW WHEN (current_setting('batch.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION batch_stamp_run_progress();

CREATE TRIGGER batch_essays_truncated AFTER TRUNCATE ON batch_essays FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('batches', 'progress_stamp', 'batch_progress_stamps');
CREATE TRIGGER batch_step_results_truncated AFTER TRUNCATE ON batch_step_results FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('batches', 'progress_stamp', 'batch_progress_stamps');
CREATE TRIGGER pipeline_runs_truncated AFTER TRUNCATE ON pipeline_runs FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('batches', 'progress_stamp', 'batch_progress_stamps');
CREATE TRIGGER run_steps_truncated AFTER TRUNCATE ON run_steps FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('batches', 'progress_stamp', 'batch_progress_stamps');
