-- Encrypted columns through a backup and restore. The registry (0300) names a column by its table's oid and
-- attribute number, which a restore does not keep: `pg_restore` makes every table anew. So each entry also
-- carries the column's names (schema, table, column), kept current in the same transaction as any rename
-- (the `kilnbase_rename_encrypted_columns` event trigger), so that every dump, whoever takes it, holds names
-- that match its tables. After a restore, `repoint_encrypted_columns` finds each entry's column again by
-- those names.
ALTER TABLE system.encrypted_columns
    ADD COLUMN table_schema name,
    ADD COLUMN table_name name,
    ADD COLUMN column_name name;
UPDATE system.encrypted_columns e
SET table_schema = n.nspname, table_name = c.relname, column_name = a.attname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.oid = e.table_oid AND a.attnum = e.column_num;
DELETE FROM system.encrypted_columns WHERE column_name IS NULL;
ALTER TABLE system.encrypted_columns
    ALTER COLUMN table_schema SET NOT NULL,
    ALTER COLUMN table_name SET NOT NULL,
    ALTER COLUMN column_name SET NOT NULL;

-- The names are filled from the oid and attribute number whenever an entry is written (the tables API's
-- `register_encrypted_column`, encrypt-column's insert, rotation's update): no writer has to know of them.
CREATE FUNCTION system.name_encrypted_column() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    SELECT n.nspname, c.relname, a.attname INTO new.table_schema, new.table_name, new.column_name
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = new.column_num AND NOT a.attisdropped
    WHERE c.oid = new.table_oid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'an encrypted column must exist' USING ERRCODE = '42703';
    END IF;
    RETURN new;
END
$$;
REVOKE ALL ON FUNCTION system.name_encrypted_column() FROM PUBLIC;
CREATE TRIGGER name_encrypted_column BEFORE INSERT OR UPDATE OF table_oid, column_num
    ON system.encrypted_columns FOR EACH ROW EXECUTE FUNCTION system.name_encrypted_column();
-- (Also when the writer runs with `session_replication_role = replica`, as encrypt-column does.)
ALTER TABLE system.encrypted_columns ENABLE ALWAYS TRIGGER name_encrypted_column;

-- A renamed schema, table or column: its entries take the new names, in the rename's transaction. Only an
-- entry whose names find no column any more is renamed: one whose oid is stale and whose names are right (a
-- restore's, until `repoint_encrypted_columns` runs) keeps them. (An `ALTER TABLE` that renames nothing
-- changes no row.)
CREATE FUNCTION system.rename_encrypted_columns() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE system.encrypted_columns e
    SET table_schema = n.nspname, table_name = c.relname, column_name = a.attname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid
    WHERE c.oid = e.table_oid AND a.attnum = e.column_num
      AND (e.table_schema, e.table_name, e.column_name) IS DISTINCT FROM (n.nspname, c.relname, a.attname)
      AND NOT EXISTS (
          SELECT 1 FROM pg_namespace n2
          JOIN pg_class c2 ON c2.relnamespace = n2.oid
          JOIN pg_attribute a2 ON a2.attrelid = c2.oid AND NOT a2.attisdropped
          WHERE n2.nspname = e.table_schema AND c2.relname = e.table_name AND a2.attname = e.column_name
      );
END
$$;
REVOKE ALL ON FUNCTION system.rename_encrypted_columns() FROM PUBLIC;
CREATE EVENT TRIGGER kilnbase_rename_encrypted_columns ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION system.rename_encrypted_columns();
ALTER EVENT TRIGGER kilnbase_rename_encrypted_columns ENABLE ALWAYS;

