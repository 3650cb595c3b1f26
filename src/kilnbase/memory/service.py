"""The service behind `/api/memory`: remember, recall, and the index of a scope's titles.

Contract from InsForge (`services/memory/memory.service.ts`, `routes/memory`, `memory-api.schema.ts`):
remember answers `{results: [{action: ADD|UPDATE|NOOP, id?, title}]}`, recall `{memories: [{id, kind, title,
content, similarity, updated_at}]}`, index `{entries: [{id, kind, title, updated_at}]}`. The project's API key
only (agent keys too, in Kilnbase): `401 AUTH_INVALID_API_KEY` for anything else.

Remembering embeds each memory (`title\\ncontent`) and looks for near-duplicates in its scope (cosine
similarity above 0.5, the three closest); when there are some, the chat model decides ADD, UPDATE (one of
them, merged and embedded again) or NOOP (`model_output`). A transcript is first turned into memories by the
chat model. Models are called through the gateway as the caller (`Models`, wired in `services.py`), so its
credentials, limits and usage ledger apply; no transaction is open while a model answers. Each write is its
own transaction with its audit entry (`ADD_MEMORY`, `UPDATE_MEMORY`, module `MEMORY`; the title, never the
content); a refused or failed remember is audited too. A model's failure stores nothing for the memory it
concerns: the single form answers the error; the transcript form, as InsForge isolates candidates, answers
the memories already stored and a NOOP with an `error` for each that failed (a field InsForge lacks).

Recall is hybrid, as InsForge's: the closest memories above the threshold by meaning, and those whose words
match the query (Postgres full text), fused by reciprocal rank; a word match is recalled even below the
threshold (an identifier or a file name that embeddings blur), with its similarity as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel

from kilnbase import audit
from kilnbase.config import MemorySettings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind
from kilnbase.memory import model_output
from kilnbase.memory.definitions import (
    DEFAULT_RECALL_THRESHOLD,
    IndexRequest,
    RecallRequest,
    RememberRequest,
)
from kilnbase.memory.model_output import Candidate, Decision

M = TypeVar("M", bound=BaseModel)

MODULE = "MEMORY"
#: What `memory.memories.embedding` holds (text-embedding-3-small's size).
EMBEDDING_DIMENSIONS = 1536
#: Only near-duplicates go to the reconciling model (InsForge's floor), and only the closest few.
RECONCILE_THRESHOLD = 0.5
RECONCILE_MATCHES = 3
#: How many memories each half of recall ranks before they are fused; the fusion's constant.
RECALL_CANDIDATES = 20
RRF_K = 60
#: The most titles one index answers with, newest first (InsForge lists them all).
MAX_INDEXED = 1000

REMEMBER = "/api/memory/remember"
RECALL = "/api/memory/recall"

#: The credentials memory answers: the project's API key (InsForge's `verifyApiKey`), agent keys, Kilnbase.
_KEY_KINDS = frozenset({CredentialKind.API_KEY, CredentialKind.AGENT_KEY, CredentialKind.SYSTEM})

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_UPDATED_AT = f"to_char(m.updated_at at time zone 'UTC', '{_ISO}') as updated_at"
#: pgvector's HNSW scan applies the scope filter after the index: scan on until enough rows pass it.
_ITERATIVE_SCAN = "select set_config('hnsw.iterative_scan', 'relaxed_order', true)"


class Models(Protocol):
    """The model gateway as memory calls it (`ai.model_calls.ModelCalls`), as the actor, for an endpoint."""

    async def embed(
        self, actor: Actor, endpoint: str, model: str, texts: Sequence[str], dimensions: int
    ) -> list[list[float]]: ...

    async def complete(
        self, actor: Actor, endpoint: str, model: str, messages: Sequence[Mapping[str, str]]
    ) -> str: ...


def no_api_key() -> ApiError:
    return ApiError(
        401,
        "AUTH_INVALID_API_KEY",
        "No API key provided",
        "Send the project's API key (kilnbase keys prints it) or an agent key as "
        "'Authorization: Bearer ...'.",
    )


def _require_key(actor: Actor) -> None:
    if actor.principal.kind not in _KEY_KINDS:
        raise no_api_key()


def _checked(model: type[M], body: Any) -> M:
    """The body as `model`, or InsForge's 400 `Validation error: ...` naming each field."""
    try:
        return parse(model, body)
    except ApiError as exc:
        raise ApiError(400, "INVALID_INPUT", f"Validation error: {exc.message}", exc.next_actions) from None


