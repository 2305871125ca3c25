-- The large values a run writes and reads on every step, and the essay texts, compressed the
-- fast way: mesh_fast_toast (created by the mesh source's 0003, applied before this source)
-- uses lz4, or no compression on a server without it. Each table is locked while its column
-- changes; lock_timeout as in mesh 0003.
SET LOCAL lock_timeout = '5s';
SELECT mesh_fast_toast('run_steps', 'essay_ids');
SELECT mesh_fast_toast('run_steps', 'retry_essays');
SELECT mesh_fast_toast('batch_step_results', 'succeeded_essays');
SELECT mesh_fast_toast('content_blobs', 'content');
