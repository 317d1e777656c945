"""Performance drift as a statistical question, and an online change detector on the loss.

A version's *baseline* is its validation loss: the mean per-row loss on its holdout (see
:class:`~driftline.functions.ml.spec.Metric`), with its spread and row count, saved in
the version's metrics at training time. :func:`perf_test` asks whether labeled rows do
worse than that by at least the policy's minimum effect, beyond chance (a one-sided Welch
z-test with the uncertainty of both means). :func:`change_point` estimates where a
worsening began (the CUSUM estimate: the point after which the loss, less the baseline
and half the minimum effect, sums highest). :class:`OnlineDetector` runs river's ADWIN
on the per-row loss as labels arrive and keeps the recent losses with their times, so it
can be rebuilt from saved state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from river.drift import ADWIN

from driftline.functions.ml.spec import METRICS, DriftPolicy

DEFAULT_MIN_EFFECT = {"classification": 0.05, "regression": 0.15}
"""Absolute error rate for classification, relative to the baseline loss for regression."""
_HISTORY = 20_000
_ONLINE_CAP = 4.0
_Z_CAP = 1e6
"""Regression losses are divided by the baseline loss and capped here before ADWIN sees
them (ADWIN's bound assumes a bounded stream)."""


@dataclass(frozen=True)
class Baseline:
    """A version's validation loss: mean, standard deviation and rows."""

    loss: float
    sd: float
    n: int

    @classmethod
    def from_metrics(cls, metric: str, metrics: Mapping[str, float]) -> Baseline | None:
        """The baseline saved with a version; None when its metrics do not have ``metric``.

        Versions trained before losses were saved have only the metric: the spread is then
        the Bernoulli one for a miss rate, or taken as equal to the mean for an error (about
        right for absolute errors), and the holdout counted as 200 rows.
        """
        value = metrics.get(metric)
        if value is None or not math.isfinite(value):
            return None
        n = int(metrics.get("holdout_rows", 200))
        if not METRICS[metric].lower_is_better:  # a miss rate: 1 - accuracy (for f1 too)
            loss = metrics.get(f"{metric}_loss", 1.0 - metrics.get("accuracy", value))
            return cls(loss, math.sqrt(max(loss * (1 - loss), 1e-12)), n)
        loss = value**2 if metric == "rmse" else value
        return cls(loss, float(metrics.get(f"{metric}_loss_sd", loss)), n)


def loss_figures(metric: str, losses: np.ndarray) -> dict[str, float]:
    """What training saves beside the metrics so that :meth:`Baseline.from_metrics` works."""
    figures = {"holdout_rows": float(len(losses)), f"{metric}_loss": float(np.mean(losses))}
    if METRICS[metric].lower_is_better and len(losses) > 1:  # a miss rate's spread follows its mean
        figures[f"{metric}_loss_sd"] = float(np.std(losses, ddof=1))
    return figures


def min_effect(policy: DriftPolicy, task: str, baseline: Baseline) -> float:
    """The policy's minimum effect in loss units."""
    value = policy.min_effect if policy.min_effect is not None else DEFAULT_MIN_EFFECT[task]
    return value if task == "classification" else value * baseline.loss


@dataclass(frozen=True)
class PerfTest:
    """The figures of one performance test."""

    n: int
    loss: float
    baseline_loss: float
    effect: float
    """Mean loss minus the baseline loss (positive: worse)."""
    min_effect: float
    z: float
    p_value: float
    drifted: bool
    """Worse by at least the minimum effect, and significant."""
    severe: bool
    """Drifted, and worse by at least ``severe_factor`` times the minimum effect."""

    def as_dict(self) -> dict[str, float | int | bool]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def perf_test(losses: np.ndarray, base: Baseline, policy: DriftPolicy, task: str) -> PerfTest:
    """Is the mean of ``losses`` worse than the baseline by at least the minimum effect?"""
    n = len(losses)
    mean = float(np.mean(losses)) if n else math.nan
    sd = float(np.std(losses, ddof=1)) if n > 1 else math.nan
    effect = mean - base.loss
    se = math.sqrt(sd**2 / max(n, 1) + base.sd**2 / max(base.n, 1)) if n > 1 else math.nan
    z = effect / se if se and math.isfinite(se) and se > 0 else (_Z_CAP if effect > 0 else 0.0)
    z = max(-_Z_CAP, min(_Z_CAP, z))  # finite: it goes into JSON state and Avro events
    p = 1.0 - NormalDist().cdf(z)
    floor = min_effect(policy, task, base)
    drifted = n >= policy.min_labeled_rows and effect >= floor and p <= policy.significance
    return PerfTest(
        n,
        mean,
        base.loss,
        effect,
        floor,
        z,
        p,
        drifted,
        drifted and effect >= policy.severe_factor * floor,
    )


def change_point(losses: np.ndarray, baseline_loss: float, slack: float) -> int:
    """Index of the first row of the estimated worsening (CUSUM argmin); ``len(losses)``
    when there is none."""
    if len(losses) == 0:
        return 0
    s = np.concatenate([[0.0], np.cumsum(losses - baseline_loss - slack)])
    return int(np.argmin(s))  # len(losses): the sum fell to the end, no worsening at all


class OnlineDetector:
    """ADWIN on the per-row loss of one version, with the recent ``(time, loss)`` kept."""

    def __init__(self, delta: float, scale: float | None) -> None:
        self.delta = delta
        self.scale = scale
        """Regression: the baseline loss (losses are divided by it); None: a miss rate."""
        self.adwin = ADWIN(delta=delta)
        self.history: deque[tuple[float, float]] = deque(maxlen=_HISTORY)
        self.alarms = 0
        self.updates = 0

    def update(self, t: float, loss: float) -> bool:
        """Add one row's loss; True when ADWIN sees a change in its mean (either way)."""
        self.history.append((t, loss))
        self.updates += 1
        x = loss if self.scale is None else min(loss / self.scale, _ONLINE_CAP) / _ONLINE_CAP
        self.adwin.update(x)
        if self.adwin.drift_detected:
            self.alarms += 1
            return True
        return False

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept rows' times (epoch s) and losses."""
        arr = np.array(self.history, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def since(self, t: float) -> np.ndarray:
        """Losses of the rows at or after ``t``."""
        times, losses = self.arrays()
        return losses[times >= t]

    def state(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "scale": self.scale,
            "alarms": self.alarms,
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlineDetector:
        """Rebuilt by replaying the kept losses (ADWIN is deterministic)."""
        d = cls(state["delta"], state["scale"])
        for t, loss in state["history"]:
            d.update(t, loss)
        d.alarms = state["alarms"]
        return d

    def describe(self) -> str:
        return f"adwin width {int(self.adwin.width)}, mean {self.adwin.estimation:.4g}, alarms {self.alarms}"


def paired_worse(
    new: np.ndarray, old: np.ndarray, policy: DriftPolicy, task: str, base: Baseline | None
) -> tuple[bool, str]:
    """Whether per-row losses ``new`` are worse than ``old`` on the same rows by at least the
    minimum effect (scaled on ``base``, the old version's baseline), beyond chance (a paired
    one-sided z-test at the policy's significance)."""
    d = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    n = len(d)
    if n < max(policy.min_labeled_rows, 2):
        return False, f"{n} rows: too few to compare"
    scale = base if base is not None else Baseline(float(np.mean(old)), 0.0, n)
    floor = min_effect(policy, task, scale)
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    z = mean / (sd / math.sqrt(n)) if sd > 0 else (math.inf if mean > 0 else 0.0)
    p = 1.0 - NormalDist().cdf(z) if math.isfinite(z) else (0.0 if z > 0 else 1.0)
    worse = mean >= floor and p <= policy.significance
    return worse, (
        f"loss {float(np.mean(new)):.4g} vs {float(np.mean(old)):.4g} on {n} rows, "
        f"effect {mean:+.4g} (min {floor:.4g}), z {z:.2f}, p {p:.3g}: "
        f"{'worse, roll back' if worse else 'keep'}"
    )
