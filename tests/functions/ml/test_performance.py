"""The performance test, the change-point estimate and the baselines they use."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from driftline.functions.ml.performance import (
    Baseline,
    OnlineDetector,
    change_point,
    paired_worse,
    perf_test,
    standard_error,
)
from driftline.functions.ml.spec import DriftPolicy

POLICY = DriftPolicy()


def test_a_classifier_baseline_is_its_miss_rate_whatever_the_gate_metric() -> None:
    acc = Baseline.from_metrics("accuracy", {"accuracy": 0.9, "holdout_rows": 400})
    assert acc is not None and abs(acc.loss - 0.1) < 1e-12 and acc.n == 400
    assert abs(acc.sd - math.sqrt(0.1 * 0.9)) < 1e-12
    f1 = Baseline.from_metrics("f1", {"f1": 0.6, "accuracy": 0.95})
    assert f1 is not None and abs(f1.loss - 0.05) < 1e-12  # the row loss is a miss, not 1 - f1
    saved = Baseline.from_metrics("f1", {"f1": 0.6, "accuracy": 0.95, "f1_loss": 0.07})
    assert saved is not None and saved.loss == 0.07


def test_a_regression_baseline_uses_the_saved_spread() -> None:
    b = Baseline.from_metrics("mae", {"mae": 2.0, "mae_loss_sd": 1.5, "holdout_rows": 300})
    assert b == Baseline(2.0, 1.5, 300)
    assert Baseline.from_metrics("rmse", {"rmse": 3.0}) == Baseline(9.0, 9.0, 200)
    assert Baseline.from_metrics("mae", {"rmse": 3.0}) is None


def test_perf_test_needs_both_the_minimum_effect_and_significance() -> None:
    base = Baseline(1.0, 0.5, 500)
    rng = np.random.default_rng(0)
    same = perf_test(rng.normal(1.0, 0.5, 1000), base, POLICY, "regression")
    assert not same.drifted and abs(same.effect) < 0.1
    small = perf_test(rng.normal(1.1, 0.5, 5000), base, POLICY, "regression")
    assert small.p_value < 0.01 and not small.drifted  # significant, but under 15%
    big = perf_test(rng.normal(1.4, 0.5, 300), base, POLICY, "regression")
    assert big.drifted and big.severe and big.min_effect == 0.15
    flat = perf_test(np.full(100, 2.0), Baseline(1.0, 0.0, 100), POLICY, "regression")
    assert flat.drifted and math.isfinite(flat.z)  # no spread anywhere: still finite, for JSON
    json.dumps(flat.as_dict(), allow_nan=False)


def test_the_change_point_is_where_the_worsening_starts() -> None:
    losses = np.concatenate([np.full(100, 1.0), np.full(50, 2.0)])
    assert change_point(losses, 1.0, 0.1) == 100
    improving = np.concatenate([np.full(100, 1.0), np.full(50, 0.2)])
    assert change_point(improving, 1.0, 0.1) == 150  # none: one past the last row
    assert change_point(np.array([]), 1.0, 0.1) == 0


def test_the_change_point_does_not_lean_on_the_baseline() -> None:
    """A version that served 8% worse than its validation loss (under the minimum effect)
    for 1,000 rows, then 4x worse: the change is at the jump, not somewhere in the noise
    before it; a version worse by the whole effect from its first row changed at row 0."""
    rng = np.random.default_rng(2)
    losses = np.concatenate([rng.exponential(1.08, 1000), rng.exponential(4.0, 60)])
    assert abs(change_point(losses, 1.0, 0.15) - 1000) <= 5
    always = np.concatenate([rng.exponential(1.5, 300), rng.exponential(3.0, 100)])
    assert change_point(always, 1.0, 0.15) == 0


def test_paired_worse_compares_the_same_rows() -> None:
    rng = np.random.default_rng(1)
    old = rng.exponential(1.0, 400)
    worse, why = paired_worse(old * 1.5, old, POLICY, "regression", Baseline(1.0, 1.0, 400))
    assert worse and "roll back" in why
    same, _ = paired_worse(old + rng.normal(0, 0.01, 400), old, POLICY, "regression", None)
    assert not same
    few, why = paired_worse(old[:10] * 2, old[:10], POLICY, "regression", None)
    assert not few and "too few" in why


def test_nearby_rows_count_as_going_together() -> None:
    """A week of hourly losses with one bad day (a storm): row by row it looks like a
    significant worsening; by blocks of consecutive rows it is one bad stretch, not drift.
    On independent rows the two standard errors agree."""
    rng = np.random.default_rng(5)
    iid = rng.exponential(1.0, 1000)
    assert standard_error(iid) == pytest.approx(np.std(iid, ddof=1) / math.sqrt(1000), rel=0.25)
    week = rng.exponential(1.0, 168)
    week[48:72] *= 4.0
    rowwise = np.std(week, ddof=1) / math.sqrt(168)
    assert standard_error(week) > 1.5 * rowwise
    base = Baseline(1.0, 1.0, 1000)
    naive = (np.mean(week) - 1.0) / math.sqrt(rowwise**2 + base.mean_se**2)
    assert naive > 2.33  # row by row: significant at 1%
    assert not perf_test(week, base, POLICY, "regression").drifted


def test_the_online_detector_state_round_trips_and_reads_the_older_form() -> None:
    d = OnlineDetector(0.002, 2.0)
    rng = np.random.default_rng(4)
    for i, loss in enumerate(rng.exponential(2.0, 500)):
        d.update(1.7e9 + 600.0 * i, float(loss))
    state = json.loads(json.dumps(d.state()))
    again = OnlineDetector.from_state(state)
    assert list(again.history) == list(d.history) and again.alarms == d.alarms
    assert again.adwin.estimation == d.adwin.estimation
    older = {k: v for k, v in state.items() if k != "history_f64"}
    older["history"] = [list(h) for h in d.history]
    assert list(OnlineDetector.from_state(older).history) == list(d.history)
    empty = OnlineDetector.from_state(json.loads(json.dumps(OnlineDetector(0.002, None).state())))
    assert len(empty.history) == 0
