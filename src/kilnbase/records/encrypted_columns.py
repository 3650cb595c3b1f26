"""Encrypted columns on the records API (InsForge's column-level encryption, `system.encrypted_columns`).

A write encrypts the values of a table's encrypted columns before the statement takes them; a read decrypts
them in the answer. Postgres only ever holds ciphertext, so what it would compute from the value is refused
with a 400 naming the column, never answered from ciphertext: a filter or an order on it, a cast, a JSON
path or an aggregate of it, reading it through an embed, or as CSV (which Postgres writes).

All of the checks are made when a request's plan is made, which is remembered per request shape; a table
without encrypted columns costs a request one attribute check on a write and one on a read.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from kilnbase.db.schema_cache import Table
from kilnbase.keys.column_cipher import ColumnCipher, ColumnDecryptionError, plain_value, text_of
from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import Condition, Filter
from kilnbase.records.read_plan import ReadNode

#: What a read decrypts: (output name, declared type) of each encrypted value in a row of the answer.
Decryption = tuple[tuple[str, str], ...]

log = logging.getLogger("kilnbase.records.encrypted")

_HINT = "An encrypted value can only be written and read whole: filter, order and compute on other columns."


def refused(table: Table, column: str, use: str) -> RecordsError:
    return RecordsError(
        400, "0A000", f"Column '{column}' of '{table.name}' is encrypted and cannot be {use}", None, _HINT
    )


def check_conditions(table: Table | None, conditions: tuple[Condition, ...] | list[Condition]) -> None:
    """400 for a filter (also inside `or=`/`and=`) on an encrypted column of `table`."""
    if table is None or not table.encrypted:
        return
    for condition in conditions:
        if isinstance(condition, Filter):
            if condition.field.name in table.encrypted:
                raise refused(table, condition.field.name, "filtered on")
        else:
            check_conditions(table, condition.children)


def read_decryption(root: ReadNode, *, csv: bool) -> Decryption:
    """What the answer of a read planned as `root` decrypts; 400 for any use of an encrypted column that
    Postgres would have to compute (see the module's docstring)."""
    decrypt: list[tuple[str, str]] = []
    _check_node(root, decrypt, is_root=True)
    if decrypt and csv:
        table = root.table
        assert table is not None
        raise refused(table, decrypt[0][0], "read as CSV")
    return tuple(decrypt)


def _check_node(node: ReadNode, decrypt: list[tuple[str, str]], *, is_root: bool) -> None:
    table = node.table
    if table is not None and table.encrypted:
        check_conditions(table, node.conditions)
        for term in node.order:
            if term.relation is None and term.field.name in table.encrypted:
                raise refused(table, term.field.name, "ordered by")
        if node.star:
            if not is_root:
                raise refused(table, next(iter(table.encrypted)), "read through an embed")
            decrypt.extend((name, kind) for name, kind in table.encrypted.items())
        for column in node.columns:
            kind = table.encrypted.get(column.field.name)
            if kind is None:
                continue
            if column.cast or column.aggregate or column.field.json_path:
                raise refused(table, column.field.name, "cast, aggregated or read by a JSON path")
            if not is_root:
                raise refused(table, column.field.name, "read through an embed")
            decrypt.append((column.name, kind))
    for embed in node.embeds:
        target = embed.relationship.target
        for term in node.order:
            if term.relation in (embed.name, embed.output_name) and term.field.name in target.encrypted:
                raise refused(target, term.field.name, "ordered by")
        _check_node(embed.node, decrypt, is_root=False)


def encrypt_body(rows_json: str, table: Table, cipher: ColumnCipher) -> str:
    """A write's body (an array of rows, or one row) with the values of the encrypted columns encrypted; a
    value the column's declared type would refuse is Postgres's 400 22P02, and nothing is written."""
    parsed = orjson.loads(rows_json)
    encrypted = table.encrypted
    for row in parsed if parsed.__class__ is list else (parsed,):
        for name, kind in encrypted.items():
            value = row.get(name)
            if value is not None:
                try:
                    row[name] = cipher.encrypt(text_of(value, kind))
                except ValueError as exc:
                    raise RecordsError(400, "22P02", str(exc)) from None
    return orjson.dumps(parsed).decode()


def decrypt_body(body: str, decrypt: Decryption, cipher: ColumnCipher) -> str:
    """An answer's rows (a JSON array built by Postgres) with the encrypted values read back. A value that
    cannot be decrypted (written in the format by hand, or under another project's key) is answered as it is
    stored, as InsForge answers it, rather than failing the whole read; the log names the column (never the
    value)."""
    rows: Any = orjson.loads(body)
    for row in rows if rows.__class__ is list else (rows,):
        if row.__class__ is not dict:
            continue
        for name, kind in decrypt:
            stored = row.get(name)
            if stored.__class__ is str:
                try:
                    row[name] = plain_value(cipher.decrypt(stored), kind)
                except (ColumnDecryptionError, ValueError):
                    log.warning("an encrypted value of column %r could not be decrypted", name)
    return orjson.dumps(rows).decode()
