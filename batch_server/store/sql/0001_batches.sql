-- Batches, their essays, pipeline runs, run steps, step transitions, dispatch records, and the
-- essay texts when PostgreSQL is the content store.
-- Status columns are TEXT checked against the values of batch_server.domain.model's enums
-- (a test inserts every enum value), so code and schema cannot drift apart silently.

CREATE TABLE batches (
    batch_id     TEXT        PRIMARY KEY,
    request_id   TEXT        NOT NULL UNIQUE,          -- CreateBatch idempotency key
    fingerprint  TEXT        NOT NULL,                 -- digest of the request it came with
    name         TEXT        NOT NULL,
    course_code  TEXT        NOT NULL,
    language     TEXT        NOT NULL,
    flags        JSONB       NOT NULL,
    labels       JSONB       NOT NULL,
    essay_count  INTEGER     NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
-- ListBatches: newest first, keyset (created_at, batch_id)
CREATE INDEX batches_listing ON batches (created_at DESC, batch_id DESC);

CREATE TABLE batch_essays (
    batch_id            TEXT    NOT NULL REFERENCES batches ON DELETE CASCADE,
    position            INTEGER NOT NULL,
    essay_id            TEXT    NOT NULL UNIQUE,
    client_ref          TEXT    NOT NULL,
    original_storage_id TEXT    NOT NULL,
    current_storage_id  TEXT    NOT NULL,               -- output of the last step that made one
    PRIMARY KEY (batch_id, position)
);

-- The latest completion of each step for a batch (from BatchStepCompleted), whichever run (or
-- none) dispatched it: which essays succeeded, so later runs send the right essays onwards.
CREATE TABLE batch_step_results (
    batch_id         TEXT        NOT NULL REFERENCES batches ON DELETE CASCADE,
    step             TEXT        NOT NULL,
    satisfied        BOOLEAN     NOT NULL,
    succeeded        INTEGER     NOT NULL,
    failed           INTEGER     NOT NULL,
    total            INTEGER     NOT NULL,
    succeeded_essays JSONB       NOT NULL,              -- {essay_id: output storage id or ""}
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, step)
);

CREATE TABLE pipeline_runs (
    run_id             TEXT        PRIMARY KEY,
    batch_id           TEXT        NOT NULL REFERENCES batches ON DELETE CASCADE,
    request_id         TEXT        NOT NULL,            -- StartPipeline idempotency key
    pipeline           TEXT        NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN
                           ('pending', 'running', 'completed', 'completed_with_failures',
                            'failed', 'cancelled')),
    definition_version TEXT        NOT NULL,
    correlation_id     TEXT        NOT NULL,
    version            INTEGER     NOT NULL,            -- seq of its latest transition
    completed_steps    TEXT[]      NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    UNIQUE (batch_id, request_id)
);
CREATE INDEX pipeline_runs_by_batch ON pipeline_runs (batch_id, created_at DESC);
-- At most one active run per batch, enforced by the database: a second concurrent
-- StartPipeline fails on this index (ABORTED, naming the active run).
CREATE UNIQUE INDEX pipeline_runs_one_active ON pipeline_runs (batch_id)
    WHERE status IN ('pending', 'running');

CREATE TABLE run_steps (
    run_id     TEXT    NOT NULL REFERENCES pipeline_runs ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    step       TEXT    NOT NULL,
    command    TEXT    NOT NULL,
    depends_on TEXT[]  NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN
                   ('pending', 'dispatched', 'satisfied', 'unsatisfied',
                    'skipped_due_to_dependency_failure', 'skipped_already_satisfied')),
    succeeded  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    total      INTEGER NOT NULL DEFAULT 0,
    essay_ids  TEXT[]  NOT NULL DEFAULT '{}',           -- the essays it was dispatched with
    PRIMARY KEY (run_id, step),
    UNIQUE (run_id, position)
);

-- One row per published step command: a redelivered completion can never dispatch twice.
CREATE TABLE run_dispatches (
    run_id        TEXT        NOT NULL REFERENCES pipeline_runs ON DELETE CASCADE,
    step          TEXT        NOT NULL,
    event_id      TEXT        NOT NULL UNIQUE,
    essay_count   INTEGER     NOT NULL,
    dispatched_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);

-- Every step change of a run, numbered: WatchBatch replays them in order.
CREATE TABLE run_transitions (
    run_id      TEXT        NOT NULL REFERENCES pipeline_runs ON DELETE CASCADE,
    seq         INTEGER     NOT NULL,
    step        TEXT        NOT NULL,
    step_status TEXT        NOT NULL,
    succeeded   INTEGER     NOT NULL,
    failed      INTEGER     NOT NULL,
    total       INTEGER     NOT NULL,
    run_status  TEXT        NOT NULL,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, seq)
);

-- Essay texts, when PostgreSQL is the content store (real mode without CONTENT_SERVICE_URL).
CREATE TABLE content_blobs (
    storage_id TEXT        PRIMARY KEY,
    content    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