def _vector(values: Sequence[float]) -> str:
    """pgvector's text form, bound as a parameter and cast."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _embedded(title: str, content: str) -> str:
    return f"{title}\n{content}"


class Memory:
    def __init__(self, database: Database, models: Models, settings: MemorySettings) -> None:
        self._database = database
        self._models = models
        self._settings = settings
        self._available = False
        #: pgvector's schema, quoted: its type and operator are named with it (`_with_vector`).
        self._vector_schema = ""

    def _with_vector(self, statement: str) -> str:
        """`statement` with pgvector's type and distance operator named with their schema: the owner's
        sessions resolve names in `pg_catalog` alone (`db/pool.catalog_only`), and pgvector lives where the
        app's admins may create functions and operators of their own."""
        schema = self._vector_schema
        return statement.replace("::vector", f"::{schema}.vector").replace("<=>", f"OPERATOR({schema}.<=>)")

    async def _require_table(self) -> None:
        """503 when the database had no pgvector when it was migrated (see migration 0230)."""
        if self._available:
            return
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select to_regclass('memory.memories') is not null as present, (select n.nspname "
                "from pg_extension e join pg_namespace n on n.oid = e.extnamespace "
                "where e.extname = 'vector') as vector_schema"
            )
            row = await cur.fetchone()
        if row is None or not row["present"] or row["vector_schema"] is None:
            raise ApiError(
                503,
                "MEMORY_UNAVAILABLE",
                "Agent memory needs the pgvector extension, which this database did not have when Kilnbase "
                "set it up.",
                "Use the embedded PostgreSQL, or install pgvector on the server before Kilnbase first "
                "migrates its database.",
            )
        self._vector_schema = '"' + str(row["vector_schema"]).replace('"', '""') + '"'
        self._available = True

    # --- remember ---------------------------------------------------------------------------------------

    async def remember(self, actor: Actor, body: Any) -> dict[str, Any]:
        scope = body.get("scope") if isinstance(body, dict) else None
        details: dict[str, Any] = {"scope": scope if isinstance(scope, str) else "default"}
        async with audit.refusals(self._database, actor, "REMEMBER_MEMORY", MODULE, details):
            _require_key(actor)
            request = _checked(RememberRequest, body)
            details["form"] = "transcript" if request.transcript else "memory"
            await self._require_table()
            found = await self._candidates(actor, request)
            vectors = await self._embed(actor, [_embedded(c.title, c.content) for c in found])
            results: list[dict[str, Any]] = []
            for candidate, vector in zip(found, vectors, strict=True):
                try:
                    results.append(await self._remember_one(actor, request, candidate, vector))
                except ApiError as exc:
                    if not request.transcript:
                        raise
                    results.append({"action": "NOOP", "title": candidate.title, "error": exc.message})
        return {"results": results}

    async def _candidates(self, actor: Actor, request: RememberRequest) -> list[Candidate]:
        if request.transcript:
            answer = await self._models.complete(
                actor,
                REMEMBER,
                self._settings.chat_model,
                [
                    {"role": "system", "content": model_output.EXTRACT_PROMPT},
                    {"role": "user", "content": request.transcript},
                ],
            )
            return model_output.candidates(answer)
        assert request.title is not None and request.content is not None
        return [Candidate(request.kind or "fact", request.title, request.content)]

    async def _embed(self, actor: Actor, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._settings.embedding_model
        return await self._models.embed(actor, REMEMBER, model, texts, EMBEDDING_DIMENSIONS)

    async def _remember_one(
        self, actor: Actor, request: RememberRequest, candidate: Candidate, vector: list[float]
    ) -> dict[str, Any]:
        similar = await self._similar(request.scope, vector)
        choice = Decision("ADD")
        if similar:
            choice = await self._reconcile(actor, candidate, similar)
        if choice.action == "NOOP":
            return {"action": "NOOP", "title": candidate.title}
        if choice.action == "UPDATE" and choice.target_id is not None:
            updated = await self._update(actor, request, candidate, choice)
            if updated is not None:
                return updated
        return await self._add(actor, request, candidate, vector)

    async def _similar(self, scope: str, vector: list[float]) -> list[dict[str, Any]]:
        async with self._database.as_owner() as cur:
            await cur.execute(_ITERATIVE_SCAN)
            await cur.execute(
                self._with_vector(
                    "with q as (select %(v)s::vector as v) "
                    "select m.id::text as id, m.kind, m.title, m.content, "
                    "(1 - (m.embedding <=> q.v))::float8 as similarity "
                    "from memory.memories m, q "
                    "where m.scope = %(scope)s and m.embedding_model = %(model)s "
                    "and 1 - (m.embedding <=> q.v) > %(floor)s "
                    "order by m.embedding <=> q.v limit %(k)s"
                ),
                {
                    "v": _vector(vector),
                    "scope": scope,
                    "model": self._settings.embedding_model,
                    "floor": RECONCILE_THRESHOLD,
                    "k": RECONCILE_MATCHES,
                },
            )
            return list(await cur.fetchall())

    async def _reconcile(
        self, actor: Actor, candidate: Candidate, similar: Sequence[Mapping[str, Any]]
    ) -> Decision:
        shown = {
            "candidate": {"kind": candidate.kind, "title": candidate.title, "content": candidate.content},
            "existing": [
                {k: row[k] for k in ("id", "kind", "title", "content", "similarity")} for row in similar
            ],
        }
        answer = await self._models.complete(
            actor,
            REMEMBER,
            self._settings.chat_model,
            [
                {"role": "system", "content": model_output.RECONCILE_PROMPT},
                {"role": "user", "content": orjson.dumps(shown).decode()},
            ],
        )
        return model_output.decision(answer, frozenset(row["id"] for row in similar))

    async def _update(
        self, actor: Actor, request: RememberRequest, candidate: Candidate, choice: Decision
    ) -> dict[str, Any] | None:
        """The merged memory in place of its near-duplicate; None when that one is gone."""
        title = choice.title or candidate.title
        content = choice.content or candidate.content
        [vector] = await self._embed(actor, [_embedded(title, content)])
        async with self._database.as_owner() as cur:
            await cur.execute(
                self._with_vector(
                    "update memory.memories set kind = %s, title = %s, content = %s, embedding = %s::vector, "
                    "embedding_model = %s, source = %s, updated_at = now() "
                    "where id = %s and scope = %s returning id::text as id"
                ),
                (
                    candidate.kind,
                    title,
                    content,
                    _vector(vector),
                    self._settings.embedding_model,
                    request.source,
                    choice.target_id,
                    request.scope,
                ),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            entry = {"scope": request.scope, "id": row["id"], "title": title[:200]}
            await audit.record(cur, actor, "UPDATE_MEMORY", MODULE, entry)
        return {"action": "UPDATE", "id": row["id"], "title": title}

    async def _add(
        self, actor: Actor, request: RememberRequest, candidate: Candidate, vector: list[float]
    ) -> dict[str, Any]:
        async with self._database.as_owner() as cur:
            await cur.execute(
                self._with_vector(
                    "insert into memory.memories "
                    "(scope, kind, title, content, embedding, embedding_model, source) "
                    "values (%s, %s, %s, %s, %s::vector, %s, %s) returning id::text as id"
                ),
                (
                    request.scope,
                    candidate.kind,
                    candidate.title,
                    candidate.content,
                    _vector(vector),
                    self._settings.embedding_model,
                    request.source,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            entry = {"scope": request.scope, "id": row["id"], "title": candidate.title[:200]}
            await audit.record(cur, actor, "ADD_MEMORY", MODULE, entry)
        return {"action": "ADD", "id": row["id"], "title": candidate.title}

    # --- recall and index -------------------------------------------------------------------------------

    async def recall(self, actor: Actor, body: Any) -> dict[str, Any]:
        """The scope's memories closest to the query: `{memories}`, best first."""
        _require_key(actor)
        request = _checked(RecallRequest, body)
        await self._require_table()
        model = self._settings.embedding_model
        [vector] = await self._models.embed(actor, RECALL, model, [request.query], EMBEDDING_DIMENSIONS)
        threshold = DEFAULT_RECALL_THRESHOLD if request.threshold is None else request.threshold
        async with self._database.as_owner() as cur:
            await cur.execute(_ITERATIVE_SCAN)
            await cur.execute(
                self._with_vector(_RECALL_SQL),
                {
                    "v": _vector(vector),
                    "query": request.query,
                    "scope": request.scope,
                    "model": model,
                    "threshold": threshold,
                    "arm": RECALL_CANDIDATES,
                    "rrf_k": RRF_K,
                    "limit": request.limit,
                },
            )
            rows = await cur.fetchall()
        return {"memories": [dict(row) for row in rows]}

    async def index(self, actor: Actor, body: Any) -> dict[str, Any]:
        """Every title of the scope, newest first (no model called): `{entries}`."""
        _require_key(actor)
        request = _checked(IndexRequest, body)
        await self._require_table()
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select m.id::text as id, m.kind, m.title, {_UPDATED_AT} from memory.memories m "
                "where m.scope = %s order by m.updated_at desc, m.id limit %s",
                (request.scope, MAX_INDEXED),
            )
            rows = await cur.fetchall()
        return {"entries": [dict(row) for row in rows]}


_RECALL_SQL = f"""
with q as (select %(v)s::vector as v, websearch_to_tsquery('english', %(query)s) as words),
by_meaning as (
    select m.id, row_number() over (order by m.embedding <=> q.v) as rank
    from memory.memories m, q
    where m.scope = %(scope)s and m.embedding_model = %(model)s
      and 1 - (m.embedding <=> q.v) > %(threshold)s
    order by m.embedding <=> q.v
    limit %(arm)s
),
by_words as (
    select m.id, row_number() over (order by ts_rank(m.content_tsv, q.words) desc) as rank
    from memory.memories m, q
    where m.scope = %(scope)s and m.content_tsv @@ q.words
    order by ts_rank(m.content_tsv, q.words) desc
    limit %(arm)s
),
fused as (
    select coalesce(a.id, b.id) as id,
           coalesce(1.0 / (%(rrf_k)s + a.rank), 0) + coalesce(1.0 / (%(rrf_k)s + b.rank), 0) as score
    from by_meaning a full join by_words b on a.id = b.id
)
select m.id::text as id, m.kind, m.title, m.content,
       (1 - (m.embedding <=> q.v))::float8 as similarity, {_UPDATED_AT}
from fused f join memory.memories m on m.id = f.id cross join q
order by f.score desc, m.updated_at desc, m.id
limit %(limit)s
"""
