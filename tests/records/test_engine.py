"""The orchestration and its memory, without a database: a recording stand-in runs the statements.

What is remembered per request shape is observed through the typed `PlanCache`: how many shapes, reads,
writes and calls it holds after a series of requests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from kilnbase.config import RecordsSettings
from kilnbase.db.schema_cache import SchemaCache, SchemaSnapshot
from kilnbase.db.session import Database
from kilnbase.keys.column_cipher import ColumnCipher
from kilnbase.records.api_request import MAX_REMEMBERED_URL, RecordsRequest
from kilnbase.records.errors import RecordsError
from kilnbase.records.plan_cache import PlanCache
from kilnbase.records.response import RecordsResponse
from kilnbase.records.service import RecordsEngine
from tests.records.memory_schema import memory_snapshot, records_request, rpc_request

pytestmark = [pytest.mark.no_postgres, pytest.mark.anyio]

Row = dict[str, Any]


@dataclass
class Executed:
    text: str
    params: list[Any]
    read_only: bool
    rollback: bool = False


@dataclass
class RecordingDatabase:
    """Runs nothing: records each statement and answers with `answer(text, params)`."""

    answer: Callable[[str, list[Any]], Row | None]
    executed: list[Executed] = field(default_factory=list)

    @asynccontextmanager
    async def as_caller(
        self, principal: object, *, read_only: bool = False, rollback: bool = False
    ) -> AsyncIterator[_Cursor]:
        yield _Cursor(self, read_only, rollback)

    async def statement_as_caller(
        self, principal: object, text: str, params: Any, *, read_only: bool = False
    ) -> _Cursor:
        cursor = _Cursor(self, read_only)
        await cursor.execute(text, params)
        return cursor


class _Connection:
    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[None]:
        yield


class _Cursor:
    def __init__(self, database: RecordingDatabase, read_only: bool, rollback: bool = False) -> None:
        self.database, self.read_only, self.rollback = database, read_only, rollback
        self.connection = _Connection()
        self.rowcount = -1
        self._row: Row | None = None

    async def execute(self, text: str, params: Any = None) -> None:
        self.database.executed.append(Executed(text, list(params or ()), self.read_only, self.rollback))
        self._row = self.database.answer(text, list(params or ()))
        self.rowcount = 1

    async def fetchone(self) -> Row | None:
        return self._row

    @property
    def pgresult(self) -> SimpleNamespace:
        """libpq's result, as far as the engine reads it: how many columns came back."""
        return SimpleNamespace(nfields=len(self._row) if self._row else 0)


class SchemaCacheStandIn:
    def __init__(self, *snapshots: SchemaSnapshot) -> None:
        self.snapshot, self._next = snapshots[0], list(snapshots[1:])

    async def reload_unless_fresh(self, since: float) -> SchemaSnapshot:
        if self._next:
            self.snapshot = self._next.pop(0)
            self.snapshot.loaded_at = time.monotonic()
        return self.snapshot


def page(body: str = "[]", page_total: int = 0) -> Row:
    return {
        "total": None,
        "page_total": page_total,
        "body": body,
        "response_status": None,
        "response_headers": None,
    }


def engine(
    *snapshots: SchemaSnapshot,
    answer: Callable[[str, list[Any]], Row | None] | None = None,
    settings: RecordsSettings | None = None,
) -> tuple[RecordsEngine, RecordingDatabase]:
    database = RecordingDatabase(answer or (lambda text, params: page()))
    cache = SchemaCacheStandIn(*(snapshots or (memory_snapshot(),)))
    cipher = ColumnCipher(bytes(32), 1)
    return RecordsEngine(cast(Database, database), cast(SchemaCache, cache), cipher, settings), database


async def handle(records: RecordsEngine, request: RecordsRequest) -> RecordsResponse:
    return await records.handle(request)


async def test_a_repeated_read_reuses_its_statement() -> None:
    records, database = engine(answer=lambda text, params: page('[{"id":1}]', 1))
    for _ in range(3):
        response = await handle(records, records_request("GET", "posts", "select=id&id=eq.1"))
        assert (response.status, response.body, response.headers) == (
            200,
            '[{"id":1}]',
            {"Content-Range": "0-0/*"},
        )
    plans = records.plans
    assert (len(plans.shapes), len(plans.reads)) == (1, 1)
    assert len({(e.text, tuple(e.params), e.read_only) for e in database.executed}) == 1
    assert database.executed[0].read_only and database.executed[0].params == ["1"]


async def test_unique_unknown_preferences_are_one_shape() -> None:
    """Issue 10, item 6: the memory keys on normalised preferences, never on the header's text."""
    records, _ = engine()
    for index in range(50):
        prefer = f"count=exact, x-{index}={'y' * 10_000}"
        assert (await handle(records, records_request("GET", "posts", prefer=prefer))).status == 200
    plans = records.plans
    assert (len(plans.shapes), len(plans.reads)) == (1, 1)
    assert plans.size == 2


