-- Durable pipeline state of the conductor: batches, their essays, per-essay step outcomes and
-- per-step counts. PostgreSQL is the authority; Redis mirrors the counts for reads.
--
-- The counting rule is not here: conductor_server.domain.counting applies it in Python, and
-- conductor_server.store.postgres writes what it decided. Exactness comes from the batch row
-- lock: every write of a batch's outcomes first takes FOR NO KEY UPDATE on its conductor_batches
-- row (batches in id order, so writers never deadlock), then reads the counts and the outcomes it
-- needs, so writers of one batch are serialized and each sees what the previous one committed.
-- The primary key of essay_step_outcomes is the last guard: a write that ever bypassed the lock
-- fails instead of counting twice.
--
-- Ids are COLLATE "C": they are compared, never sorted for people, and byte comparison makes the
-- primary keys cheaper to maintain and probe.

CREATE TABLE conductor_batches (
    batch_id      TEXT        COLLATE "C" PRIMARY KEY,
    essay_count   INTEGER     NOT NULL CHECK (essay_count > 0),
    essays_digest TEXT        NOT NULL,                -- of the sorted essay ids: same set?
    flags         TEXT[]      NOT NULL DEFAULT '{}',   -- sorted
    version       INTEGER     NOT NULL DEFAULT 1,      -- +1 each time the flags change
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The essays of a batch, in batch order.
CREATE TABLE conductor_batch_essays (
    batch_id TEXT    COLLATE "C" NOT NULL REFERENCES conductor_batches ON DELETE CASCADE,
    essay_id TEXT    COLLATE "C" NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (batch_id, essay_id)
);

-- Counts per (batch, step). total is NULL while the step's expected essays are unknown;
-- eligible counts the essays that succeeded in every dependency so far; status is the derived
-- status, for operators reading the table.
CREATE TABLE processing_pipeline_state (
    batch_id     TEXT        COLLATE "C" NOT NULL REFERENCES conductor_batches ON DELETE CASCADE,
    step         TEXT        COLLATE "C" NOT NULL,
    succeeded    INTEGER     NOT NULL DEFAULT 0,
    failed       INTEGER     NOT NULL DEFAULT 0,
    total        INTEGER,
    eligible     INTEGER     NOT NULL DEFAULT 0,
    status       TEXT        NOT NULL,
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, step),
    CHECK (succeeded >= 0 AND failed >= 0 AND eligible >= 0),
    CHECK (total IS NULL OR succeeded + failed <= total),
    CHECK (total IS NOT NULL OR succeeded + failed = 0)
);

-- One row per counted outcome, keyed by essay first: one index range gives every step's outcome
-- of an essay, which is what judging a new outcome needs. position is the essay's position in
-- its batch (completion events list essays in batch order).
CREATE TABLE essay_step_outcomes (
    batch_id          TEXT        COLLATE "C" NOT NULL,
    essay_id          TEXT        COLLATE "C" NOT NULL,
    step              TEXT        COLLATE "C" NOT NULL,
    position          INTEGER     NOT NULL,
    outcome           TEXT        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    output_storage_id TEXT        NOT NULL DEFAULT '',
    event_id          TEXT        NOT NULL DEFAULT '',
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, essay_id, step)
);

-- Batches whose latest counts Redis may have missed (a merge failed while Redis was down): merged
-- again from PostgreSQL once Redis answers, by whichever conductor sees it back first.
CREATE TABLE conductor_mirror_backlog (
    batch_id TEXT        COLLATE "C" PRIMARY KEY,
    since    TIMESTAMPTZ NOT NULL DEFAULT now()
);
