-- Attempts, timeouts and error details of outcomes, and epochs of step counts.
--
-- An essay_step_outcomes row now also stands for an essay *open* at a new attempt of a run (a
-- retry reopened it): outcome and recorded_at are NULL until an outcome of that attempt counts.
-- run_id and attempt are those of the counted outcome, or of the attempt the essay is open at;
-- 'timed_out' is a failure the conductor recorded because the step's timeout expired. The
-- counting rule (conductor_server.domain.counting) decides all of it; this only keeps it.
ALTER TABLE essay_step_outcomes
    ALTER COLUMN outcome DROP NOT NULL,
    ALTER COLUMN recorded_at DROP NOT NULL,
    DROP CONSTRAINT essay_step_outcomes_outcome_check,
    ADD CONSTRAINT essay_step_outcomes_outcome_check
        CHECK (outcome IN ('succeeded', 'failed', 'timed_out')),
    ADD COLUMN run_id        TEXT    COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN attempt       INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    ADD COLUMN error_code    TEXT    NOT NULL DEFAULT '',
    ADD COLUMN error_message TEXT    NOT NULL DEFAULT '';

-- timed_out: of the failures, those recorded because the step timed out. epoch: starts at 1 and
-- grows whenever the counts move backwards (a retry clears failures) or a complete step gains
-- an essay; a step completes once per epoch, and the Redis mirror orders counts by it.
ALTER TABLE processing_pipeline_state
    ADD COLUMN timed_out INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN epoch     INTEGER NOT NULL DEFAULT 1,
    ADD CONSTRAINT processing_pipeline_state_timed_out_check
        CHECK (timed_out >= 0 AND timed_out <= failed AND epoch >= 1);
