-- A stamp on each batch, new with every transaction that writes its outcomes or counts: a
-- conductor that keeps the tally it committed (conductor_server.store.postgres) reads the stamp
-- under the batch's row lock and uses what it kept only when the stamp is the one it wrote. The
-- stamps come from a sequence, so a value is never written twice.
--
-- The conductor stamps a batch in the statement that locks it and marks its transaction
-- (conductor.stamped); a write from any transaction not so marked (a conductor of an earlier
-- version during a rolling update, an operator's SQL) is stamped by these triggers, row by row.
SET LOCAL lock_timeout = '5s';

CREATE SEQUENCE conductor_tally_stamps;
ALTER TABLE conductor_batches ADD COLUMN tally_stamp BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION conductor_stamp_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE conductor_batches SET tally_stamp = nextval('conductor_tally_stamps')
         WHERE batch_id = OLD.batch_id;
    ELSE
        UPDATE conductor_batches SET tally_stamp = nextval('conductor_tally_stamps')
         WHERE batch_id = NEW.batch_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER essay_step_outcomes_stamp
    AFTER INSERT OR UPDATE OR DELETE ON essay_step_outcomes
    FOR EACH ROW WHEN (current_setting('conductor.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION conductor_stamp_batch();

CREATE TRIGGER processing_pipeline_state_stamp
    AFTER INSERT OR UPDATE OR DELETE ON processing_pipeline_state
    FOR EACH ROW WHEN (current_setting('conductor.stamped', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION conductor_stamp_batch();
