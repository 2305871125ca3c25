-- Stamps for the stores that keep what they committed (mesh.postgres.kept): a row's stamp column
-- takes the next value of a sequence whenever a writer that does not stamp for itself changes
-- what the row stands for, so a store never uses a value it kept after another writer came by.
--
-- mesh_stamp_once stamps the row of `target` whose `key_column` is `key`, once per transaction:
-- the row then stays locked to the end of it, so no store can keep a value in between. The
-- services' triggers call it for each row an unmarked writer writes. mesh_stamp_every is a
-- trigger function (arguments: target, stamp column, sequence) that stamps every row, for a
-- TRUNCATE.
CREATE FUNCTION mesh_stamp_once(
    target regclass, key_column TEXT, stamp_column TEXT, stamps regclass, key TEXT
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    mark TEXT;
BEGIN
    IF key IS NULL THEN
        RETURN;
    END IF;
    mark := 'mesh.stamped_' || md5(target::text || chr(31) || key);
    IF current_setting(mark, true) = 'on' THEN
        RETURN;
    END IF;
    EXECUTE format('UPDATE %s SET %I = nextval(%L) WHERE %I = $1',
                   target, stamp_column, stamps, key_column)
      USING key;
    PERFORM set_config(mark, 'on', true);
END
$$;

CREATE FUNCTION mesh_stamp_every() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE %s SET %I = nextval(%L)', TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
    RETURN NULL;
END
$$;
