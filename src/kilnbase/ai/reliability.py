"""Retries with exponential backoff and jitter (honouring `Retry-After`), and circuit breakers."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float | None:
    """Seconds to wait before retry `attempt` (0-based); None when the provider asks for more than `cap`."""
    if retry_after is not None:
        return retry_after if retry_after <= cap else None
    return min(cap, base * (2.0**attempt)) * random.uniform(0.75, 1.0)  # noqa: S311 - jitter, not security


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown` one trial call may pass (half-open).

    Keyed by name: the gateway keeps one per provider (connection failures) and one per provider and model
    (a model that keeps failing), so one model being down does not close its provider's other models.
    """

    def __init__(self, threshold: int, cooldown: float) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._states: dict[str, _State] = {}

    def allow(self, name: str) -> bool:
        state = self._states.get(name)
        if state is None or state.opened_at is None:
            return True
        if time.monotonic() - state.opened_at >= self._cooldown:
            state.opened_at = time.monotonic()  # half-open: let this one through, hold the rest
            return True
        return False

    def success(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:
            state.failures, state.opened_at = 0, None

    def failure(self, name: str) -> None:
        if name not in self._states and len(self._states) >= 10_000:
            self._states = {k: v for k, v in self._states.items() if v.opened_at is not None}
        state = self._states.setdefault(name, _State())
        state.failures += 1
        if state.failures >= self._threshold:
            state.opened_at = time.monotonic()

    def reset(self) -> None:
        self._states.clear()

    def is_open(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.opened_at is not None
