-- The stamp triggers of 0003, completed: a write by a transaction that did not mark itself
-- (conductor.stamped) stamps each batch a row moves out of as well as the one it moves into, once
-- per transaction (the batch's row then stays locked to the end of it, so no conductor can keep
-- a tally in between), and a TRUNCATE of either table stamps every batch.
SET LOCAL lock_timeout = '5s';

-- A new stamp for the batch, unless this transaction stamped it already.
CREATE FUNCTION conductor_stamp(changed TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mark CONSTANT TEXT := 'conductor.stamped_' || md5(changed);
BEGIN
    IF changed IS NULL OR current_setting(mark, true) = 'on' THEN
        RETURN;
    END IF;
    UPDATE conductor_batches SET tally_stamp = nextval('conductor_tally_stamps')
     WHERE batch_id = changed;
    PERFORM set_config(mark, 'on', true);
END
$$;

CREATE OR REPLACE FUNCTION conductor_stamp_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM conductor_stamp(OLD.batch_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM conductor_stamp(NEW.batch_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION conductor_stamp_every_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conductor_batches SET tally_stamp = nextval('conductor_tally_stamps');
    RETURN NULL;
END
$$;

CREATE TRIGGER essay_step_outcomes_truncated AFTER TRUNCATE ON essay_step_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION conductor_stamp_every_batch();
CREATE TRIGGER processing_pipeline_state_truncated AFTER TRUNCATE ON processing_pipeline_state
    FOR EACH STATEMENT EXECUTE FUNCTION conductor_stamp_every_batch();
