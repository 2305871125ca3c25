-- conductor_record_outcomes with the per-record columns sent as delimited text and the answer
-- reduced to what the caller cannot infer.
--
-- Six text[] parameters of 500 elements cost the client ~5 µs an outcome to encode (asyncpg
-- checks every element against the Iterable ABC) and the server an array_recv per element; six
-- strings joined in Python and split here by string_to_array cost ~0.5 µs. p_separator is a
-- character none of the values contains (the caller checks); each string starts with it, so
-- ``[2:]`` keeps an empty last value that a bare split would drop.
--
-- Answer: every record whose verdict is not 'recorded', or that completed its step, as before;
-- one 'counts' row (idx 0) per (batch, step) with records recorded, carrying the step's counts
-- after the call, which every recorded record of that step shares; the 'cascaded' rows. A record
-- without a row of its own was recorded, did not complete its step, and has its step's counts.
CREATE FUNCTION conductor_record_outcomes_packed(
    p_separator TEXT,
    p_batch_ids TEXT, p_steps TEXT, p_essay_ids TEXT, p_outcomes TEXT,
    p_storage_ids TEXT, p_event_ids TEXT,
    p_graph JSONB,
    p_event_batch_ids TEXT[], p_event_steps TEXT[], p_completion_ids TEXT[],
    p_event_heads BYTEA[], p_event_headers JSONB[], p_topic_kind TEXT
) RETURNS SETOF conductor_record_result
LANGUAGE sql AS $$
    WITH r AS (
        SELECT * FROM conductor_record_outcomes(
            (string_to_array(p_batch_ids, p_separator))[2:],
            (string_to_array(p_steps, p_separator))[2:],
            (string_to_array(p_essay_ids, p_separator))[2:],
            (string_to_array(p_outcomes, p_separator))[2:],
            (string_to_array(p_storage_ids, p_separator))[2:],
            (string_to_array(p_event_ids, p_separator))[2:],
            p_graph, p_event_batch_ids, p_event_steps, p_completion_ids, p_event_heads,
            p_event_headers, p_topic_kind)
    )
    SELECT * FROM r WHERE r.verdict <> 'recorded' OR r.completed
    UNION ALL
    SELECT * FROM (
        SELECT DISTINCT ON (r.batch_id, r.step)
               0, r.batch_id, r.step, 'counts', NULL::TEXT, r.succeeded, r.failed, r.total, FALSE
        FROM r
        WHERE r.verdict = 'recorded'
        ORDER BY r.batch_id, r.step, r.idx DESC
    ) AS counts
$$;