async def test_accept_and_profile_spellings_are_one_shape() -> None:
    records, _ = engine()
    for headers in (
        {},
        {"accept": "application/json"},
        {"accept": "*/*"},
        {"accept": "application/json, text/csv;q=0.1"},
    ):
        assert (await handle(records, records_request("GET", "posts", **headers))).status == 200
    assert len(records.plans.shapes) == 1


async def test_a_long_url_is_answered_but_not_remembered() -> None:
    records, _ = engine()
    long_filter = "title=in.(" + ",".join(str(i) for i in range(MAX_REMEMBERED_URL // 4)) + ")"
    assert (await handle(records, records_request("GET", "posts", long_filter))).status == 200
    assert records.plans.size == 0


async def test_writes_are_planned_per_columns_and_take_each_body() -> None:
    records, database = engine(answer=lambda text, params: None)
    for title in ("a", "b"):
        response = await handle(
            records, records_request("POST", "posts", "", f'{{"title": "{title}"}}'.encode())
        )
        assert (response.status, response.body) == (201, "[]")
    await handle(records, records_request("POST", "posts", "", b'{"title": "c", "score": 1}'))
    assert len(records.plans.writes) == 2
    assert [e.params for e in database.executed] == [
        ['[{"title": "a"}]'],
        ['[{"title": "b"}]'],
        ['[{"title": "c", "score": 1}]'],
    ]
    assert database.executed[0].text == database.executed[1].text != database.executed[2].text
    assert not any(e.read_only for e in database.executed)


async def test_an_update_that_sets_nothing_runs_nothing() -> None:
    records, database = engine()
    response = await handle(records, records_request("PATCH", "posts", "id=eq.1", b"{}"))
    assert (response.status, response.headers) == (204, {"Content-Range": "*/*"})
    assert database.executed == []


async def test_argument_names_no_function_has_are_not_remembered() -> None:
    """A function that takes the whole body accepts any argument names; the call memory keys on the
    parameters they name, so a caller cannot fill it with names of its own choosing."""
    records, database = engine(answer=lambda text, params: {**page(), "body": params[0]})
    for index in range(20):
        response = await handle(records, rpc_request("POST", "echo_json", "", f'{{"k{index}": 1}}'.encode()))
        assert response.body == f'{{"k{index}": 1}}'  # the body itself, as PostgREST passes it
    assert len(records.plans.calls) == 1
    assert len({e.text for e in database.executed}) == 1


async def test_calls_are_planned_per_parameters_named() -> None:
    records, _ = engine(answer=lambda text, params: {**page(), "body": "2"})
    for body in (b'{"a": 1}', b'{"a": 5}', b'{"a": 1, "b": 2}'):
        response = await handle(records, rpc_request("POST", "add_numbers", "", body))
        assert (response.status, response.body) == (200, "2")
    with pytest.raises(RecordsError) as caught:  # a name no overload has: refused, and not remembered
        await handle(records, rpc_request("POST", "add_numbers", "", b'{"a": 1, "zz": 2}'))
    assert caught.value.code == "PGRST202"
    assert len(records.plans.calls) == 2  # {a} and {a, b}


async def test_a_table_created_since_the_snapshot_is_found_after_one_reload() -> None:
    before, after = memory_snapshot(), memory_snapshot()
    del before.tables[("public", "comments")]
    records, _ = engine(before, after)
    response = await handle(records, records_request("GET", "comments"))
    assert response.status == 200
    assert records.cache.snapshot is after
    missing = records_request("GET", "nothing_here")
    with pytest.raises(RecordsError) as caught:
        await handle(records, missing)
    assert caught.value.code == "PGRST205"


def test_the_cache_empties_when_full() -> None:
    plans = PlanCache(memory_snapshot(), capacity=3)
    for index in range(3):
        plans.routines.put(cast(Any, index), cast(Any, index))
    assert (plans.size, len(plans.routines)) == (3, 3)
    plans.shapes.put(cast(Any, "key"), cast(Any, "shape"))
    assert (plans.size, len(plans.routines)) == (1, 0)
    assert plans.shapes.get(cast(Any, "key")) == cast(Any, "shape")


@pytest.mark.parametrize(
    ("tx_end", "prefer", "rolled_back", "applied"),
    [
        ("commit", "tx=rollback", False, None),
        ("commit-allow-override", "tx=rollback", True, "tx=rollback"),
        ("commit-allow-override", "", False, None),
        ("rollback", "tx=commit", True, None),
        ("rollback-allow-override", "tx=commit", False, "tx=commit"),
        ("rollback-allow-override", "", True, None),
    ],
)
async def test_a_writes_transaction_ends_as_db_tx_end_says(
    tx_end: str, prefer: str, rolled_back: bool, applied: str | None
) -> None:
    """PostgREST's `db-tx-end`: the server's choice, which `Prefer: tx=` overrides only where allowed (and
    only then is it applied, and echoed)."""
    settings = RecordsSettings(tx_end=tx_end)
    records, database = engine(settings=settings, answer=lambda text, params: None)
    headers = {"prefer": prefer} if prefer else {}
    response = await handle(records, records_request("DELETE", "posts", "id=eq.1", **headers))
    assert [e.rollback for e in database.executed] == [rolled_back]
    assert response.headers.get("Preference-Applied") == applied
