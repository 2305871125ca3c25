-- Durable pipeline state of the conductor: the authority the Redis hot state is rebuilt from.
--
-- Ids are COLLATE "C": they are compared, never sorted for people, and byte comparison makes the
-- primary keys much cheaper to maintain and probe than a linguistic collation.
--
-- Exactness: every write of a batch's outcomes runs inside conductor_record_outcomes(), which
-- first locks the batch's row in conductor_batches (FOR NO KEY UPDATE, batches in id order, so
-- two writers never deadlock). Writers of one batch are thus serialized and each statement after
-- the lock sees everything the previous holder committed: an outcome is inserted once (primary
-- key (batch_id, step, essay_id)), the counts grow by exactly what was inserted, and exactly one
-- call sees a step reach its total and writes its BatchStepCompleted outbox row (whose event id is
-- deterministic, so even a repeat would be dropped by ON CONFLICT (event_id) DO NOTHING).

CREATE TABLE conductor_batches (
    batch_id   TEXT        COLLATE "C" PRIMARY KEY,
    essay_ids  TEXT[]      NOT NULL,                -- batch order, as registered
    flags      TEXT[]      NOT NULL DEFAULT '{}',   -- sorted
    version    INTEGER     NOT NULL DEFAULT 1,      -- +1 each time the flags are replaced
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per essay of a batch: membership lookups for root steps.
CREATE TABLE conductor_batch_essays (
    batch_id TEXT COLLATE "C" NOT NULL REFERENCES conductor_batches (batch_id) ON DELETE CASCADE,
    essay_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (batch_id, essay_id)
);

-- Counts per (batch, step). total is NULL while the step's expected essays are unknown (a
-- dependant before its last dependency completed satisfied); status mirrors the completion rules
-- of conductor_server.domain.model for operators (readers derive it from the counts).
CREATE TABLE processing_pipeline_state (
    batch_id     TEXT        COLLATE "C" NOT NULL
                             REFERENCES conductor_batches (batch_id) ON DELETE CASCADE,
    step         TEXT        COLLATE "C" NOT NULL,
    succeeded    INTEGER     NOT NULL DEFAULT 0,
    failed       INTEGER     NOT NULL DEFAULT 0,
    total        INTEGER,
    status       TEXT        NOT NULL,
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, step),
    CHECK (succeeded >= 0 AND failed >= 0),
    CHECK (total IS NULL OR succeeded + failed <= total),
    CHECK (total IS NOT NULL OR succeeded + failed = 0)
);

-- One row per counted outcome. No foreign key: the record function checks the batch under its
-- lock, and a per-row referential check would cost more than the rest of the insert. Nor does
-- the function insert with ON CONFLICT (speculative insertion doubles the cost): under the lock
-- a key it inserts cannot exist, and if a writer ever bypassed the lock the unique key would
-- fail the whole call instead of counting twice.
CREATE TABLE essay_step_outcomes (
    batch_id          TEXT        COLLATE "C" NOT NULL,
    step              TEXT        COLLATE "C" NOT NULL,
    essay_id          TEXT        COLLATE "C" NOT NULL,
    outcome           TEXT        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    output_storage_id TEXT        NOT NULL DEFAULT '',
    event_id          TEXT        NOT NULL DEFAULT '',
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, step, essay_id)
);

-- The status of a step whose expected essays are known (domain.model.counted_status).
CREATE FUNCTION conductor_step_status(s BIGINT, f BIGINT, t BIGINT, ratio FLOAT8)
RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN s + f < t THEN CASE WHEN s + f > 0 THEN 'in_progress' ELSE 'not_started' END
        WHEN t = 0 OR s::FLOAT8 / t < ratio THEN 'unsatisfied'
        ELSE 'satisfied'
    END
$$;

-- Whether the essay succeeded in every one of the steps: one primary-key lookup per step (a
-- "step = ANY (steps)" condition would not use the whole key).
CREATE FUNCTION conductor_succeeded_in_all(p_batch_id TEXT, p_essay_id TEXT, p_steps TEXT[])
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
        SELECT 1 FROM unnest(p_steps) AS dep
        WHERE (SELECT o.outcome FROM essay_step_outcomes o
               WHERE o.batch_id = p_batch_id AND o.step = dep AND o.essay_id = p_essay_id)
              IS DISTINCT FROM 'succeeded')
