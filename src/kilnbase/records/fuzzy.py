"""PostgREST's "Perhaps you meant ..." hints: the closest name in a set, found as its fuzzy set finds it.

The fuzzy set (Haskell's `fuzzyset`, after the Python `fuzzyset`) first compares trigram vectors, then
bigram vectors if no trigram matched well enough: entries sharing grams with the query are ranked by cosine
similarity, the best 50 scored again by their normalised Levenshtein similarity (`1 - distance / longer
length`, on the lower-cased texts), and the best one at or above the minimum score is the answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

#: PostgREST's minimum for table and function names (parameter lists take the fuzzy set's own 0.33).
NAME_SCORE = 0.75
PARAMS_SCORE = 0.33
_CANDIDATES = 50


def closest(query: str, entries: Iterable[str], min_score: float) -> str | None:
    """The entry most like `query` with a score of at least `min_score`, or None."""
    by_key: dict[str, str] = {}
    for entry in entries:
        by_key[entry.lower()] = entry
    key = query.lower()
    if key in by_key:
        return by_key[key]
    for size in (3, 2):
        wanted = _grams(key, size)
        wanted_norm = _norm(wanted)
        ranked: list[tuple[float, str]] = []
        for entry_key in by_key:
            grams = _grams(entry_key, size)
            dot = sum(count * grams[gram] for gram, count in wanted.items() if gram in grams)
            if dot:
                ranked.append((dot / (wanted_norm * _norm(grams)), entry_key))
        ranked.sort(key=lambda item: -item[0])
        rescored = sorted(
            ((_similarity(key, entry_key), entry_key) for _, entry_key in ranked[:_CANDIDATES]),
            key=lambda item: -item[0],
        )
        kept = [entry_key for score, entry_key in rescored if score >= min_score]
        if kept:
            return by_key[kept[0]]
    return None


def _normalized(text: str) -> str:
    return "".join(char for char in text if char.isalnum() or char.isspace() or char == ",")


def _grams(key: str, size: int) -> Counter[str]:
    padded = f"-{_normalized(key)}-"
    return Counter(padded[index : index + size] for index in range(len(padded) - size + 1))


def _norm(vector: Counter[str]) -> float:
    return math.sqrt(sum(count * count for count in vector.values()))


def _similarity(first: str, second: str) -> float:
    longest = max(len(first), len(second))
    return 1.0 if longest == 0 else 1 - _levenshtein(first, second) / longest


def _levenshtein(first: str, second: str) -> int:
    if len(first) < len(second):
        first, second = second, first
    previous = list(range(len(second) + 1))
    for row, char in enumerate(first, 1):
        current = [row]
        for column, other in enumerate(second, 1):
            current.append(min(current[-1] + 1, previous[column] + 1, previous[column - 1] + (char != other)))
        previous = current
    return previous[-1]
