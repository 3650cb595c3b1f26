"""`pg_listen.ConnectionLoss`: a lost listener waits longer after each failed try (1 s doubling to 5 s, with
jitter), starts over once it connects, and says so in the log once, once a minute, and once when back."""

from __future__ import annotations

import logging

import pytest

from kilnbase.pg_listen import RETRY_MOST_SECONDS, ConnectionLoss, retry_backoff

#: The upper bound of the pause after 0, 1, 2, ... failed tries; each pause is between half of it and all.
BOUNDS = [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_pause_doubles_from_a_second_to_five_with_jitter() -> None:
    backoff = retry_backoff()
    for failures, bound in enumerate(BOUNDS):
        pauses = [backoff.compute(failures) for _ in range(200)]
        assert all(bound / 2 <= pause <= bound for pause in pauses), (failures, min(pauses), max(pauses))
        assert len(set(pauses)) > 100  # jittered: listeners do not all knock at once
    assert backoff.compute(1000) <= RETRY_MOST_SECONDS  # (no overflow, however long the outage)


def test_a_loss_waits_longer_each_time_and_starts_over_once_connected() -> None:
    loss = ConnectionLoss("test listener", logging.getLogger("kilnbase.test"))
    error = OSError("connection refused")
    pauses = [loss.lost(error) for _ in BOUNDS]
    assert all(bound / 2 <= pause <= bound for pause, bound in zip(pauses, BOUNDS, strict=True)), pauses
    loss.connected()
    assert loss.lost(error) <= 1.0


def test_an_outage_of_hours_still_gets_a_pause() -> None:
    """Tries at most 5 s apart fail about a thousand times an hour; 2**1024 seconds is more than a float
    holds, and the listener whose `lost` raised there would stop for good."""
    loss = ConnectionLoss("test listener", logging.getLogger("kilnbase.test"), still_lost_every=3600)
    pauses = [loss.lost(OSError("connection refused")) for _ in range(5000)]
    assert all(0 < pause <= RETRY_MOST_SECONDS for pause in pauses)


def test_the_log_says_it_once_once_a_minute_and_once_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kilnbase.test")
    loss = ConnectionLoss("test listener", logging.getLogger("kilnbase.test"), still_lost_every=3600)
    for _ in range(5):
        loss.lost(OSError("connection refused\nsecond line"))
    loss.connected()
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("test listener lost its connection (OSError: connection refused); retrying in")
    assert said[1].startswith("test listener connected again after")

    caplog.clear()
    often = ConnectionLoss("test listener", logging.getLogger("kilnbase.test"), still_lost_every=0)
    often.lost(OSError("refused"))
    often.lost(OSError("refused"))
    assert "has had no connection for" in caplog.records[-1].getMessage()
    assert "still retrying, next in" in caplog.records[-1].getMessage()
