-- A stamp on each batch, new with every transaction that writes what a run's advancement reads
-- (the batch's essays, step results, runs and run steps): a BatchService that keeps the progress
-- it committed (batch_server.store.postgres) reads the stamp under the batch's row lock and uses
-- what it kept only when the stamp is the one it wrote. The stamps come from a sequence, so a
-- value is never written twice.
--
-- The BatchService stamps a batch in the statement that locks it, and marks its transaction
-- (batch.stamped), as CreateBatch does; a write from any transaction not so marked (a
-- BatchService of an earlier version during a rolling update, an operator's SQL) is stamped by
-- these triggers: each batch a row moves into or out of, once per transaction (its row then
-- stays locked to the end of it, so no unit can keep progress in between), and every batch on
-- a TRUNCATE. The batch's own row is read under the lock every time (its metadata is never
-- kept), and run_steps.expiring_since (the deadline watch's lease) is not read by advancement:
-- neither needs a stamp.
SET LOCAL lock_timeout = '5s';

CREATE SEQUENCE batch_progress_stamps;
ALTER TABLE batches ADD COLUMN progress_stamp BIGINT NOT NULL DEFAULT 0;

-- A new stamp for the batch, unless this transaction stamped it already.
CREATE FUNCTION batch_stamp(changed TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mark CONSTANT TEXT := 'batch.stamped_' || md5(changed);
BEGIN
    IF changed IS NULL OR current_setting(mark, true) = 'on' THEN
        RETURN;
    END IF;
    UPDATE batches SET progress_stamp = nextval('batch_progress_stamps')
     WHERE batch_id = changed;
    PERFORM set_config(mark, 'on', true);
END
$$;

CREATE FUNCTION batch_stamp_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM batch_stamp(OLD.batch_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM batch_stamp(NEW.batch_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION batch_stamp_run_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM batch_stamp((SELECT batch_id FROM pipeline_runs WHERE run_id = OLD.run_id));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM batch_stamp((SELECT batch_id FROM pipeline_runs WHERE run_id = NEW.run_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION batch_stamp_every_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batches SET progress_stamp = nextval('batch_progress_stamps');
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

CREATE TRIGGER batch_essays_truncated AFTER TRUNCATE ON batch_essays
    FOR EACH STATEMENT EXECUTE FUNCTION batch_stamp_every_batch();
CREATE TRIGGER batch_step_results_truncated AFTER TRUNCATE ON batch_step_results
    FOR EACH STATEMENT EXECUTE FUNCTION batch_stamp_every_batch();
CREATE TRIGGER pipeline_runs_truncated AFTER TRUNCATE ON pipeline_runs
    FOR EACH STATEMENT EXECUTE FUNCTION batch_stamp_every_batch();
CREATE TRIGGER run_steps_truncated AFTER TRUNCATE ON run_steps
    FOR EACH STATEMENT EXECUTE FUNCTION batch_stamp_every_batch();
