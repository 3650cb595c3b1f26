"""Postgres's logical replication messages (`pgoutput`, protocol version 1) turned into row changes.

Pure: bytes in, `Change`s out, no database. The decoder reads them with `pg_logical_slot_peek_binary_changes`
(`change_feed.py`); each call starts a fresh decoding session, so Relation messages arrive again before the
changes that need them. Column values arrive as text and are turned into JSON values by their type (numbers,
booleans, json and jsonb parsed; everything else stays text, as in Supabase's payloads).

Message layouts: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Type OIDs whose text form becomes a JSON number, boolean or value.
_INTEGERS = {20, 21, 23, 26}
_FLOATS = {700, 701}
_NUMERIC = 1700
_BOOL = 16
_JSON = {114, 3802}


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    table: str
    columns: tuple[Column, ...]

    @property
    def key_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.is_key]


@dataclass
class Change:
    """One row change, in Supabase's `postgres_changes` shape once `as_payload` is called."""

    type: str  # INSERT, UPDATE, DELETE
    relation: Relation
    record: dict[str, Any]
    old_record: dict[str, Any]
    commit_timestamp: str = ""
    #: Columns whose value was not sent (an unchanged TOASTed value in an UPDATE).
    unchanged: list[str] = field(default_factory=list)
    #: The new row's primary key, as Postgres prints it (None for a DELETE, or a table without a key).
    key: tuple[str, ...] | None = None

    def as_payload(self) -> dict[str, Any]:
        return {
            "schema": self.relation.schema,
            "table": self.relation.table,
            "commit_timestamp": self.commit_timestamp,
            "type": self.type,
            "record": self.record,
            "old_record": self.old_record,
            "columns": [{"name": c.name, "type_oid": c.type_oid} for c in self.relation.columns],
            "errors": None,
        }


def json_value(text: str, type_oid: int) -> Any:
    try:
        if type_oid in _INTEGERS:
            return int(text)
        if type_oid in _FLOATS:
            return float(text)
        if type_oid == _NUMERIC:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text else number
        if type_oid == _BOOL:
            return text == "t"
        if type_oid in _JSON:
            return orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError):
        return text
    return text


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def int16(self) -> int:
        (value,) = struct.unpack_from(">h", self.data, self.at)
        self.at += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.at)
        self.at += 4
        return int(value)

    def int64(self) -> int:
        (value,) = struct.unpack_from(">q", self.data, self.at)
        self.at += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\0", self.at)
        value = self.data[self.at : end].decode()
        self.at = end + 1
        return value

    def tuple_data(self, relation: Relation) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        count = self.int16()
        values: dict[str, Any] = {}
        unchanged: list[str] = []
        texts: dict[str, str] = {}
        for index in range(count):
            column = relation.columns[index]
            kind = chr(self.byte())
            if kind == "n":
                values[column.name] = None
            elif kind == "u":
                unchanged.append(column.name)
            else:  # 't' (text) or 'b' (binary, not requested)
                length = self.int32()
                raw = self.data[self.at : self.at + length].decode()
                self.at += length
                texts[column.name] = raw
                values[column.name] = json_value(raw, column.type_oid)
        return values, unchanged, texts


class Decoder:
    """Feeds on one transaction stream after another; returns the changes of each committed transaction."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._pending: list[Change] = []

    def feed(self, data: bytes) -> list[Change] | None:
        """The transaction's changes when `data` is its commit; None otherwise."""
        reader = Reader(data)
        kind = chr(reader.byte())
        if kind == "B":
            self._pending = []
        elif kind == "R":
            oid = reader.int32()
            schema, table = reader.string(), reader.string()
            reader.byte()  # replica identity setting
            columns = []
            for _ in range(reader.int16()):
                flags = reader.byte()
                name = reader.string()
                type_oid = reader.int32()
                reader.int32()  # type modifier
                columns.append(Column(name, type_oid, bool(flags & 1)))
            self.relations[oid] = Relation(oid, schema or "public", table, tuple(columns))
        elif kind in "IUD":
            self._pending.append(self._row_change(kind, reader))
        elif kind == "C":
            reader.byte()
            reader.int64()
            reader.int64()
            committed = _EPOCH + timedelta(microseconds=reader.int64())
            stamp = committed.isoformat().replace("+00:00", "Z")
            changes, self._pending = self._pending, []
            for change in changes:
                change.commit_timestamp = stamp
            return changes
        return None

    def _row_change(self, kind: str, reader: Reader) -> Change:
        relation = self.relations[reader.int32()]
        old: dict[str, Any] = {}
        marker = chr(reader.byte())
        if kind == "I":
            record, unchanged, texts = reader.tuple_data(relation)
            return Change("INSERT", relation, record, {}, unchanged=unchanged, key=_key(relation, texts))
        if marker in "KO":
            old, _, _ = reader.tuple_data(relation)
            if marker == "K":  # the replica identity's columns only (the primary key); the rest are nulls
                old = {name: old[name] for name in relation.key_columns if name in old}
            if kind == "D":
                return Change("DELETE", relation, {}, old)
            marker = chr(reader.byte())
        record, unchanged, texts = reader.tuple_data(relation)
        return Change("UPDATE", relation, record, old, unchanged=unchanged, key=_key(relation, texts))


def _key(relation: Relation, texts: dict[str, str]) -> tuple[str, ...] | None:
    names = relation.key_columns
    if not names or any(name not in texts for name in names):
        return None
    return tuple(texts[name] for name in names)