-- Point every entry at the column its names name now, after a restore made the tables anew (the in-place
-- restore calls it in its transaction; every start calls it, for `kilnbase db restore` and any other). An
-- entry found elsewhere than where it pointed is kept only if that column is text with its `enc_fmt_` CHECK,
-- and dropped otherwise: its values, if any, are not ciphertext (the column came back from before it was
-- encrypted), and the CHECK is what refuses any other. An entry whose names find nothing is dropped. `p_also`
-- adds entries registered before an in-place restore (rows of the registry, as JSON), for the tables that
-- the backup did not hold and the restore left as they were; the backup's own entries come first. Changes
-- nothing when every entry is where its names are; returns whether it changed anything.
CREATE FUNCTION system.repoint_encrypted_columns(p_also jsonb DEFAULT '[]') RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    v_entries jsonb;
BEGIN
    LOCK TABLE system.encrypted_columns IN SHARE ROW EXCLUSIVE MODE;
    WITH candidates AS (
        SELECT 1 AS rank, e.id, e.table_schema, e.table_name, e.column_name, e.original_type, e.key_version,
               e.created_at, e.updated_at, e.table_oid, e.column_num
        FROM system.encrypted_columns e
        UNION ALL
        SELECT 2, r.id, r.table_schema, r.table_name, r.column_name, r.original_type, r.key_version,
               r.created_at, r.updated_at, r.table_oid, r.column_num
        FROM jsonb_to_recordset(coalesce(p_also, '[]')) AS r(
            id uuid, table_schema name, table_name name, column_name name, original_type text,
            key_version integer, created_at timestamptz, updated_at timestamptz, table_oid oid,
            column_num smallint)
    ), found AS (
        SELECT DISTINCT ON (c.oid, a.attnum)
               k.rank, k.id, k.original_type, k.key_version, k.created_at, k.updated_at,
               c.oid AS new_oid, a.attnum AS new_num, k.table_oid, k.column_num
        FROM candidates k
        JOIN pg_namespace n ON n.nspname = k.table_schema
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = k.table_name AND c.relkind IN ('r', 'p')
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = k.column_name AND a.attnum > 0
            AND NOT a.attisdropped AND a.atttypid = 'text'::regtype
        WHERE (k.table_oid, k.column_num) = (c.oid, a.attnum) OR EXISTS (
            SELECT 1 FROM pg_constraint x
            WHERE x.conrelid = c.oid AND x.contype = 'c' AND x.conkey = ARRAY[a.attnum]
              AND x.conname LIKE 'enc\_fmt\_%'
        )
        ORDER BY c.oid, a.attnum, k.rank
    )
    SELECT coalesce(jsonb_agg(f), '[]') INTO v_entries FROM found f;
    IF NOT EXISTS (
        SELECT 1 FROM jsonb_to_recordset(v_entries) AS f(rank integer, table_oid oid, column_num smallint,
                                                        new_oid oid, new_num smallint)
        WHERE f.rank = 2 OR f.table_oid <> f.new_oid OR f.column_num <> f.new_num
    ) AND jsonb_array_length(v_entries) = (SELECT count(*) FROM system.encrypted_columns) THEN
        RETURN false;
    END IF;
    DELETE FROM system.encrypted_columns;
    -- (An entry kept from before the restore whose id the backup's entries use takes a new one.)
    INSERT INTO system.encrypted_columns (
        id, table_oid, column_num, original_type, key_version, created_at, updated_at
    )
    SELECT CASE WHEN f.rank = 2 AND f.id IN (SELECT g.id FROM jsonb_to_recordset(v_entries) AS g(rank integer,
                                                                                                  id uuid)
                                              WHERE g.rank = 1)
                THEN gen_random_uuid() ELSE coalesce(f.id, gen_random_uuid()) END,
           f.new_oid, f.new_num, f.original_type, f.key_version, coalesce(f.created_at, now()),
           coalesce(f.updated_at, now())
    FROM jsonb_to_recordset(v_entries) AS f(rank integer, id uuid, original_type text, key_version integer,
                                           created_at timestamptz, updated_at timestamptz, new_oid oid,
                                           new_num smallint);
    PERFORM pg_notify('kilnbase_schema', 'REPOINT ENCRYPTED COLUMNS');
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION system.repoint_encrypted_columns(jsonb) FROM PUBLIC;
