-- Large values (an outbox payload carrying 10,000 essays is about 750 KB; a run step's essay
-- list, a step result's succeeded essays) are compressed with lz4 instead of the default pglz,
-- which takes several times longer to compress the same value. A server built without lz4
-- stores them uncompressed (as fast to write as lz4, larger on disk). Only new values are
-- affected. Changing a column's compression locks its table (ACCESS EXCLUSIVE) until the
-- migration commits: with a server of the old version still writing to the shared outbox, the
-- migration gives up after lock_timeout rather than hold every writer behind it, and the
-- starting server exits for its supervisor to start it again.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION mesh_fast_toast(target regclass, col text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION lz4', target, col);
EXCEPTION WHEN feature_not_supported THEN
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STORAGE EXTERNAL', target, col);
END
$$;

SELECT mesh_fast_toast('event_outbox', 'payload');
