"""The gateway's event history on a real embedded bus: per model, per type, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftline.events import DriftChecked, DriftDetected
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.http import history
from driftline.runtime.http.history import History
from tests.conftest import wait_for
from tests.runtime.http.helpers import publish

START = datetime(2024, 3, 1, tzinfo=UTC)


def _checked(model: str, day: int) -> DriftChecked:
    start = START + timedelta(days=day)
    return DriftChecked(
        model=model,
        version=1,
        window=start.isoformat(),
        window_start=start,
        window_end=start + timedelta(days=1),
        rows=10,
    )


def test_it_keeps_the_newest_events_of_each_model_and_type_and_reads_again_on_restart(
    embedded_bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "KEEP", 3)
    a = [_checked("a", day) for day in range(5)]
    detected = DriftDetected(
        model="a", version=1, cause="data", window="w", window_end=START, idempotency_key="k"
    )
    embedded_bus.create_topics([DriftChecked.TYPE, DriftDetected.TYPE])
    publish(embedded_bus, [*a, _checked("b", 9), detected])
    kept = History(embedded_bus)
    kept.start()
    try:
        wait_for(lambda: len(kept.of(DriftDetected, "a")) == 1 and "b" in kept.latest)
        wait_for(lambda: kept.of(DriftChecked, "a") == a[2:], timeout_s=5)
        assert kept.latest["a"] == a[4] and kept.of(DriftChecked, "b") == [_checked("b", 9)]
        assert kept.of(DriftChecked, "nobody") == []
    finally:
        kept.stop()
    kept.start()  # from the start again, nothing twice
    try:
        wait_for(lambda: len(kept.of(DriftDetected, "a")) == 1)
        wait_for(lambda: kept.of(DriftChecked, "a") == a[2:], timeout_s=5)
        assert len(kept.of(DriftDetected, "a")) == 1
    finally:
        kept.stop()


def test_scored_requests_are_summed_not_kept() -> None:
    from driftline.events import ScoreCompleted

    kept = History(None)  # type: ignore[arg-type]  # never started: keep() only
    for seconds in (0.25, 0.5, 0.0):  # the last one not measured (a /v2 request)
        kept.keep(
            ScoreCompleted(
                model="a", request_id="r", version=1, predictions=[1.0, 2.0], seconds=seconds
            )
        )
    s = kept.scoring["a"]
    assert (s.requests, s.predictions, s.seconds) == (2, 4, 0.75)
    assert kept.of(ScoreCompleted, "a") == []
