-- The stamp triggers of 0003, completed: a write by a transaction that did not mark itself
-- (conductor.stamped) stamps each batch a row is written into or moves out of, once per
-- transaction, and a TRUNCATE of either table stamps every batch (mesh_stamp_once and
-- mesh_stamp_every, mesh's 0004).
SET LOCAL lock_timeout = '5s';

CREATE OR REPLACE FUNCTION conductor_stamp_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM mesh_stamp_once(
            'conductor_batches', 'batch_id', 'tally_stamp', 'conductor_tally_stamps', OLD.batch_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM mesh_stamp_once(
            'conductor_batches', 'batch_id', 'tally_stamp', 'conductor_tally_stamps', NEW.batch_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER essay_step_outcomes_truncated AFTER TRUNCATE ON essay_step_outcomes
    FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('conductor_batches', 'tally_stamp', 'conductor_tally_stamps');
CREATE TRIGGER processing_pipeline_state_truncated AFTER TRUNCATE ON processing_pipeline_state
    FOR EACH STATEMENT
    EXECUTE FUNCTION mesh_stamp_every('conductor_batches', 'tally_stamp', 'conductor_tally_stamps');
