"""The drift monitor's windows, verdicts and guards.

Most tests use a stand-in drift function (feature "a" drifts when its window mean moves
past 0.5) so they run in milliseconds; the last ones use Evidently for real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftline.functions.ml.monitor import (
    Detection,
    DriftMonitor,
    WindowResult,
    detection_run_id,
)
from driftline.functions.ml.spec import ModelSpec

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a window boundary (epoch-aligned days)
SPEC = """
name = "m"
task = "regression"
target = "y"
features = ["a", "b"]
[time]
column = "t"
[estimator]
class = "sklearn.linear_model.Ridge"
[drift]
window_days = 1
min_window_rows = 20
min_labeled_rows = 10
consecutive = 2
cooldown_days = 1
label_wait_days = 0.5
min_effect = 0.25
[training]
min_rows = 20
"""


@dataclass
class FakeDrift:
    share: float
    drifted: bool


def fake_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], share: float, **_: Any
) -> FakeDrift:
    moved = abs(current["a"].mean() - reference["a"].mean()) > 0.5
    return FakeDrift(1.0 if moved else 0.0, moved)


def spec(text: str = SPEC, **drift: object) -> ModelSpec:
    """The test spec; data drift counts in labeled windows unless a test says otherwise."""
    base = ModelSpec.from_toml(text)
    policy = {"data_drift_when_labeled": True, **drift}
    return base.model_copy(update={"drift": base.drift.model_copy(update=policy)})


REFERENCE = pd.DataFrame({"a": np.zeros(50), "b": np.zeros(50)})


def monitor(s: ModelSpec | None = None, **kw: Any) -> DriftMonitor:
    m = DriftMonitor(s or spec(), drift_fn=kw.pop("drift_fn", fake_drift), **kw)
    m.deployed(1, at=T0 - timedelta(days=2), validation_metric=1.0, reference=REFERENCE)
    return m


@dataclass
class Stream:
    """Feeds one request per hour; labels follow ``delay`` hours later."""

    m: DriftMonitor
    rows_per_hour: int = 2
    delay: int = 2
    hour: int = 0
    seq: int = 0
    detections: list[Detection] = field(default_factory=list)
    """Detections made between window closes (online, or released after waiting)."""

    def run(
        self,
        hours: int,
        a: float = 0.0,
        error: float = 1.0,
        version: int | None = None,
        label: bool = True,
    ) -> list[WindowResult]:
        out: list[WindowResult] = []
        for _ in range(hours):
            t = T0 + timedelta(hours=self.hour)
            rid = f"r{self.seq}"
            rows = [[a, 0.0]] * self.rows_per_hour
            out += self.m.observe(
                rid, version or self.m.version or 1, t, rows, [10.0] * self.rows_per_hour
            )
            if label:
                out += self.m.label(rid, [10.0 + error] * self.rows_per_hour)  # |error| is the MAE
            self.detections += self.m.take_detections()
            self.hour += 1
            self.seq += 1
        return out

    def days(self, n: int, **kw: Any) -> list[WindowResult]:
        return self.run(24 * n, **kw)


def test_clean_windows_close_on_time_with_their_metric() -> None:
    results = Stream(monitor()).days(3)
    assert [r.window for r in results] == ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"]
    first = results[0]
    assert (first.rows, first.labeled_rows, first.drift_share, first.metric_value) == (
        48,
        48,
        0.0,
        1.0,
    )
    assert (first.drifted, first.cause, first.detect) == (False, None, False)
    assert first.reason.startswith("no drift: loss 1 vs 1 on 48 rows")
    assert first.test is not None and (first.test.effect, first.test.drifted) == (0.0, False)
    assert first.end - first.start == timedelta(days=1) and first.current is not None


def test_too_few_rows_gives_no_verdict_and_keeps_the_streak() -> None:
    m = monitor()
    s = Stream(m, rows_per_hour=1)
    results = s.days(1, a=1.0) + s.run(1, a=1.0)  # day 2 gets a single row
    s.hour = 48
    results += s.days(1, a=1.0) + s.run(1)
    assert [(r.rows, r.drifted, r.detect) for r in results] == [
        (24, True, False),
        (1, False, False),
        (24, True, True),
    ]
    assert results[1].reason == "too few rows (1 < 20): no verdict"
    assert m.streak == 0  # reset by the detection


def test_consecutive_windows_needed() -> None:
    m = monitor(spec(consecutive=3))
    results = Stream(m).days(4, a=1.0)
    assert [r.detect for r in results] == [False, False, True]
    assert [r.reason.split("), ")[-1] for r in results[:2]] == [
        "1 of 3 consecutive windows",
        "2 of 3 consecutive windows",
    ]
    assert all(r.reason.startswith("data drift (drift share 1.00") for r in results[:2])
    assert results[2].drift_start == T0  # where the streak began


def test_clean_window_resets_the_streak() -> None:
    s = Stream(monitor())
    results = s.days(1, a=1.0) + s.days(1) + s.days(1, a=1.0) + s.days(1, a=1.0)
    assert [(r.drifted, r.detect) for r in results] == [
        (True, False),
        (False, False),
        (True, False),
    ]


def test_cooldown_after_a_deploy() -> None:
    m = monitor(spec(cooldown_days=3, consecutive=1))
    m.deployed(2, at=T0, validation_metric=1.0, reference=REFERENCE)
    results = Stream(m).days(5, a=1.0)
    assert [r.detect for r in results] == [False, False, False, True]
    assert results[0].reason == "data drift, in cooldown after the deploy of v2"


def test_one_retrain_in_flight_until_deploy_or_rejection() -> None:
    m = monitor(spec(consecutive=1))
    s = Stream(m)
    first = s.days(2, a=1.0)
    assert [r.detect for r in first] == [True]
    blocked = s.days(1, a=1.0)
    assert (
        not blocked[0].detect and "retrain already in flight (m:v1:2024-01-01" in blocked[0].reason
    )
    assert m.inflight is not None
    m.rejected(run_id=detection_run_id("not-this-detection"))  # another run's candidate lost
    assert "retrain already in flight" in s.days(1, a=1.0)[0].reason
    m.rejected(run_id=detection_run_id(m.inflight["key"]))  # the detection's own run lost
    assert [r.detect for r in s.days(1, a=1.0)] == [True]
    m.deployed(2, at=T0 + timedelta(days=5), validation_metric=1.0, reference=REFERENCE)
    assert m.inflight is None and m.streak == 0


def test_retrain_timeout_frees_the_model() -> None:
    m = monitor(spec(consecutive=1, retrain_timeout_days=1.5))
    results = Stream(m).days(5, a=1.0)
    assert [r.detect for r in results] == [True, False, True, False]


def test_idempotency_key_is_per_version_and_window() -> None:
    m = monitor(spec(consecutive=1))
    s = Stream(m)
    s.run(20, a=1.0)
    saved = json.loads(json.dumps(m.to_state()))
    (first,) = s.run(10, a=1.0)
    # A handler that crashed before saving replays the same input from the saved state:
    again = DriftMonitor.from_state(m.spec, saved, drift_fn=fake_drift)
    again.deployed(1, at=0, validation_metric=1.0, reference=REFERENCE)  # same version: no-op
    (second,) = Stream(again, hour=20, seq=20).run(10, a=1.0)
    assert first.detect and second.detect
    assert first.idempotency_key == second.idempotency_key == "m:v1:2024-01-01T00:00:00+00:00"


def test_state_round_trips_through_json() -> None:
    m = monitor()
    s = Stream(m)
    s.run(30, a=1.0)
    s.run(3, label=False)
    state = json.loads(json.dumps(m.to_state(), allow_nan=False))
    copy = DriftMonitor.from_state(
        m.spec, state, drift_fn=fake_drift, reference_loader=lambda v: REFERENCE
    )
    assert copy.to_state() == m.to_state()
    a = s.days(2, a=1.0)
    b = Stream(copy, hour=s.hour - 48, seq=s.seq - 48).days(2, a=1.0)
    assert [(r.window, r.rows, r.cause, r.detect) for r in a] == [
        (r.window, r.rows, r.cause, r.detect) for r in b
    ]


def test_windows_wait_for_delayed_labels_then_close_without_them() -> None:
    m = monitor()
    s = Stream(m)
    assert s.run(24, label=False) == [] and s.run(12, label=False) == []
    (late,) = s.run(1, label=False)  # label_wait_days = 0.5 past the end
    assert (late.labeled_rows, late.metric_value) == (0, None)
    # All labels in: the window closes as soon as event time passes its end.
    m2 = monitor()
    s2 = Stream(m2)
    s2.run(24)
    (prompt,) = s2.run(1)
    assert prompt.labeled_rows == 48


def test_labels_before_rows_and_late_rows() -> None:
    m = monitor()
    m.label("early", [11.0, 11.0])
    s = Stream(m)
    m.observe("early", 1, T0, [[0.0, 0.0]] * 2, [10.0, 10.0])
    (window,) = s.days(2)[:1]
    assert window.labeled_rows == 50
    assert m.observe("late", 1, T0, [[0.0, 0.0]], [1.0]) == [] and m.late_rows == 1
    open_rows = sum(len(rows) for rows in m.windows.values())
    assert m.observe("r30", 1, T0 + timedelta(hours=30), [[0.0, 0.0]], [1.0]) == []  # redelivered
    assert sum(len(rows) for rows in m.windows.values()) == open_rows


def test_only_the_production_version_is_judged() -> None:
    m = monitor()
    s = Stream(m)
    s.run(20, version=1)
    m.deployed(2, at=T0 + timedelta(hours=20), validation_metric=1.0, reference=REFERENCE)
    (window,) = s.run(4, version=2) + s.run(3, version=2)
    assert window.version == 2 and window.rows == 8 and "too few rows" in window.reason


def test_a_severe_change_is_detected_online_within_its_window() -> None:
    m = monitor(spec(consecutive=2, cooldown_days=0))
    s = Stream(m, rows_per_hour=8)
    results = s.days(1, error=1.1) + s.days(3, error=2.0)  # same features; the target moved
    (det,) = s.detections
    assert (det.cause, det.by, det.version) == ("performance", "online", 1)
    assert det.change_point == T0 + timedelta(days=1)  # the first row of the new concept
    assert T0 + timedelta(days=1) < det.at < T0 + timedelta(days=2)  # before its window closed
    assert det.idempotency_key == "m:v1:online:2024-01-02T00:00:00+00:00"
    assert det.test is not None and det.test.severe and det.test.effect == pytest.approx(1.0)
    assert [(r.cause, r.detect) for r in results] == [
        (None, False),
        ("performance", False),  # the retrain is in flight already
        ("performance", False),
    ]
    assert "retrain already in flight (m:v1:online:" in results[1].reason
    assert all(r.drift_share == 0.0 for r in results)
    assert results[2].metric_value == 2.0 and results[2].baseline_metric == 1.0
    assert results[1].test is not None and results[1].test.severe


def test_a_mild_change_needs_consecutive_windows() -> None:
    m = monitor(spec(consecutive=2))
    s = Stream(m)
    results = s.days(1) + s.days(3, error=1.3)  # 30% worse: past the minimum, not severe
    assert s.detections == []
    assert [(r.cause, r.detect) for r in results] == [
        (None, False),
        ("performance", False),
        ("performance", True),
    ]
    det = results[2].detection
    assert det is not None and (det.by, det.cause) == ("window", "performance")
    assert det.change_point == T0 + timedelta(days=1)
    assert det.idempotency_key == "m:v1:2024-01-03T00:00:00+00:00"


def test_noise_around_the_baseline_never_detects() -> None:
    """Absolute errors of a well-calibrated model (|N(0, 1)|: mean 0.80, sd 0.60) for 60
    days against the baseline those figures give: neither the windows nor the detector act."""
    m = DriftMonitor(spec(consecutive=1), drift_fn=fake_drift)
    m.deployed(
        1,
        at=T0,
        metrics={"mae": 0.798, "mae_loss_sd": 0.603, "holdout_rows": 500},
        reference=REFERENCE,
    )
    rng = np.random.default_rng(7)
    results, detections = [], []
    for h in range(60 * 24):
        rid = f"n{h}"
        results += m.observe(rid, 1, T0 + timedelta(hours=h), [[0.0, 0.0]] * 2, [0.0, 0.0])
        results += m.label(rid, rng.normal(size=2).tolist())
        detections += m.take_detections()
    assert len(results) == 59 and detections == []
    assert not any(r.drifted or r.detect for r in results)


def test_a_detection_waits_for_rows_after_the_change_point() -> None:
    training = ModelSpec.from_toml(SPEC).training.model_copy(update={"min_rows": 150})
    m = monitor(spec(consecutive=1, online=False).model_copy(update={"training": training}))
    s = Stream(m, rows_per_hour=4)
    s.days(1)
    s.days(1, error=2.0)
    (window,) = s.run(1, error=2.0)  # the window closes with 96 rows of the new concept
    assert not window.detect and "waiting for 54 more labeled rows" in window.reason
    assert s.detections == [] and m.pending is not None
    s.run(13, error=2.0)  # 150 rows after the change point
    (det,) = s.detections
    assert det.change_point == T0 + timedelta(days=1)
    assert det.at == T0 + timedelta(days=2, hours=13)
    assert m.pending is None and m.inflight == {
        "key": det.idempotency_key,
        "since": det.at.timestamp(),
    }


def test_a_detection_waits_at_most_a_window() -> None:
    training = ModelSpec.from_toml(SPEC).training.model_copy(update={"min_rows": 1000})
    m = monitor(spec(consecutive=1, online=False).model_copy(update={"training": training}))
    s = Stream(m)
    s.days(1)
    s.days(2, error=2.0)
    s.run(1, error=2.0)
    (det,) = s.detections  # released when the next window closed, with what there is
    assert det.at == T0 + timedelta(days=3)


def test_a_version_trained_from_a_change_point_is_refreshed_as_data_grows() -> None:
    m = monitor(spec(consecutive=1))
    s = Stream(m)
    s.days(1)
    s.days(1, error=2.0)
    (window,) = s.run(1, error=2.0)
    det = window.detection
    assert det is not None and det.change_point == T0 + timedelta(days=1)
    # v2 learned the first half day of the new concept
    m.deployed(
        2,
        at=T0 + timedelta(days=2),
        metrics={"mae": 1.0},
        reference=REFERENCE,
        trained=(T0 + timedelta(days=1), T0 + timedelta(days=1, hours=12)),
    )
    results = s.days(2)  # the new concept, served well
    keys = [r.detection.idempotency_key for r in results if r.detection]
    assert keys == ["m:v2:refresh:2.0"]  # the data doubled; the next window waits in flight
    assert results[0].detection is not None and results[0].detection.cause == "refresh"
    assert results[0].detection.change_point == T0 + timedelta(days=1)
    m.rejected()  # the refreshed candidate lost: the next refresh waits until the data doubled
    results = s.days(2)
    assert [r.detection.idempotency_key for r in results if r.detection] == ["m:v2:refresh:4.0"]


def test_a_version_serving_long_without_drift_meets_a_challenger_on_schedule() -> None:
    """Every ``challenge_days`` after the newest row the version learned from (then after
    its last challenge), a window without drift emits a scheduled refresh with no change
    point: the retrain learns the trailing window and the gate decides."""
    m = DriftMonitor(spec(challenge_days=3), drift_fn=fake_drift)
    trained = (T0 - timedelta(days=5), T0 - timedelta(days=1))
    m.deployed(1, at=T0, metrics={"mae": 1.0}, reference=REFERENCE, trained=trained)
    s = Stream(m)
    results = s.days(3)  # windows end at days 1 and 2: 2 and 3 days after its newest row
    assert [r.detect for r in results] == [False, True]
    det = results[1].detection
    assert det is not None and (det.cause, det.by, det.change_point) == (
        "refresh",
        "schedule",
        None,
    )
    assert det.idempotency_key == "m:v1:challenge:2024-01-03T00:00:00+00:00"
    assert "challenge: v1 learned from rows up to 3.0 days ago" in det.reason
    m.rejected()  # production stays: the next challenge comes 3 days after this one
    again = s.days(3)
    assert [r.window[:10] for r in again if r.detect] == ["2024-01-05"]
    m.rejected()
    # a newly deployed version is challenged 3 days after the newest row it learned from
    newest = T0 + timedelta(days=6, hours=12)
    m.deployed(2, at=newest, metrics={"mae": 1.0}, reference=REFERENCE, trained=(T0, newest))
    state = DriftMonitor.from_state(m.spec, json.loads(json.dumps(m.to_state())))
    assert state.challenged_at is None
    later = s.days(5)  # windows end at days 6 to 10: 3 days after day 6.5 is the last one
    assert [r.window[:10] for r in later if r.detect] == ["2024-01-10"]
    assert DriftMonitor.from_state(m.spec, json.loads(json.dumps(m.to_state()))).challenged_at


def test_no_challenge_when_switched_off_or_before_a_version_has_its_training_span() -> None:
    trained = (T0 - timedelta(days=5), T0 - timedelta(days=1))
    off = DriftMonitor(spec(challenge_days=1, challenge=False), drift_fn=fake_drift)
    off.deployed(1, at=T0, metrics={"mae": 1.0}, reference=REFERENCE, trained=trained)
    unknown = DriftMonitor(spec(challenge_days=1), drift_fn=fake_drift)
    unknown.deployed(1, at=T0, metrics={"mae": 1.0}, reference=REFERENCE)  # span unknown
    for m in (off, unknown):
        assert not any(r.detect for r in Stream(m).days(5))


def test_the_first_judged_window_of_a_promoted_version_is_on_probation() -> None:
    m = monitor()
    s = Stream(m)
    s.run(30)
    m.deployed(
        2, at=T0 + timedelta(hours=30), metrics={"mae": 1.0}, reference=REFERENCE, probation=True
    )
    results = s.days(3)
    assert results[0].version == 2 and results[0].probation
    assert sum(r.probation for r in results) == 1


def test_labels_overrule_data_drift_by_default() -> None:
    policy = {"consecutive": 1, "data_drift_when_labeled": False}
    labeled = Stream(monitor(spec(**policy))).days(2, a=1.0, error=1.0)
    assert [(r.drift_share, r.drifted) for r in labeled] == [(1.0, False)]
    assert labeled[0].reason.startswith("no drift: ")
    unlabeled = Stream(monitor(spec(**policy))).days(2, a=1.0, label=False)
    assert [(r.cause, r.detect) for r in unlabeled] == [("data", True)]  # no labels: data decides


# --- with Evidently ------------------------------------------------------------------------

FOUR = SPEC.replace('features = ["a", "b"]', 'features = ["a", "b", "c", "d"]')


def synthetic_stream(
    m: DriftMonitor, days: int, shift: float = 0.0, concept: bool = False, seed: int = 0
) -> list[WindowResult]:
    """Four rows an hour; the model learned y = 3a + b; a shift moves a, b and c."""
    rng = np.random.default_rng(seed)
    out: list[WindowResult] = []
    for h in range(days * 24):
        x = rng.normal(size=(4, 4))
        x[:, :3] += shift
        y = (-1 if concept else 1) * 3 * x[:, 0] + x[:, 1] + rng.normal(scale=0.5, size=4)
        rid = f"s{h}"
        out += m.observe(
            rid, 1, T0 + timedelta(hours=h), x.tolist(), (3 * x[:, 0] + x[:, 1]).tolist()
        )
        out += m.label(rid, y.tolist())
    return out


@pytest.fixture(scope="module")
def evidently_reference() -> pd.DataFrame:
    return pd.DataFrame(
        np.random.default_rng(99).normal(size=(600, 4)), columns=["a", "b", "c", "d"]
    )


def real_monitor(reference: pd.DataFrame) -> DriftMonitor:
    m = DriftMonitor(spec(FOUR))  # the default drift function: Evidently
    m.deployed(1, at=T0 - timedelta(days=2), validation_metric=0.4, reference=reference)
    return m


def test_stationary_stream_never_detects(evidently_reference: pd.DataFrame) -> None:
    results = synthetic_stream(real_monitor(evidently_reference), days=5)
    assert len(results) == 4 and not any(r.drifted for r in results)
    assert all(r.drift_share is not None and r.drift_share < 0.5 for r in results)
    assert all(0.3 < (r.metric_value or 0) < 0.5 for r in results)


def test_feature_shift_is_detected_within_two_windows(evidently_reference: pd.DataFrame) -> None:
    results = synthetic_stream(real_monitor(evidently_reference), days=3, shift=1.0)
    assert [(r.cause, r.detect) for r in results] == [("data", False), ("data", True)]
    assert all(r.drift_share == 0.75 for r in results)


def test_concept_shift_is_detected_from_labels(evidently_reference: pd.DataFrame) -> None:
    m = real_monitor(evidently_reference)
    results = synthetic_stream(m, days=3, concept=True)
    assert [r.cause for r in results] == ["performance", "performance"]
    assert all((r.drift_share or 0) < 0.5 for r in results)  # the features did not move
    found = m.take_detections() + [r.detection for r in results if r.detection]
    (det,) = found
    assert det.cause == "performance" and det.at <= T0 + timedelta(days=1)  # in the first window


def test_a_model_that_gets_better_raises_nothing() -> None:
    m = monitor(spec(consecutive=1))
    s = Stream(m, rows_per_hour=8)
    results = s.days(2) + s.days(3, error=0.2)  # the detector sees the change, downwards
    assert m.detector is not None and m.detector.alarms >= 1
    assert s.detections == [] and not any(r.detect or r.drifted for r in results)
    assert m.suspect is None


def test_a_redelivered_deploy_of_an_earlier_version_changes_nothing() -> None:
    m = monitor()
    m.deployed(2, at=T0, metrics={"mae": 1.0}, reference=REFERENCE)
    m.deployed(3, at=T0 + timedelta(hours=1), metrics={"mae": 1.0}, reference=REFERENCE)
    m.deployed(2, at=T0, metrics={"mae": 1.0}, reference=REFERENCE)  # the batch came again
    assert m.version == 3


def _epochs(*hours: float) -> list[float]:
    return [(T0 + timedelta(hours=h)).timestamp() for h in hours]


def test_a_batched_request_files_each_row_in_the_window_of_its_own_time() -> None:
    m = monitor()
    # one request at 22:00 whose rows run past midnight (windows are a day): two windows
    hours = (22.0, 23.5, 24.5, 25.0)
    assert m.observe("b", 1, T0 + timedelta(hours=22), [[0.0, 0.0]] * 4, [10.0] * 4,
                     row_times=_epochs(*hours)) == []  # fmt: skip
    assert {start: len(rows) for start, rows in m.windows.items()} == {
        T0.timestamp(): 2,
        T0.timestamp() + 86_400: 2,
    }
    assert m.watermark == _epochs(25.0)[0]
    (first,) = m.label("b", [11.0, 11.0, 12.0, 12.0])  # the first window is whole: it closes
    assert (first.window, first.rows, first.labeled_rows) == ("2024-01-01T00:00:00+00:00", 2, 2)
    (second,) = m.observe("next", 1, T0 + timedelta(hours=49), [[0.0, 0.0]], [10.0])
    assert (second.window, second.rows, second.labeled_rows) == ("2024-01-02T00:00:00+00:00", 2, 2)


def test_a_batched_request_closes_windows_as_requests_of_one_row_would() -> None:
    def results(rows_per_request: int) -> list[tuple[Any, ...]]:
        m = monitor()
        hours = [h / 4 for h in range(24 * 4 * 5)]  # a row every 15 minutes for five days
        out: list[WindowResult] = []
        for n in range(0, len(hours), rows_per_request):
            part = hours[n : n + rows_per_request]
            moved = [h >= 60 for h in part]  # the inputs move and the error grows at 2.5 days
            rid = f"r{n}"
            out += m.observe(rid, 1, T0 + timedelta(hours=part[0]),
                             [[2.0 * b, 0.0] for b in moved], [10.0] * len(part),
                             row_times=_epochs(*part))  # fmt: skip
            out += m.label(rid, [13.0 if b else 11.0 for b in moved])
        return [(r.window, r.rows, r.labeled_rows, r.metric_value, r.cause, r.detect)
                for r in out]  # fmt: skip

    single = results(1)
    assert [w[0][:10] for w in single] == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    assert results(6) == results(7) == single


def test_a_batched_request_across_windows_survives_a_restart() -> None:
    m = monitor()
    m.observe("b", 1, T0 + timedelta(hours=22), [[0.0, 0.0]] * 4, [10.0] * 4,
              row_times=_epochs(22.0, 23.0, 24.5, 25.0))  # fmt: skip
    state = json.loads(json.dumps(m.to_state(), allow_nan=False))
    copy = DriftMonitor.from_state(
        m.spec, state, drift_fn=fake_drift, reference_loader=lambda v: REFERENCE
    )
    assert [r.rows for r in copy.label("b", [11.0] * 4)] == [2]
    assert sum(r[5] is not None for rows in copy.windows.values() for r in rows) == 2
    assert copy.observe("b", 1, T0, [[0.0, 0.0]] * 4, [10.0] * 4) == [], "redelivered"


def test_a_full_window_keeps_a_uniform_sample_that_a_restore_and_a_replay_keep_too() -> None:
    """Past ``max_window_rows`` a window keeps a sample of its rows (reservoir sampling):
    it stays at the cap, labels of rows it let go label nothing, the window still closes
    once every kept row is labeled, and the same inputs keep the same rows, restored or
    replayed."""
    s = spec(max_window_rows=100)

    def feed(m: DriftMonitor, requests: range) -> None:
        for k in requests:  # 5 rows a request, 10 minutes apart: one day, one window
            t = T0 + timedelta(minutes=10 * (k % 144))
            m.observe(f"r{k}", 1, t, [[0.1 * k, 0.0]] * 5, [10.0] * 5)

    a = monitor(s)
    feed(a, range(100))
    window = a.windows[(T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()]
    assert len(window) == 100 and a.sampled_out == 400
    kept = {(r[0], r[1]) for r in window}
    firsts = sum(int(rid[1:]) < 50 for rid, _ in kept)
    assert 30 <= firsts <= 70, "a sample of the whole window, not its first or last rows"
    # restored halfway, or replayed from the start, the same rows are kept
    b = monitor(s)
    feed(b, range(60))
    c = DriftMonitor.from_state(s, json.loads(json.dumps(b.to_state())), drift_fn=fake_drift)
    feed(c, range(60, 100))
    replayed = monitor(s)
    feed(replayed, range(100))
    for other in (c, replayed):
        assert other.to_state() == a.to_state()
    # labels: those of rows let go label nothing; once every kept row is labeled, it closes
    let_go = next(f"r{k}" for k in range(100) if all((f"r{k}", i) not in kept for i in range(5)))
    assert a.label(let_go, [11.0] * 5) == []
    for rid in {rid for rid, _ in kept}:
        assert a.label(rid, [11.0] * 5) == []  # event time has not passed the window's end
    closed = a.observe("next", 1, T0 + timedelta(days=1, minutes=1), [[0.0, 0.0]], [10.0])
    assert len(closed) == 1 and closed[0].rows == 100 and closed[0].labeled_rows == 100
