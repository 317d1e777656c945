"""The drift monitor: the pure, deterministic state machine behind the drift-check function.

One :class:`DriftMonitor` watches one model. It is fed scored rows (:meth:`observe`),
delayed labels (:meth:`label`), deploys (:meth:`deployed`) and rejections
(:meth:`rejected`); it does no I/O. Rows fall into fixed windows of event time
(``drift.window_days``, aligned to the Unix epoch). A window closes, in order, once
event time has passed its end and every row in it is labeled, or once event time is
``drift.label_wait_days`` past its end, whichever comes first; labels for a closed
window no longer count. Scored rows older than the newest closed window are dropped
(``late_rows``). A closed window gives a :class:`WindowResult`.

Only rows scored by the production version count: against that version's reference
sample (data drift, Evidently) and its validation metric (performance drift, on the
labeled rows, which catches a changed relation between features and target that feature
statistics cannot see). When both drift, the cause is ``performance``. With
``drift.data_drift_when_labeled`` off, data drift counts only in windows with too few
labels to judge the model. A drifted window raises ``detect`` only through every guard:

1. at least ``min_window_rows`` rows of the version (fewer: no verdict, the streak holds);
2. ``consecutive`` drifted windows in a row (a clean window resets the streak; so does a
   detection, so a rejected retrain is tried again only after as many windows);
3. the window ends more than ``cooldown_days`` after the version's deploy;
4. no retrain in flight (cleared by a deploy, a rejection, or ``retrain_timeout_days``);
5. a fresh idempotency key ``<model>:v<version>:<window start>``.

:meth:`to_state` / :meth:`from_state` give a JSON-able dict, so a handler can persist the
monitor and rebuild it after a restart. Reference samples are not part of the state: pass
them to :meth:`deployed` or give the monitor a ``reference_loader``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftline.functions.ml.spec import ModelSpec, is_worse, score

Cause = Literal["data", "performance"]
DriftFn = Callable[..., Any]
"""``(reference, current, columns, drift_share) -> DriftResult``-like (``.share``, ``.drifted``)."""
ReferenceLoader = Callable[[int], "pd.DataFrame | None"]

_DAY = 86_400.0
_KEEP_KEYS = 64
_MAX_ORPHANS = 10_000
# A row: request id, index in the request, event time (epoch s), version, prediction, label, features.
_RID, _IDX, _T, _VER, _PRED, _LABEL, _X = range(7)


@dataclass(frozen=True)
class WindowResult:
    """The verdict on one closed window."""

    model: str
    version: int | None
    """Production version the window was judged for (None: nothing deployed yet)."""
    window: str
    """Window id: its start, ISO 8601."""
    start: datetime
    end: datetime
    rows: int
    """Rows of ``version`` in the window."""
    labeled_rows: int
    drift_share: float | None
    """Share of drifted features (None: not computed)."""
    metric: str
    metric_value: float | None
    """Task metric on the labeled rows (None: too few labels)."""
    baseline_metric: float | None
    """The version's validation metric."""
    drifted: bool
    cause: Cause | None
    drift_start: datetime | None
    """Start of the first window of the current drifted streak: where the change began."""
    detect: bool
    """True only when every guard passed: emit drift.detected."""
    idempotency_key: str | None
    reason: str
    """What the monitor decided and why, in words."""
    drift: Any = None
    """The drift function's full result (per-column details), when computed."""
    current: pd.DataFrame | None = None
    """The version's rows (features) in the window, for an HTML report."""


