-- The essay list of a completion event, encoded without a function call per essay.
--
-- 0001 encoded each EssayRef through nested SQL and PL/pgSQL functions (pb_bytes, pb_string,
-- pb_varint): about ten calls an essay, none of them inlinable (STRICT wrappers around CASE
-- bodies, and a PL/pgSQL loop). perf put half of PostgreSQL's time in the state benchmark under
-- fmgr_sql; one 5,000-essay completion took 120 ms of which the 5,000 key probes are ~20 ms.
-- Here a length prefix is one inlinable CASE (the planner substitutes it into the query), and
-- every argument it gets is a column of a subquery fenced with OFFSET 0: an inlined function whose
-- parameter appears more than once is only inlined when its argument is cheap, and an argument
-- the planner had flattened into a long expression is not. The same completion takes ~22 ms.

-- A protobuf varint for a length: one byte below 128, two below 16,384 (every id the services
-- accept), the general encoder beyond.
CREATE FUNCTION conductor_pb_len(n INTEGER) RETURNS BYTEA LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN n < 128 THEN set_byte('\x00'::BYTEA, 0, n)
        WHEN n < 16384 THEN set_byte(set_byte('\x0000'::BYTEA, 0, n & 127 | 128), 1, n >> 7)
        ELSE conductor_pb_varint(n)
    END
$$;

-- Repeated field 7 of BatchStepCompleted, EssayRef {essay_id = 1, text_storage_id = 2}, in array
-- order; an essay whose storage id is NULL is left out (it did not succeed).
CREATE FUNCTION conductor_essay_refs_pb(p_essay_ids TEXT[], p_storage_ids TEXT[]) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(
        string_agg('\x3a'::BYTEA || conductor_pb_len(length(r.ref)) || r.ref, ''::BYTEA
                   ORDER BY r.ord),
        ''::BYTEA)
    FROM (
        SELECT e.ord,
               CASE WHEN e.essay = '' THEN ''::BYTEA
                    ELSE '\x0a'::BYTEA || conductor_pb_len(length(e.essay)) || e.essay END
               || CASE WHEN e.storage = '' THEN ''::BYTEA
                       ELSE '\x12'::BYTEA || conductor_pb_len(length(e.storage)) || e.storage
                  END AS ref
        FROM (
            SELECT t.ord, convert_to(t.essay_id, 'UTF8') AS essay,
                   convert_to(t.storage_id, 'UTF8') AS storage
            FROM unnest(p_essay_ids, p_storage_ids) WITH ORDINALITY AS t(essay_id, storage_id, ord)
            WHERE t.storage_id IS NOT NULL
            OFFSET 0
        ) e
        OFFSET 0
    ) r
$$;

-- As in 0002, one primary-key probe per essay of the batch, in batch order.
CREATE OR REPLACE FUNCTION conductor_succeeded_essays_pb(p_batch_id TEXT, p_step TEXT) RETURNS BYTEA
LANGUAGE sql STABLE AS $$
    SELECT conductor_essay_refs_pb(
        b.essay_ids,
        ARRAY(SELECT (SELECT o.output_storage_id FROM essay_step_outcomes o
                       WHERE o.batch_id = p_batch_id AND o.step = p_step
                         AND o.essay_id = e.essay_id AND o.outcome = 'succeeded')
              FROM unnest(b.essay_ids) WITH ORDINALITY AS e(essay_id, ord)
              ORDER BY e.ord))
    FROM conductor_batches b
    WHERE b.batch_id = p_batch_id
$$;

-- Its only caller was the function above as 0002 defined it.
DROP FUNCTION conductor_essay_ref_pb(TEXT, TEXT);
