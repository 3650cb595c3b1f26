"""Hypothesis strategies for what an attacker puts in a URL: SQL fragments, quotes, parentheses, unicode."""

from __future__ import annotations

from hypothesis import strategies as st

SQL_FRAGMENTS = [
    "'",
    '"',
    ";",
    "--",
    "/*",
    "*/",
    "(",
    ")",
    ",",
    ".",
    ":",
    "::",
    "->",
    "\\",
    "%",
    "%s",
    "$1",
    "drop table posts",
    "' or 1=1 --",
    ");delete from posts;--",
    "é",
    "🙂",
    "\u202e",
    " ",
]
#: Any mix of fragments and short random text; `plain_text` without NUL (refused before parsing).
hostile_text = st.lists(st.one_of(st.sampled_from(SQL_FRAGMENTS), st.text(max_size=5)), max_size=8).map(
    "".join
)
plain_text = hostile_text.filter(lambda s: "\x00" not in s)


def postgrest_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
