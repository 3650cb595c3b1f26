"""Keys out of everything the gateway says: error messages to callers, the ledger's `error` column, log lines.

Providers echo keys in some error messages (OpenAI's and Groq's 401 name the key they refused), and the key
a provider echoes need not look like any prefix we know. So a `Redactor` removes the actual keys in use (the
environment's OpenRouter key, BYOK credentials, registered providers' keys, managed keys: fed to it as they
are loaded or resolved), and then anything still shaped like a well-known key. Only error paths call it.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

#: Keys shaped like the well-known ones (OpenAI and OpenRouter `sk-`, Groq `gsk_`, xAI `xai-`, Perplexity
#: `pplx-`, Google `AIza`, Kilnbase's own `ik_`, `kbk_`, `anon_`) and bearer tokens: the second defence.
_KEY_SHAPED = re.compile(
    r"\b(?:sk|ik|kbk|anon|gsk|xai|pplx)[-_][A-Za-z0-9_\-*.]{6,}|\bAIza[A-Za-z0-9_\-]{20,}|(?i:bearer)\s+\S{6,}"
)
#: Shorter strings are not redacted as keys: they would cut ordinary words out of messages.
_SHORTEST_KEY = 8
#: Keys remembered at most (managed keys rotate); past it the set starts again from the fixed keys.
_MOST_KEYS = 1000


def scrub_key_shapes(text: str) -> str:
    return _KEY_SHAPED.sub(REDACTED, text)


class Redactor:
    """The keys this process has used or loaded, removed from any text given to it."""

    def __init__(self, *fixed: str | None) -> None:
        self._fixed = frozenset(k for k in fixed if k and len(k) >= _SHORTEST_KEY)
        self._keys: set[str] = set(self._fixed)
        self._longest_first: tuple[str, ...] = tuple(sorted(self._keys, key=len, reverse=True))

    def remember(self, *keys: str | None) -> None:
        """Add keys in use; cheap when they are known already (this runs on every request's path)."""
        new = [k for k in keys if k and k not in self._keys and len(k) >= _SHORTEST_KEY]
        if not new:
            return
        if len(self._keys) + len(new) > _MOST_KEYS:
            self._keys = set(self._fixed)
        self._keys.update(new)
        self._longest_first = tuple(sorted(self._keys, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for key in self._longest_first:
            if key in text:
                text = text.replace(key, REDACTED)
        return scrub_key_shapes(text)
