-- Agent memory (InsForge's `memory` schema): durable facts, decisions, preferences and references an agent
-- remembers for later tasks, with an embedding for semantic recall and a generated full-text vector for the
-- keyword half of recall (`memory/service.py`). Kilnbase-internal: only the owner reads and writes it.
--
-- The embedding is pgvector's `vector`, which the embedded PostgreSQL ships. A server given by DATABASE_URL
-- may lack the extension: then nothing of this is created, and `/api/memory` answers 503 saying so (install
-- pgvector before Kilnbase first migrates that database). The extension goes in `public`, as InsForge
-- installs it, so a project's own `vector` columns use the same one.
--
-- Migrations resolve names in pg_catalog alone (`db/migrate.py`): pgvector's type and operator class are
-- named with the schema the extension is in (`public` when this installs it; wherever an operator put it).
DO $migration$
DECLARE
    v_schema text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        RAISE NOTICE 'pgvector is not available on this server: agent memory is left out';
        RETURN;
    END IF;
    CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;
    SELECT n.nspname INTO v_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector';

    CREATE SCHEMA memory;
    REVOKE ALL ON SCHEMA memory FROM PUBLIC;

    EXECUTE format($table$CREATE TABLE memory.memories (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        -- A free namespace the caller names (a project, an agent, an end user), as in InsForge.
        scope text NOT NULL CHECK (length(scope) BETWEEN 1 AND 255),
        kind text NOT NULL CHECK (kind IN ('fact', 'decision', 'preference', 'reference')),
        title text NOT NULL CHECK (length(title) BETWEEN 1 AND 2000),
        content text NOT NULL CHECK (length(content) BETWEEN 1 AND 20000),
        embedding %1$I.vector(1536) NOT NULL,
        -- Which model made the embedding: vectors of two models are not comparable, so recall compares
        -- only those of the model configured now (`KILNBASE_MEMORY_EMBEDDING_MODEL`).
        embedding_model text NOT NULL,
        source text CHECK (length(source) <= 500),
        content_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || content)) STORED,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )$table$, v_schema);
    -- The index listing (a scope's titles, newest first) and the scope filter of both halves of recall.
    CREATE INDEX memories_scope_updated_at ON memory.memories (scope, updated_at DESC);
    -- Cosine distance; recall turns on pgvector's iterative scan, so that a scope's filter applied after
    -- the index scan still finds enough rows in a table that holds many scopes.
    EXECUTE format(
        'CREATE INDEX memories_embedding_cosine ON memory.memories USING hnsw (embedding %I.vector_cosine_ops)',
        v_schema
    );
    CREATE INDEX memories_content_tsv ON memory.memories USING gin (content_tsv);

    REVOKE ALL ON ALL TABLES IN SCHEMA memory FROM PUBLIC;
END
$migration$;
