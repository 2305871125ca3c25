-- The essays that succeeded in a step, found by one primary-key probe per essay of the batch.
--
-- 0001 joined the batch's essays to the step's outcomes and left the join order to the planner.
-- On a young database (tables not yet analyzed) it estimated one outcome row and ten essays and
-- chose a nested loop comparing every essay with every outcome: 25 million comparisons and
-- about 27 s inside the recording transaction for a 5,000-essay step, measured on the state
-- benchmark's first round. A correlated probe per essay cannot be flattened into a join, so its
-- cost is linear in the batch whatever the statistics say (5,000 index probes, a few ms).
CREATE OR REPLACE FUNCTION conductor_succeeded_essays_pb(p_batch_id TEXT, p_step TEXT) RETURNS BYTEA
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        string_agg(conductor_pb_bytes(7, conductor_essay_ref_pb(e.essay_id, e.storage_id)),
                   ''::BYTEA ORDER BY e.ord),
        ''::BYTEA)
    FROM (
        SELECT e.essay_id, e.ord,
               (SELECT o.output_storage_id FROM essay_step_outcomes o
                 WHERE o.batch_id = p_batch_id AND o.step = p_step
                   AND o.essay_id = e.essay_id AND o.outcome = 'succeeded') AS storage_id
        FROM conductor_batches b
        CROSS JOIN LATERAL unnest(b.essay_ids) WITH ORDINALITY AS e(essay_id, ord)
        WHERE b.batch_id = p_batch_id
    ) e
    WHERE e.storage_id IS NOT NULL
$$;
