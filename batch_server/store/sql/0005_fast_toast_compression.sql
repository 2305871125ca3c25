-- The large values a run writes and reads on every step, and the essay texts, compressed the
-- fast way (mesh_fast_toast: lz4, or none on a server without it).
SELECT mesh_fast_toast('run_steps', 'essay_ids');
SELECT mesh_fast_toast('run_steps', 'retry_essays');
SELECT mesh_fast_toast('batch_step_results', 'succeeded_essays');
SELECT mesh_fast_toast('content_blobs', 'content');
