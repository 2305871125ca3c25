-- A step result's succeeded essays ({essay_id: output storage id or ""}) are written and read
-- whole, never queried inside: json keeps the text as written, where jsonb parses it into its
-- binary form on every write and prints it back on every read. For 10,000 essays (900 KB) a
-- write takes about half the time and a read with its decoding about 60%. The column keeps its
-- fast compression (mesh_fast_toast, mesh's 0003). The table is locked while it is rewritten;
-- lock_timeout as in mesh 0003.
SET LOCAL lock_timeout = '5s';
ALTER TABLE batch_step_results ALTER COLUMN succeeded_essays TYPE json USING succeeded_essays::json;
SELECT mesh_fast_toast('batch_step_results', 'succeeded_essays');