$$;

-- Protocol buffers wire encoding, just enough to append a BatchStepCompleted payload (field 14
-- of huleedu.events.v1.EventEnvelope) to an envelope head serialized by Python.
CREATE FUNCTION conductor_pb_varint(v BIGINT) RETURNS BYTEA LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    encoded BYTEA := '';
BEGIN
    WHILE v >= 128 LOOP
        encoded := encoded || set_byte('\x00'::BYTEA, 0, ((v & 127) | 128)::INTEGER);
        v := v >> 7;
    END LOOP;
    RETURN encoded || set_byte('\x00'::BYTEA, 0, v::INTEGER);
END
$$;

CREATE FUNCTION conductor_pb_bytes(field INTEGER, data BYTEA) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT conductor_pb_varint(field << 3 | 2) || conductor_pb_varint(length(data)) || data
$$;

-- Proto3 omits fields at their default value; so does this, which makes the bytes canonical.
CREATE FUNCTION conductor_pb_uint(field INTEGER, v BIGINT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN v = 0 THEN ''::BYTEA ELSE conductor_pb_varint(field << 3) || conductor_pb_varint(v) END
$$;

CREATE FUNCTION conductor_pb_string(field INTEGER, s TEXT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN s = '' THEN ''::BYTEA ELSE conductor_pb_bytes(field, convert_to(s, 'UTF8')) END
$$;

-- Field 14 of EventEnvelope: BatchStepCompleted {batch_id = 1, step = 2, succeeded = 3,
-- failed = 4, total = 5, satisfied = 6, succeeded_essays = 7}; ``essays`` is field 7 already
-- encoded (conductor_succeeded_essays_pb), appended last as protobuf itself orders it.
CREATE FUNCTION conductor_batch_step_completed_pb(
    batch_id TEXT, step TEXT, succeeded INTEGER, failed INTEGER, total INTEGER, satisfied BOOLEAN,
    essays BYTEA
) RETURNS BYTEA LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT conductor_pb_bytes(14,
        conductor_pb_string(1, batch_id) || conductor_pb_string(2, step)
        || conductor_pb_uint(3, succeeded) || conductor_pb_uint(4, failed)
        || conductor_pb_uint(5, total) || conductor_pb_uint(6, satisfied::INTEGER)
        || essays)
$$;

-- One EssayRef {essay_id = 1, text_storage_id = 2}.
CREATE FUNCTION conductor_essay_ref_pb(essay_id TEXT, storage_id TEXT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT conductor_pb_string(1, essay_id) || conductor_pb_string(2, storage_id)
$$;

-- Field 7 of BatchStepCompleted: the essays that succeeded in the step, in batch order, each
-- with the step's output storage id (who dispatches the next step needs exactly these).
CREATE FUNCTION conductor_succeeded_essays_pb(p_batch_id TEXT, p_step TEXT) RETURNS BYTEA
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        string_agg(conductor_pb_bytes(7, conductor_essay_ref_pb(o.essay_id, o.output_storage_id)),
                   ''::BYTEA ORDER BY e.ord),
        ''::BYTEA)
    FROM conductor_batches b
    CROSS JOIN LATERAL unnest(b.essay_ids) WITH ORDINALITY AS e(essay_id, ord)
    JOIN essay_step_outcomes o
      ON o.batch_id = b.batch_id AND o.step = p_step AND o.essay_id = e.essay_id
    WHERE b.batch_id = p_batch_id AND o.outcome = 'succeeded'
$$;

-- Register a batch: new -> its essays and one state row per step; known with the same essay set
-- -> flags replaced (version + 1 when they change); known with other essays -> conflict.
-- p_graph: [{"step": name, "deps": [names], "ratio": min_success_ratio}] in dependency order.
CREATE FUNCTION conductor_register_batch(
    p_batch_id TEXT, p_essay_ids TEXT[], p_flags TEXT[], p_graph JSONB
) RETURNS TABLE (created BOOLEAN, conflict BOOLEAN, version INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_batch conductor_batches%ROWTYPE;
BEGIN
    INSERT INTO conductor_batches (batch_id, essay_ids, flags)
    VALUES (p_batch_id, p_essay_ids, p_flags)
    ON CONFLICT (batch_id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO conductor_batch_essays (batch_id, essay_id)
        SELECT p_batch_id, essay FROM unnest(p_essay_ids) AS essay;
        INSERT INTO processing_pipeline_state (batch_id, step, total, status)
        SELECT p_batch_id, g.step,
               CASE WHEN cardinality(g.deps) = 0 THEN cardinality(p_essay_ids) END,
               CASE WHEN cardinality(g.deps) = 0 THEN 'not_started' ELSE 'waiting' END
        FROM jsonb_to_recordset(p_graph) AS g(step TEXT, deps TEXT[], ratio FLOAT8);
        RETURN QUERY SELECT TRUE, FALSE, 1;
        RETURN;
    END IF;
    SELECT * INTO v_batch FROM conductor_batches b WHERE b.batch_id = p_batch_id FOR NO KEY UPDATE;
    IF (SELECT array_agg(e ORDER BY e) FROM unnest(v_batch.essay_ids) AS e)
       IS DISTINCT FROM (SELECT array_agg(e ORDER BY e) FROM unnest(p_essay_ids) AS e) THEN
        RETURN QUERY SELECT FALSE, TRUE, v_batch.version;
        RETURN;
    END IF;
    IF v_batch.flags IS DISTINCT FROM p_flags THEN
        UPDATE conductor_batches b
        SET flags = p_flags, version = b.version + 1, updated_at = now()
        WHERE b.batch_id = p_batch_id
        RETURNING b.version INTO v_batch.version;
    END IF;
    RETURN QUERY SELECT FALSE, FALSE, v_batch.version;
END
$$;

-- One row per input record (idx = its 1-based position), plus one 'cascaded' row per dependant
-- that completed at once because it expects no essays (idx = the record that completed its last
-- dependency). verdict: recorded | duplicate | conflict | not_expected | unknown_batch |
-- unknown_step | cascaded; previous: the outcome that stands, for a conflict; counts: the step's
-- after the call; completed: this record made the step complete.
CREATE TYPE conductor_record_result AS (
    idx       INTEGER,
    batch_id  TEXT,
    step      TEXT,
    verdict   TEXT,
    previous  TEXT,
    succeeded INTEGER,
    failed    INTEGER,
    total     INTEGER,
    completed BOOLEAN
);

-- Record a batch of outcomes in one call and one transaction (see the top of this file), with the
-- answers a one-by-one recording in input order would give. The records are judged set-wise in
-- passes: when a step completes and fixes a dependant's expected essays, the dependant's records
-- that come after the completing record in the input (refused in that pass) get another pass.
-- Completion events: p_event_* hold, per (batch, step) that may complete, the deterministic event
-- id, the serialized envelope head (every field but the payload) and the Kafka headers.
CREATE FUNCTION conductor_record_outcomes(
    p_batch_ids TEXT[], p_steps TEXT[], p_essay_ids TEXT[], p_outcomes TEXT[],
    p_storage_ids TEXT[], p_event_ids TEXT[],
    p_graph JSONB,
    p_event_batch_ids TEXT[], p_event_steps TEXT[], p_completion_ids TEXT[],
    p_event_heads BYTEA[], p_event_headers JSONB[], p_topic_kind TEXT
) RETURNS SETOF conductor_record_result
LANGUAGE plpgsql AS $$
DECLARE
    v_batches      TEXT[];
    v_new_rows     INTEGER;
    v_pending      INTEGER[];  -- idx of the records of this pass; NULL: every record
    v_pass         conductor_record_result[];
    v_results      conductor_record_result[];
    v_cascaded     conductor_record_result[] := '{}';
    v_ready_batch  TEXT[];     -- (batch, step) whose expected essays this pass fixed,
    v_ready_step   TEXT[];     -- and the record that made them known
    v_ready_from   INTEGER[];
    v_step         RECORD;
    v_done         RECORD;
    v_from         INTEGER;
    v_missing      INTEGER;
BEGIN
    -- 1. Serialize the writers of each batch.
    SELECT coalesce(array_agg(locked.batch_id), '{}') INTO v_batches
    FROM (SELECT b.batch_id FROM conductor_batches b
          WHERE b.batch_id = ANY (p_batch_ids)
          ORDER BY b.batch_id
          FOR NO KEY UPDATE) AS locked;

    -- 2. A step added to the table after a batch registered gets its state row now.
    INSERT INTO processing_pipeline_state (batch_id, step, total, status)
    SELECT b.batch_id, g.step,
           CASE WHEN cardinality(g.deps) = 0 THEN cardinality(b.essay_ids) END,
           CASE WHEN cardinality(g.deps) = 0 THEN 'not_started' ELSE 'waiting' END
    FROM conductor_batches b
    CROSS JOIN jsonb_to_recordset(p_graph) AS g(step TEXT, deps TEXT[], ratio FLOAT8)
    WHERE b.batch_id = ANY (v_batches)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_new_rows = ROW_COUNT;

    LOOP
        -- 3. Judge the records of this pass, insert the first acceptable one of each essay,
        --    count the inserts.
        -- Lookups are correlated subqueries so they stay index scans however large the tables
        -- grow; a record's verdict depends only on its (batch, step, essay), so the first
        -- record of each essay in the pass is found with a window, not a join.
        WITH input AS (
            SELECT *
            FROM unnest(p_batch_ids, p_steps, p_essay_ids, p_outcomes, p_storage_ids, p_event_ids)
                 WITH ORDINALITY AS t(batch_id, step, essay_id, outcome, storage_id, event_id, idx)
            WHERE v_pending IS NULL OR t.idx = ANY (v_pending)
        ),
        graph AS (
            SELECT * FROM jsonb_to_recordset(p_graph) AS g(step TEXT, deps TEXT[], ratio FLOAT8)
        ),
        states AS (
            SELECT * FROM processing_pipeline_state s WHERE s.batch_id = ANY (v_batches)
        ),
        judged AS (
            SELECT i.*, g.ratio,
                (SELECT o.outcome FROM essay_step_outcomes o
                 WHERE o.batch_id = i.batch_id AND o.step = i.step AND o.essay_id = i.essay_id
                ) AS previous,
                CASE
                    WHEN NOT (i.batch_id = ANY (v_batches)) THEN 'unknown_batch'
                    WHEN g.step IS NULL THEN 'unknown_step'
                    WHEN s.total IS NULL THEN 'not_expected'
                    WHEN cardinality(g.deps) = 0 THEN
                        CASE WHEN (SELECT TRUE FROM conductor_batch_essays e
                                   WHERE e.batch_id = i.batch_id AND e.essay_id = i.essay_id)
                        THEN 'ok' ELSE 'not_expected' END
                    WHEN cardinality(g.deps) = 1 THEN  -- the common case: one lookup
                        CASE WHEN (SELECT d.outcome FROM essay_step_outcomes d
                                   WHERE d.batch_id = i.batch_id AND d.step = g.deps[1]
                                     AND d.essay_id = i.essay_id) = 'succeeded'
                        THEN 'ok' ELSE 'not_expected' END
                    WHEN conductor_succeeded_in_all(i.batch_id, i.essay_id, g.deps) THEN 'ok'
                    ELSE 'not_expected'
                END AS verdict,
                min(i.idx) OVER essay AS first_idx,
                first_value(i.outcome) OVER essay AS first_outcome
            FROM input i
            LEFT JOIN graph g ON g.step = i.step
            LEFT JOIN states s ON s.batch_id = i.batch_id AND s.step = i.step
            WINDOW essay AS (PARTITION BY i.batch_id, i.step, i.essay_id ORDER BY i.idx)
        ),
        firsts AS (  -- the first acceptable record of each essay not recorded yet
            SELECT * FROM judged
            WHERE verdict = 'ok' AND previous IS NULL AND idx = first_idx
        ),
        inserted AS (
            INSERT INTO essay_step_outcomes
                (batch_id, step, essay_id, outcome, output_storage_id, event_id)
            SELECT f.batch_id, f.step, f.essay_id, f.outcome, f.storage_id, f.event_id
            FROM firsts f
        ),
        counted AS (  -- every first is inserted (or the statement fails)
            SELECT f.batch_id, f.step, f.ratio,
                   count(*) FILTER (WHERE f.outcome = 'succeeded') AS ds,
                   count(*) FILTER (WHERE f.outcome = 'failed') AS df,
                   max(f.idx) AS last_idx
            FROM firsts f
            GROUP BY f.batch_id, f.step, f.ratio
        ),
        updated AS (
            UPDATE processing_pipeline_state s
            SET succeeded = s.succeeded + c.ds,
                failed = s.failed + c.df,
                status = conductor_step_status(s.succeeded + c.ds, s.failed + c.df, s.total, c.ratio),
                completed_at = CASE WHEN s.succeeded + c.ds + s.failed + c.df = s.total THEN now() END,
                updated_at = now()
            FROM counted c
            WHERE s.batch_id = ANY (v_batches) AND s.batch_id = c.batch_id AND s.step = c.step
            RETURNING s.batch_id, s.step, s.succeeded, s.failed, s.total, c.last_idx
        )
        SELECT array_agg(ROW(
            j.idx, j.batch_id, j.step,
            CASE
                WHEN j.verdict <> 'ok' THEN j.verdict
                WHEN j.previous IS NULL AND j.idx = j.first_idx THEN 'recorded'
                WHEN coalesce(j.previous, j.first_outcome) = j.outcome THEN 'duplicate'
                ELSE 'conflict'
            END,
            coalesce(j.previous, j.first_outcome),
            coalesce(u.succeeded, s.succeeded), coalesce(u.failed, s.failed),
            coalesce(u.total, s.total),
            coalesce(u.last_idx = j.idx AND u.succeeded + u.failed = u.total, FALSE)
        )::conductor_record_result ORDER BY j.idx)
        INTO v_pass
        FROM judged j
        LEFT JOIN updated u USING (batch_id, step)
        LEFT JOIN states s USING (batch_id, step);
        IF v_pending IS NULL THEN
            v_results := v_pass;
        ELSE
            SELECT array_agg(x.r ORDER BY (x.r).idx) INTO v_results
            FROM (SELECT r FROM unnest(v_results) AS r WHERE NOT (r.idx = ANY (v_pending))
                  UNION ALL
                  SELECT r FROM unnest(v_pass) AS r) AS x;
        END IF;

        -- 4. Completions fix the expected essays of dependants that are now ready (in
        --    dependency order, so a dependant sees its dependencies settled) and block the
        --    dependants of unsatisfied steps.
        EXIT WHEN NOT ((v_pending IS NULL AND v_new_rows > 0)
                       OR EXISTS (SELECT 1 FROM unnest(v_pass) r WHERE r.completed));
        v_ready_batch := '{}';
        v_ready_step := '{}';
        v_ready_from := '{}';
        FOR v_step IN
            SELECT * FROM jsonb_to_recordset(p_graph) AS g(step TEXT, deps TEXT[], ratio FLOAT8)
            WHERE cardinality(g.deps) > 0
        LOOP
            FOR v_done IN
                WITH ready AS (
                    SELECT s.batch_id FROM processing_pipeline_state s
                    WHERE s.batch_id = ANY (v_batches) AND s.step = v_step.step
                      AND s.total IS NULL
                      AND (SELECT count(*) FROM processing_pipeline_state d
                           WHERE d.batch_id = s.batch_id AND d.step = ANY (v_step.deps)
                             AND d.status = 'satisfied') = cardinality(v_step.deps)
                ),
                sized AS (
                    SELECT r.batch_id,
                           (SELECT count(*) FROM essay_step_outcomes o
                            WHERE o.batch_id = r.batch_id AND o.step = v_step.deps[1]
                              AND o.outcome = 'succeeded'
                              AND (cardinality(v_step.deps) = 1
                                   OR conductor_succeeded_in_all(
                                       o.batch_id, o.essay_id, v_step.deps[2:]))
                           )::INTEGER AS n
                    FROM ready r
                )
                UPDATE processing_pipeline_state s
                SET total = z.n,
                    status = CASE WHEN z.n = 0 THEN 'unsatisfied' ELSE 'not_started' END,
                    completed_at = CASE WHEN z.n = 0 THEN now() END,
                    updated_at = now()
                FROM sized z
                WHERE s.batch_id = z.batch_id AND s.step = v_step.step
                RETURNING s.batch_id, s.total
            LOOP
                -- The record that completed the last of its dependencies in this call (NULL
                -- if they completed before it: a step added to the table later).
                SELECT max(r.idx) INTO v_from FROM unnest(v_results) r
                WHERE r.batch_id = v_done.batch_id AND r.completed AND r.step = ANY (v_step.deps);
                v_ready_batch := v_ready_batch || v_done.batch_id;
                v_ready_step := v_ready_step || v_step.step::TEXT;
                v_ready_from := v_ready_from || coalesce(v_from, 0);
                IF v_done.total = 0 THEN
                    v_cascaded := v_cascaded || ROW(
                        v_from, v_done.batch_id, v_step.step, 'cascaded', NULL, 0, 0, 0, TRUE
                    )::conductor_record_result;
                END IF;
            END LOOP;
            UPDATE processing_pipeline_state s
            SET status = 'blocked', updated_at = now()
            WHERE s.batch_id = ANY (v_batches) AND s.step = v_step.step AND s.total IS NULL
              AND s.status <> 'blocked'
              AND EXISTS (SELECT 1 FROM processing_pipeline_state d
                          WHERE d.batch_id = s.batch_id AND d.step = ANY (v_step.deps)
                            AND d.status IN ('unsatisfied', 'blocked'));
        END LOOP;

        -- Records refused because their step was not ready, that come after the record that
        -- made it ready: one by one, they would have been judged after it. Judge them again.
        SELECT array_agg(r.idx) INTO v_pending
        FROM unnest(v_results) r
        JOIN unnest(v_ready_batch, v_ready_step, v_ready_from) AS m(batch_id, step, from_idx)
          ON m.batch_id = r.batch_id AND m.step = r.step
        WHERE r.verdict = 'not_expected' AND r.idx > m.from_idx;
        EXIT WHEN v_pending IS NULL;
    END LOOP;

    -- 5. One outbox row per step that completed in this call.
    WITH done AS (
        SELECT r.batch_id, r.step FROM unnest(v_results) r WHERE r.completed
        UNION
        SELECT c.batch_id, c.step FROM unnest(v_cascaded) c
    ),
    events AS (
        SELECT *
        FROM unnest(p_event_batch_ids, p_event_steps, p_completion_ids, p_event_heads,
                    p_event_headers) AS e(batch_id, step, event_id, head, headers)
    ),
    written AS (
        INSERT INTO event_outbox (event_id, topic_kind, message_key, payload, headers)
        SELECT e.event_id, p_topic_kind, convert_to(s.batch_id, 'UTF8'),
               e.head || conductor_batch_step_completed_pb(
                   s.batch_id, s.step, s.succeeded, s.failed, s.total, s.status = 'satisfied',
                   conductor_succeeded_essays_pb(s.batch_id, s.step)),
               e.headers
        FROM done
        JOIN processing_pipeline_state s USING (batch_id, step)
        JOIN events e USING (batch_id, step)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM done)
           - (SELECT count(*) FROM done JOIN events USING (batch_id, step))
    INTO v_missing;
    IF v_missing > 0 THEN
        RAISE EXCEPTION 'conductor_record_outcomes: % completed step(s) without an event head',
            v_missing;
    END IF;

    RETURN QUERY SELECT * FROM unnest(v_results) UNION ALL SELECT * FROM unnest(v_cascaded);
END
$$;
