"""Decoding `pgoutput` messages into row changes, from bytes built here as Postgres writes them."""

from __future__ import annotations

import struct

from kilnbase.realtime.pgoutput import Decoder


def text(value: str | None) -> bytes:
    if value is None:
        return b"n"
    raw = value.encode()
    return b"t" + struct.pack(">i", len(raw)) + raw


def tuple_data(*values: str | None) -> bytes:
    return struct.pack(">h", len(values)) + b"".join(text(v) for v in values)


RELATION = (
    b"R"
    + struct.pack(">i", 16384)
    + b"public\0notes\0"
    + b"d"
    + struct.pack(">h", 4)
    + b"\x01id\0"
    + struct.pack(">ii", 20, -1)
    + b"\x00body\0"
    + struct.pack(">ii", 25, -1)
    + b"\x00done\0"
    + struct.pack(">ii", 16, -1)
    + b"\x00tags\0"
    + struct.pack(">ii", 3802, -1)
)
BEGIN = b"B" + struct.pack(">qqi", 0, 0, 1)
#: Committed at 2000-01-01 00:00:01 UTC (microseconds since Postgres's epoch).
COMMIT = b"C" + b"\0" + struct.pack(">qqq", 0, 0, 1_000_000)


def test_inserts_updates_and_deletes_of_one_transaction() -> None:
    decoder = Decoder()
    assert decoder.feed(BEGIN) is None
    assert decoder.feed(RELATION) is None
    decoder.feed(b"I" + struct.pack(">i", 16384) + b"N" + tuple_data("7", "hi", "t", '{"a": [1]}'))
    decoder.feed(b"U" + struct.pack(">i", 16384) + b"N" + tuple_data("7", None, "f", None))
    decoder.feed(b"D" + struct.pack(">i", 16384) + b"K" + tuple_data("7", None, None, None))
    changes = decoder.feed(COMMIT)
    assert changes is not None
    insert, update, delete = changes
    assert insert.as_payload()["record"] == {"id": 7, "body": "hi", "done": True, "tags": {"a": [1]}}
    assert insert.key == ("7",)
    assert insert.commit_timestamp == "2000-01-01T00:00:01Z"
    assert update.type == "UPDATE"
    assert update.record == {"id": 7, "body": None, "done": False, "tags": None}
    assert delete.type == "DELETE"
    assert delete.old_record == {"id": 7}
    assert delete.key is None
    payload = delete.as_payload()
    assert (payload["schema"], payload["table"], payload["record"], payload["errors"]) == (
        "public",
        "notes",
        {},
        None,
    )


def test_an_unchanged_toasted_value_is_left_out() -> None:
    decoder = Decoder()
    decoder.feed(BEGIN)
    decoder.feed(RELATION)
    unchanged = struct.pack(">h", 4) + text("1") + text("x") + text("t") + b"u"
    decoder.feed(b"U" + struct.pack(">i", 16384) + b"N" + unchanged)
    [update] = decoder.feed(COMMIT) or []
    assert "tags" not in update.record
    assert update.unchanged == ["tags"]
