"""What the engine remembers per schema snapshot: shapes, plans and rendered statements, each kind typed.

A repeated request shape (see `api_request.shape_key`) is parsed, planned and rendered once; only the body,
the arguments and the caller change between requests. The engine keeps one cache for the current snapshot
and starts a new one when the snapshot changes (a reload after DDL); all of it is forgotten at once when
`PLAN_CACHE_SIZE` entries are held. Keys are normalised and of bounded size, so the memory a client can
make the server hold is bounded too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kilnbase.db.schema_cache import SchemaSnapshot, Table
from kilnbase.records.api_request import RequestShape, ShapeKey
from kilnbase.records.call_plan import CallPlan, CallTarget
from kilnbase.records.mutate_plan import MutatePlan
from kilnbase.records.read_plan import ReadPlan, TableTarget
from kilnbase.records.statements import StatementTemplate

#: Entries held per schema snapshot, all kinds together; emptied when full.
PLAN_CACHE_SIZE = 2048

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class PreparedRead:
    """A read whose statement is final: its plan (for the page) and the statement."""

    plan: ReadPlan
    statement: StatementTemplate
    #: The encrypted values its answer decrypts (`records.encrypted_columns`): empty for nearly every read.
    decrypt: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A write for one set of columns: the statement waits for the body (None: nothing runs)."""

    plan: MutatePlan
    statement: StatementTemplate | None
    #: The table whose encrypted columns the body's values go to, encrypted (None: it has none, or a DELETE).
    encrypt: Table | None = None
    #: The encrypted values the rows it answers with decrypt (`records.encrypted_columns`).
    decrypt: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A call for one set of argument names: the statement waits for the arguments (None: a planned count
    is asked for, and the statement depends on the planner's answer)."""

    plan: CallPlan
    statement: StatementTemplate | None


#: A write is planned per shape and the columns its body sets.
WriteKey = tuple[RequestShape, tuple[str, ...]]
#: A call is planned per shape, the kind of body, the parameter names its arguments name, whether they name
#: others, and whether they name the empty name (an unnamed parameter's).
CallKey = tuple[RequestShape, str | None, frozenset[str], bool, bool]


class Memo(Generic[_K, _V]):
    """One kind of entry. `get` is the dict's own (this is the hot path); `put` counts against the cache."""

    __slots__ = ("_cache", "_entries", "get")

    def __init__(self, cache: PlanCache) -> None:
        self._cache = cache
        self._entries: dict[_K, _V] = {}
        self.get: Callable[[_K], _V | None] = self._entries.get

    def put(self, key: _K, value: _V) -> _V:
        self._cache.make_room()
        self._entries[key] = value
        self._cache.size += 1
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PlanCache:
    """The per-snapshot memory, one typed `Memo` per kind of entry. Shapes are handed out once per key,
    so what is remembered for a shape is keyed by the shape itself (by identity: no rehashing)."""

    def __init__(self, snapshot: SchemaSnapshot, capacity: int = PLAN_CACHE_SIZE) -> None:
        self.snapshot = snapshot  # what everything here was made from
        self.capacity = capacity
        self.size = 0
        self.shapes: Memo[ShapeKey, RequestShape] = Memo(self)
        self.tables: Memo[RequestShape, TableTarget] = Memo(self)
        self.routines: Memo[RequestShape, CallTarget] = Memo(self)
        self.reads: Memo[RequestShape, PreparedRead] = Memo(self)
        self.writes: Memo[WriteKey, PreparedWrite] = Memo(self)
        self.calls: Memo[CallKey, PreparedCall] = Memo(self)
        self._memos = (self.shapes, self.tables, self.routines, self.reads, self.writes, self.calls)

    def make_room(self) -> None:
        if self.size >= self.capacity:
            for memo in self._memos:
                memo.clear()
            self.size = 0
