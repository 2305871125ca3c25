-- Run control: attempts (RetryRun), cancellation (CancelRun) and step deadlines (timeouts).
--
-- A run's attempt is 1, plus one per retry; each of its steps records the attempt that last
-- dispatched it, the essays a retry reopened for its next dispatch, and while dispatched with a
-- timeout, its deadline. expiring_since marks a deadline a replica is acting on (the conductor
-- is asked to time the step out); another replica takes it over after a lease.
ALTER TABLE pipeline_runs
    ADD COLUMN attempt       INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    ADD COLUMN cancel_reason TEXT    NOT NULL DEFAULT '';

ALTER TABLE run_steps
    DROP CONSTRAINT run_steps_status_check,
    ADD CONSTRAINT run_steps_status_check CHECK (status IN
        ('pending', 'dispatched', 'satisfied', 'unsatisfied',
         'skipped_due_to_dependency_failure', 'skipped_already_satisfied', 'cancelled')),
    ADD COLUMN attempt         INTEGER          NOT NULL DEFAULT 0,
    ADD COLUMN timeout_seconds DOUBLE PRECISION,
    ADD COLUMN deadline        TIMESTAMPTZ,
    ADD COLUMN timed_out       INTEGER          NOT NULL DEFAULT 0,
    ADD COLUMN retry_essays    TEXT[]           NOT NULL DEFAULT '{}',
    ADD COLUMN expiring_since  TIMESTAMPTZ;
-- Steps dispatched before attempts were recorded were dispatched at attempt 1.
UPDATE run_steps SET attempt = 1 WHERE cardinality(essay_ids) > 0;
-- The deadline watch: dispatched steps whose deadline passed.
CREATE INDEX run_steps_deadlines ON run_steps (deadline)
    WHERE status = 'dispatched' AND deadline IS NOT NULL;

ALTER TABLE run_transitions
    ADD COLUMN attempt       INTEGER     NOT NULL DEFAULT 1,
    ADD COLUMN step_attempt  INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN timed_out     INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN deadline      TIMESTAMPTZ,
    ADD COLUMN cancel_reason TEXT        NOT NULL DEFAULT '';

-- A step is dispatched at most once per attempt of its run.
ALTER TABLE run_dispatches
    ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1,
    DROP CONSTRAINT run_dispatches_pkey,
    ADD PRIMARY KEY (run_id, step, attempt);

-- One row per RetryRun that started an attempt: its idempotency key, the steps it was limited to
-- and what it dispatched again (step -> essay count).
CREATE TABLE run_retries (
    run_id     TEXT        NOT NULL REFERENCES pipeline_runs ON DELETE CASCADE,
    attempt    INTEGER     NOT NULL,
    request_id TEXT        NOT NULL,
    steps      TEXT[]      NOT NULL,
    retried    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt),
    UNIQUE (run_id, request_id)
);