def _epoch(value: datetime | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _default_drift_fn(*args: Any, **kwargs: Any) -> Any:
    from driftline.functions.ml.drift_stats import data_drift

    return data_drift(*args, per_column=False, **kwargs)


class DriftMonitor:
    """Windows, verdicts and retrain guards for one model. See the module docstring."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        drift_fn: DriftFn | None = None,
        reference_loader: ReferenceLoader | None = None,
    ) -> None:
        self.spec = spec
        self.policy = spec.drift
        self._drift_fn = drift_fn or _default_drift_fn
        self._loader = reference_loader
        self._references: dict[int, pd.DataFrame] = {}
        self.version: int | None = None
        self.deployed_at: float | None = None
        self.baseline: float | None = None
        self.watermark: float | None = None
        self.closed_through: float = -math.inf
        self.windows: dict[float, list[list[Any]]] = {}
        self.streak = 0
        self.streak_start: float | None = None
        self.inflight: dict[str, Any] | None = None
        self.keys: list[str] = []
        self.orphans: dict[str, list[float]] = {}
        self.late_rows = 0
        self._pending: dict[str, tuple[float, list[int]]] = {}
        self._unlabeled: dict[float, int] = {}

    # --- inputs ----------------------------------------------------------------------------

    def deployed(
        self,
        version: int,
        *,
        at: datetime | float,
        validation_metric: float | None,
        reference: pd.DataFrame | None = None,
    ) -> None:
        """A version became production at event time ``at``: new baseline, streak and
        retrain-in-flight cleared, cooldown starts. A repeated deploy of the same version
        (a redelivered event) changes nothing."""
        if reference is not None:
            self._references[version] = reference
        if version == self.version:
            return
        self.version, self.deployed_at, self.baseline = version, _epoch(at), validation_metric
        self.streak, self.inflight = 0, None

    def rejected(self) -> None:
        """The retrain in flight ended without a deploy: further detections may go ahead."""
        self.inflight = None

    def observe(
        self,
        request_id: str,
        version: int,
        event_time: datetime | float,
        rows: Sequence[Sequence[float]],
        predictions: Sequence[float],
    ) -> list[WindowResult]:
        """Scored rows (features in spec order); returns the windows this closed, in order."""
        t = _epoch(event_time)
        if request_id in self._pending:  # a redelivered score.completed
            return []
        if t < self.closed_through:
            self.late_rows += len(rows)
            return []
        start = math.floor(t / self._width) * self._width
        window = self.windows.setdefault(start, [])
        labels = self.orphans.pop(request_id, None)
        positions = []
        for i, (x, pred) in enumerate(zip(rows, predictions, strict=True)):
            label = labels[i] if labels is not None and i < len(labels) else None
            positions.append(len(window))
            window.append([request_id, i, t, version, float(pred), label, [float(v) for v in x]])
            self._unlabeled[start] = self._unlabeled.get(start, 0) + (label is None)
        self._pending[request_id] = (start, positions)
        self.watermark = t if self.watermark is None else max(self.watermark, t)
        return self._close_ready()

    def label(self, request_id: str, labels: Sequence[float]) -> list[WindowResult]:
        """True values for an earlier request, in row order; returns windows this closed."""
        found = self._pending.get(request_id)
        if found is None:
            # Labels before their rows wait here; labels for closed windows never match and
            # age out (bounded).
            if len(self.orphans) >= _MAX_ORPHANS:
                self.orphans.pop(next(iter(self.orphans)))
            self.orphans[request_id] = [float(v) for v in labels]
            return []
        start, positions = found
        window = self.windows[start]
        for pos, value in zip(positions, labels, strict=False):
            if math.isnan(value):  # a missing label labels nothing
                continue
            if window[pos][_LABEL] is None:
                self._unlabeled[start] -= 1
            window[pos][_LABEL] = float(value)
        return self._close_ready()

    def flush(self) -> list[WindowResult]:
        """Close every open window now (end of a replay)."""
        return [self._close(start) for start in sorted(self.windows)]

    # --- closing ---------------------------------------------------------------------------

    @property
    def _width(self) -> float:
        return self.policy.window_days * _DAY

    def _close_ready(self) -> list[WindowResult]:
        closed: list[WindowResult] = []
        now = self.watermark if self.watermark is not None else -math.inf
        for start in sorted(self.windows):
            end = start + self._width
            labeled = self._unlabeled.get(start, 0) == 0
            if not (now >= end + self.policy.label_wait_days * _DAY or (now >= end and labeled)):
                break
            closed.append(self._close(start))
        return closed

    def _close(self, start: float) -> WindowResult:
        rows = self.windows.pop(start)
        self._unlabeled.pop(start, None)
        for rid in {r[_RID] for r in rows}:
            self._pending.pop(rid, None)
        self.closed_through = max(self.closed_through, start + self._width)
        return self._judge(start, [r for r in rows if r[_VER] == self.version])

    def _judge(self, start: float, rows: list[list[Any]]) -> WindowResult:
        p, end = self.policy, start + self._width
        base = {
            "model": self.spec.name,
            "version": self.version,
            "window": _when(start).isoformat(),
            "start": _when(start),
            "end": _when(end),
            "rows": len(rows),
            "labeled_rows": sum(r[_LABEL] is not None for r in rows),
            "metric": self.spec.metric_name,
            "baseline_metric": self.baseline,
        }
        if self.version is None or len(rows) < p.min_window_rows:
            why = (
                "no production version"
                if self.version is None
                else (f"too few rows ({len(rows)} < {p.min_window_rows}): no verdict")
            )
            return WindowResult(
                **base,
                drift_share=None,
                metric_value=None,
                drifted=False,
                cause=None,
                drift_start=None,
                detect=False,
                idempotency_key=None,
                reason=why,
            )
        current = pd.DataFrame([r[_X] for r in rows], columns=self.spec.feature_names)
        drift = self._data_drift(current)
        value = self._metric(rows)
        perf = (
            value is not None
            and self.baseline is not None
            and is_worse(self.spec.metric_name, value, self.baseline, p.performance_tolerance)
        )
        data = bool(drift is not None and drift.drifted)
        judged_by_labels = value is not None and self.baseline is not None
        if judged_by_labels and not p.data_drift_when_labeled:
            data = False  # the labels show how the model does on these very inputs
        cause: Cause | None = "performance" if perf else "data" if data else None
        self.streak = self.streak + 1 if cause else 0
        if self.streak == 1:
            self.streak_start = start
        since = _when(self.streak_start) if cause and self.streak_start is not None else None
        key = f"{self.spec.name}:v{self.version}:{base['window']}"
        detect, reason = self._guards(cause, end, key)
        return WindowResult(
            **base,
            drift_share=None if drift is None else float(drift.share),
            metric_value=value,
            drifted=cause is not None,
            cause=cause,
            drift_start=since,
            detect=detect,
            idempotency_key=key if detect else None,
            reason=reason,
            drift=drift,
            current=current,
        )

    def _data_drift(self, current: pd.DataFrame) -> Any:
        assert self.version is not None
        reference = self._references.get(self.version)
        if reference is None and self._loader is not None:
            reference = self._loader(self.version)
            if reference is not None:
                self._references[self.version] = reference
        if reference is None:
            return None
        p = self.policy
        return self._drift_fn(
            reference,
            current,
            self.spec.feature_names,
            p.drift_share,
            method=p.stattest,
            threshold=p.stattest_threshold,
        )

    def _metric(self, rows: list[list[Any]]) -> float | None:
        labeled = [r for r in rows if r[_LABEL] is not None]
        if len(labeled) < self.policy.min_labeled_rows:
            return None
        y = np.array([r[_LABEL] for r in labeled])
        return score(self.spec.metric_name, y, np.array([r[_PRED] for r in labeled]))

    def _guards(self, cause: Cause | None, end: float, key: str) -> tuple[bool, str]:
        p = self.policy
        if cause is None:
            return False, "no drift"
        if self.streak < p.consecutive:
            return False, f"{cause} drift, {self.streak} of {p.consecutive} consecutive windows"
        assert self.deployed_at is not None
        if end <= self.deployed_at + p.cooldown_days * _DAY:
            return False, f"{cause} drift, in cooldown after the deploy of v{self.version}"
        if self.inflight is not None and p.retrain_timeout_days is not None:
            if end - self.inflight["since"] > p.retrain_timeout_days * _DAY:
                self.inflight = None
        if self.inflight is not None:
            return False, f"{cause} drift, retrain already in flight ({self.inflight['key']})"
        if key in self.keys:
            return False, f"{cause} drift, already detected for {key}"
        self.inflight = {"key": key, "since": end}
        self.keys = [*self.keys, key][-_KEEP_KEYS:]
        self.streak = 0
        return True, f"{cause} drift detected: retrain"

    # --- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything but reference samples, as plain JSON-able values (NaN as None)."""
        return {
            "model": self.spec.name,
            "version": self.version,
            "deployed_at": self.deployed_at,
            "baseline": _nan_none(self.baseline),
            "watermark": self.watermark,
            "closed_through": None if math.isinf(self.closed_through) else self.closed_through,
            "windows": {repr(s): [_row_state(r) for r in rows] for s, rows in self.windows.items()},
            "streak": self.streak,
            "streak_start": self.streak_start,
            "inflight": self.inflight,
            "keys": list(self.keys),
            "orphans": dict(self.orphans),
            "late_rows": self.late_rows,
        }

    @classmethod
    def from_state(
        cls,
        spec: ModelSpec,
        state: dict[str, Any],
        *,
        drift_fn: DriftFn | None = None,
        reference_loader: ReferenceLoader | None = None,
    ) -> DriftMonitor:
        """Rebuild a monitor saved with :meth:`to_state`."""
        m = cls(spec, drift_fn=drift_fn, reference_loader=reference_loader)
        m.version, m.deployed_at, m.baseline = (
            state["version"],
            state["deployed_at"],
            state["baseline"],
        )
        m.watermark, m.streak, m.inflight = state["watermark"], state["streak"], state["inflight"]
        m.streak_start = state["streak_start"]
        m.closed_through = -math.inf if state["closed_through"] is None else state["closed_through"]
        m.keys, m.orphans = list(state["keys"]), dict(state["orphans"])
        m.late_rows = state["late_rows"]
        for key, rows in state["windows"].items():
            start = float(key)
            m.windows[start] = [
                [*r[:6], [math.nan if v is None else v for v in r[6]]] for r in rows
            ]
            for pos, r in enumerate(m.windows[start]):
                m._pending.setdefault(r[_RID], (start, []))[1].append(pos)
            m._unlabeled[start] = sum(r[_LABEL] is None for r in m.windows[start])
        return m


def _nan_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _row_state(row: list[Any]) -> list[Any]:
    return [
        *row[:_PRED],
        _nan_none(row[_PRED]),
        _nan_none(row[_LABEL]),
        [_nan_none(v) for v in row[_X]],
    ]
