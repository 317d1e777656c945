"""Performance drift as a statistical question, and an online change detector on the loss.

A version's *baseline* is its validation loss: the mean per-row loss on its holdout (see
:class:`~driftline.functions.ml.spec.Metric`), with its spread and row count, saved in
the version's metrics at training time. :func:`perf_test` asks whether labeled rows do
worse than that by at least the policy's minimum effect, beyond chance (a one-sided Welch
z-test with the uncertainty of both means, nearby rows counted as going together, see
:func:`standard_error`). :func:`change_point` estimates where a worsening began (the
least-squares split into two stretches of constant mean). :class:`OnlineDetector` runs
river's ADWIN on the per-row loss as labels arrive and keeps the recent losses with their
times, so it can be rebuilt from saved state.
"""

from __future__ import annotations

import base64
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
_MIN_BLOCKS = 5
"""Regression losses are divided by the baseline loss and capped here before ADWIN sees
them (ADWIN's bound assumes a bounded stream)."""


@dataclass(frozen=True)
class Baseline:
    """A version's validation loss: mean, standard deviation and rows."""

    loss: float
    sd: float
    n: int
    se: float | None = None
    """Standard error of ``loss`` as measured on the holdout (see :func:`standard_error`);
    None for versions saved without it: ``sd / sqrt(n)``."""

    @property
    def mean_se(self) -> float:
        if self.se is not None:
            return self.se
        return self.sd / math.sqrt(max(self.n, 1))

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
        se = metrics.get(f"{metric}_loss_se")
        if not METRICS[metric].lower_is_better:  # a miss rate: 1 - accuracy (for f1 too)
            loss = metrics.get(f"{metric}_loss", 1.0 - metrics.get("accuracy", value))
            return cls(loss, math.sqrt(max(loss * (1 - loss), 1e-12)), n, se)
        loss = value**2 if metric == "rmse" else value
        return cls(loss, float(metrics.get(f"{metric}_loss_sd", loss)), n, se)


def loss_figures(metric: str, losses: np.ndarray) -> dict[str, float]:
    """What training saves beside the metrics so that :meth:`Baseline.from_metrics` works."""
    figures = {
        "holdout_rows": float(len(losses)),
        f"{metric}_loss": float(np.mean(losses)),
        f"{metric}_loss_se": standard_error(losses),
    }
    if METRICS[metric].lower_is_better and len(losses) > 1:  # a miss rate's spread follows its mean
        figures[f"{metric}_loss_sd"] = float(np.std(losses, ddof=1))
    return figures


def standard_error(losses: np.ndarray) -> float:
    """Standard error of the mean of time-ordered per-row losses: the larger of the
    independent-rows one (``sd / sqrt(n)``) and the batch-means one (the spread of the means
    of about ``sqrt(n)`` consecutive blocks of about ``sqrt(n)`` rows). Losses of nearby rows
    go together (the hours of one rainy day, one busy holiday), so they count as fewer
    independent rows; on independent rows the two estimates agree."""
    x = np.asarray(losses, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan
    iid = float(np.std(x, ddof=1)) / math.sqrt(n)
    size = int(math.sqrt(n))
    blocks = n // size
    if blocks < _MIN_BLOCKS:
        return iid
    means = x[n - blocks * size :].reshape(blocks, size).mean(axis=1)
    return max(iid, float(np.std(means, ddof=1)) / math.sqrt(blocks))


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
    effect = mean - base.loss
    se = math.sqrt(standard_error(losses) ** 2 + base.mean_se**2) if n > 1 else math.nan
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


def change_point(losses: np.ndarray, baseline_loss: float, min_effect: float) -> int:
    """Index of the first row of the estimated worsening; ``len(losses)`` when there is none.

    The least-squares split of the losses into two stretches of constant mean (the standard
    single change point estimate), upward only: the split that maximises
    ``i (n - i) / n * (mean after - mean before)**2``. It does not depend on the baseline,
    so a version that served a little worse than its validation loss before the change
    does not drag the estimate back. The baseline decides the two edge cases: when the
    stretch after the split is not worse than the baseline by half the minimum effect
    there is no worsening (``len(losses)``); when the stretch before it is already worse by
    the whole minimum effect, the worsening began at the first row (``0``).
    """
    x = np.asarray(losses, dtype=float)
    n = len(x)
    if n == 0:
        return 0
    at = 0
    if n > 1:
        sums = np.cumsum(x)[:-1]
        i = np.arange(1, n)
        before, after = sums / i, (sums[-1] + x[-1] - sums) / (n - i)
        gain = np.where(after > before, i * (n - i) / n * (after - before) ** 2, 0.0)
        if gain.max() > 0:
            at = int(np.argmax(gain)) + 1
    if float(np.mean(x[at:])) < baseline_loss + min_effect / 2:
        return n
    if at > 0 and float(np.mean(x[:at])) >= baseline_loss + min_effect:
        return 0
    return at


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
            # (time, loss) pairs as little-endian float64 bytes: written after every batch,
            # and one base64 pass costs a tenth of writing 40,000 floats as JSON numbers
            "history_f64": base64.b64encode(
                np.asarray(self.history, dtype="<f8").reshape(-1).tobytes()
            ).decode(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlineDetector:
        """Rebuilt by replaying the kept losses (ADWIN is deterministic)."""
        d = cls(state["delta"], state["scale"])
        if "history_f64" in state:
            flat = np.frombuffer(base64.b64decode(state["history_f64"]), dtype="<f8")
            pairs = flat.reshape(-1, 2).tolist()
        else:  # saved before the binary form
            pairs = state["history"]
        for t, loss in pairs:
            d.update(t, loss)
        d.alarms = state["alarms"]
        return d

    def describe(self) -> str:
        return f"adwin width {int(self.adwin.width)}, mean {self.adwin.estimation:.4g}, alarms {self.alarms}"


def paired_z(new: np.ndarray, old: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``new - old`` per row (the same rows), its z score and one-sided p-value (how
    likely so large a mean is when ``new`` is no worse), with time-ordered standard error."""
    d = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    mean, se = float(np.mean(d)), standard_error(d)
    z = mean / se if se > 0 else (math.inf if mean > 0 else 0.0)
    p = 1.0 - NormalDist().cdf(z) if math.isfinite(z) else (0.0 if z > 0 else 1.0)
    return mean, z, p


def paired_worse(
    new: np.ndarray, old: np.ndarray, policy: DriftPolicy, task: str, base: Baseline | None
) -> tuple[bool, str]:
    """Whether per-row losses ``new`` are worse than ``old`` on the same rows by at least the
    minimum effect (scaled on ``base``, the old version's baseline), beyond chance (a paired
    one-sided z-test at the policy's significance)."""
    n = len(new)
    if n < max(policy.min_labeled_rows, 2):
        return False, f"{n} rows: too few to compare"
    scale = base if base is not None else Baseline(float(np.mean(old)), 0.0, n)
    floor = min_effect(policy, task, scale)
    mean, z, p = paired_z(new, old)
    worse = mean >= floor and p <= policy.significance
    return worse, (
        f"loss {float(np.mean(new)):.4g} vs {float(np.mean(old)):.4g} on {n} rows, "
        f"effect {mean:+.4g} (min {floor:.4g}), z {z:.2f}, p {p:.3g}: "
        f"{'worse, roll back' if worse else 'keep'}"
    )
