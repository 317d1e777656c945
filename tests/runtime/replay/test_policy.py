"""The default drift policy, judged by what it does to the served metric: the fast cases of
the policy scorecard (``tests/bench/policy_scorecard.py``), run through the real loop on the
embedded bus. Small streams (six weeks, a row every half hour, a change at day 21), so they
assert behaviour, not the scorecard's targets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from driftline.runtime.replay.run import replay
from driftline.runtime.settings import Settings
from tests.bench.streams import SMALL, Stream, make

pytestmark = pytest.mark.slow


def _replay(
    tmp_path: Path, stream: Stream, batch_minutes: float = 0.0
) -> tuple[dict, pd.DataFrame]:  # type: ignore[type-arg]
    data, spec = stream.write(tmp_path)
    summary = replay(
        data,
        spec,
        Settings(home=tmp_path / "home"),
        out=tmp_path / "out",
        progress=False,
        batch_minutes=batch_minutes,
    )
    assert summary["dead_lettered"] == 0 and summary["rows_not_scored"] == 0
    return summary, pd.read_parquet(tmp_path / "out" / "predictions.parquet")


def _accuracy(rows: pd.DataFrame, column: str) -> float:
    return float((rows[column] == rows["y"]).mean())


def test_a_stationary_stream_gives_no_detection(tmp_path: Path) -> None:
    # two half-hourly rows per scoring request: each row still gets its own prediction back
    stream = make("agrawal-stationary", seed=3, shape=SMALL)
    summary, served = _replay(tmp_path, stream, batch_minutes=60)
    assert summary["drift_events"] == 0 and summary["promotions"] == 0
    # v1 serves past a training window: scheduled challengers retrain, and lose to it
    assert summary["challenges"] >= 1
    assert summary["retrains"] == summary["challenges"] == summary["rejections"]
    assert set(served["version"]) == {1}
    assert len(served) == summary["rows"] and (served["served"] == served["static"]).all()


def test_an_abrupt_concept_shift_is_detected_and_accuracy_recovers(tmp_path: Path) -> None:
    stream = make("agrawal-abrupt", seed=3, shape=SMALL)
    summary, served = _replay(tmp_path, stream)
    assert stream.onset is not None
    first = min(pd.Timestamp(d["window_end"]) for d in summary["detections"])
    assert stream.onset < first <= stream.onset + pd.Timedelta(days=7), "within a window"
    before = served[served["time"] < stream.onset]
    last_week = served[served["time"] >= served["time"].max() - pd.Timedelta(days=7)]
    level, hurt = _accuracy(before, "served"), _accuracy(last_week, "static")
    assert hurt < level - 0.1, "the change hurt the model that was not retrained"
    # a few days of the new concept at a row every half hour: most of the loss comes back
    assert _accuracy(last_week, "served") - hurt >= 2 / 3 * (level - hurt), "recovered"


def test_a_recurring_concept_brings_the_earlier_version_back(tmp_path: Path) -> None:
    # two weeks of the returned concept: time to see it, wait for rows, retrain and gate
    stream = make("friedman-recurring", seed=3, shape=replace(SMALL, days=49))
    summary, served = _replay(tmp_path, stream)
    assert stream.returns is not None
    # (a probation rollback between two versions of the other concept may come first)
    redeploys = [d for d in summary["deploys"] if d["reason"] == "redeploy"]
    assert [d["version"] for d in redeploys] == [1], "v1 learned the concept that came back"
    assert pd.Timestamp(redeploys[0]["effective_time"]) > stream.returns
    last_day = served[served["time"] >= served["time"].max() - pd.Timedelta(days=1)]
    assert set(last_day["version"]) == {1}  # and it stays
    between = served[
        (served["time"] >= stream.onset + pd.Timedelta(days=7)) & (served["time"] < stream.returns)
    ]
    mae = lambda c: float((between[c] - between["y"]).abs().mean())  # noqa: E731
    assert mae("served") < mae("static"), "the other concept was learned while it lasted"
