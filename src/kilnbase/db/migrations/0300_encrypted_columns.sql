-- Column-level encryption (InsForge's `system.encrypted_columns`, `/api/database/encryption`): which columns
-- of the app's tables hold AES-256-GCM ciphertext that the records API encrypts on write and decrypts on
-- read (`keys/column_cipher.py`). A column is named by its table's oid and its attribute number rather than
-- by names, so renaming the table or the column keeps it encrypted; the API answers the current names.
--
-- Kilnbase-internal: the owner writes it (rotation), project_admin (admins' sessions, raw SQL) may read it and
-- may register a column only through `register_encrypted_column`, which checks what it is given; the request
-- roles of end users (anon, authenticated) cannot see it at all.
CREATE TABLE system.encrypted_columns (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    table_oid oid NOT NULL,
    column_num smallint NOT NULL,
    -- The SQL type the column was declared with (it is stored as text): what a decrypted value is read as.
    original_type text NOT NULL CHECK (
        original_type IN ('text', 'date', 'timestamptz', 'integer', 'double precision', 'boolean', 'uuid', 'jsonb')
    ),
    -- The key version every value of the column was last rewritten with (`rotate` raises it).
    key_version integer NOT NULL CHECK (key_version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (table_oid, column_num)
);
REVOKE ALL ON system.encrypted_columns FROM PUBLIC;
GRANT SELECT ON system.encrypted_columns TO project_admin;

-- Register a text column of a table project_admin owns as encrypted. Called by the tables API in the
-- transaction that creates the column and its CHECK constraint; from raw SQL it can do no more than that
-- (a table of Kilnbase's own, or a column that is not text, is refused).
CREATE FUNCTION system.register_encrypted_column(
    p_table regclass, p_column name, p_original_type text, p_key_version integer
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    v_attnum smallint;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_class c
        WHERE c.oid = p_table AND c.relkind IN ('r', 'p') AND c.relowner = 'project_admin'::regrole
    ) THEN
        RAISE EXCEPTION 'only a table project_admin owns may have encrypted columns' USING ERRCODE = '42501';
    END IF;
    SELECT a.attnum INTO v_attnum FROM pg_attribute a
    WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid = 'text'::regtype;
    IF v_attnum IS NULL THEN
        RAISE EXCEPTION 'an encrypted column must exist and be of type text' USING ERRCODE = '42804';
    END IF;
    INSERT INTO system.encrypted_columns (table_oid, column_num, original_type, key_version)
    VALUES (p_table, v_attnum, p_original_type, p_key_version)
    ON CONFLICT (table_oid, column_num) DO UPDATE
    SET original_type = excluded.original_type, key_version = excluded.key_version, updated_at = now();
    -- Every process's schema cache learns of it (the records API encrypts by it), DDL or not.
    PERFORM pg_notify('kilnbase_schema', 'ENCRYPT COLUMN');
END
$$;
REVOKE ALL ON FUNCTION system.register_encrypted_column(regclass, name, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION system.register_encrypted_column(regclass, name, text, integer) TO project_admin;

-- A dropped table or column leaves the registry however it was dropped (API, raw SQL, psql): an oid Postgres
-- hands out again must never find an old entry.
CREATE FUNCTION system.forget_dropped_encrypted_columns() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    DELETE FROM system.encrypted_columns e
    USING pg_event_trigger_dropped_objects() d
    WHERE e.table_oid = d.objid
      AND (d.object_type IN ('table', 'foreign table')
           OR (d.object_type = 'table column' AND d.objsubid = e.column_num));
END
$$;
REVOKE ALL ON FUNCTION system.forget_dropped_encrypted_columns() FROM PUBLIC;
CREATE EVENT TRIGGER kilnbase_forget_encrypted_columns ON sql_drop
    EXECUTE FUNCTION system.forget_dropped_encrypted_columns();
