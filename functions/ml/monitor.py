"""The drift monitor: the pure, deterministic state machine behind the drift-check function.

One :class:`DriftMonitor` watches one model. It is fed scored rows (:meth:`observe`),
delayed labels (:meth:`label`), deploys (:meth:`deployed`) and rejections
(:meth:`rejected`); it does no I/O. Rows fall into fixed windows of event time
(``drift.window_days``, aligned to the Unix epoch), each row by its own time when its
request carries one per row (``row_times``), so a request of many rows is judged as that
many requests of one. A window closes, in order, once
event time has passed its end and every row in it is labeled, or once event time is
``drift.label_wait_days`` past its end, whichever comes first; labels for a closed
window no longer count. Scored rows older than the newest closed window are dropped
(``late_rows``). A closed window gives a :class:`WindowResult`.

Only rows scored by the production version count. How a window is judged:

- **Performance** (enough labeled rows): :func:`~.performance.perf_test`, the mean
  per-row loss against the version's validation loss, with a minimum effect per metric
  and a significance level. With labels, data drift does not count unless
  ``drift.data_drift_when_labeled`` says so: inputs that move while the model stays right
  are no reason to retrain.
- **Data** (too few labels): Evidently's share of drifted features against the version's
  reference sample.

Between window closes, each labeled row's loss goes to an online detector (ADWIN). When it
alarms, the change point is estimated (a least-squares split) and the rows since then are tested; a severe
worsening is acted on at once. A drifted window acts at once when severe, else after
``consecutive`` drifted windows in a row. Every detection carries the estimated change
point, so the retrain learns only from rows after it; it waits (up to a window) until
``training.min_rows`` labeled rows exist after it. A version trained from a change point
is *refreshed* while it has seen less than a training window of the new concept, each
time as much new data again as it learned is labeled (and the promotion gate keeps
production unless the refreshed candidate does better). A version that has served
``drift.challenge_days`` since the newest row it learned from (or since its last
challenge) with no drift is challenged: a ``refresh`` detection with no change point
(``by="schedule"``) retrains on the trailing window, and the gate deploys that challenger
only when it is clearly better. Every detection passes these guards:

1. at least ``min_window_rows`` rows of the version in a window to judge it;
2. no retrain in flight (cleared by a deploy, a rejection, or ``retrain_timeout_days``,
   so nothing can leave the loop stuck);
3. a window-based detection ends more than ``cooldown_days`` after the version's deploy;
4. a fresh idempotency key: ``<model>:v<version>:<window start>`` for a window,
   ``...:online:<change point>`` for the detector, ``...:refresh:<days>`` for a refresh,
   ``...:challenge:<window end>`` for a challenge.

The first judged window of a promoted version is marked ``probation``: the register
function then compares it with the version it replaced on those rows (rollback).

:meth:`to_state` / :meth:`from_state` give a JSON-able dict, so a handler can persist the
monitor and rebuild it after a restart. Reference samples are not part of the state: pass
them to :meth:`deployed` or give the monitor a ``reference_loader``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from driftline.functions.ml.performance import (
    Baseline,
    OnlineDetector,
    PerfTest,
    change_point,
    min_effect,
    perf_test,
)
from driftline.functions.ml.spec import ModelSpec, row_loss, score

Cause = Literal["data", "performance", "refresh"]
By = Literal["window", "online", "refresh", "schedule"]
DriftFn = Callable[..., Any]
"""``(reference, current, columns, drift_share) -> DriftResult``-like (``.share``, ``.drifted``)."""
ReferenceLoader = Callable[[int], "pd.DataFrame | None"]

_DAY = 86_400.0
_KEEP_KEYS = 64
_MAX_ORPHANS = 10_000
# A row: request id, index in the request, event time (epoch s), version, prediction, label, features.
_RID, _IDX, _T, _VER, _PRED, _LABEL, _X = range(7)
Row = tuple[Any, ...]
"""A scored row in an open window: request id, index in its request, time, version,
prediction, label (None: not yet), features. Tuples of numbers, strings and arrays, which
the garbage collector stops tracking: with a list per row, every full collection walked
each open window's rows, and stalled the process for over 100 ms at 60,000 rows."""
Slots = tuple[tuple[float, int] | None, ...] | list[tuple[float, int] | None]


DETECTION_RUNS = uuid.UUID("5d2f7c8e-3b1a-4e6f-9c0d-8a7b6e5f4d3c")


def detection_run_id(idempotency_key: str) -> str:
    """The id of the training run a detection starts (the retrain function names its run so):
    a rejection with another run id is not this detection's, and frees nothing."""
    return str(uuid.uuid5(DETECTION_RUNS, idempotency_key))


@dataclass(frozen=True)
class Detection:
    """A drift that passed every guard: the drift-check function emits ``drift.detected``."""

    model: str
    version: int
    cause: Cause
    by: By
    """What found it: a closed ``window``, the ``online`` detector, a ``refresh``, or the
    challenger ``schedule``."""
    window: str
    """The window it was found in (its start, ISO 8601)."""
    at: datetime
    """Event time of the detection (a window's end, or the newest labeled row)."""
    change_point: datetime | None
    """Where the change began, as estimated: the retrain learns from rows after it."""
    idempotency_key: str
    reason: str
    metric_value: float | None = None
    drift_share: float | None = None
    test: PerfTest | None = None


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
    """True when this window's verdict emits drift.detected (see ``detection``)."""
    idempotency_key: str | None
    reason: str
    """What the monitor decided and why, in words."""
    drift: Any = None
    """The drift function's full result (per-column details), when computed."""
    current: pd.DataFrame | None = None
    """The version's rows (features) in the window, for an HTML report."""
    test: PerfTest | None = None
    """The performance test's figures (None: too few labels or no baseline)."""
    detector: str | None = None
    """The online detector's state when the window closed."""
    probation: bool = False
    """The first judged window of a promoted version: compare it with the one it replaced."""
    detection: Detection | None = None


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
        self.base: Baseline | None = None
        self.watermark: float | None = None
        self.closed_through: float = -math.inf
        self.windows: dict[float, list[Row]] = {}
        self.streak = 0
        self.streak_start: float | None = None
        self.inflight: dict[str, Any] | None = None
        self.keys: list[str] = []
        self.orphans: dict[str, list[float]] = {}
        self.late_rows = 0
        self.sampled_out = 0
        """Rows a full window did not keep (``policy.max_window_rows``)."""
        self._filed: dict[float, int] = {}
        """Rows filed in each full window, kept or not (the reservoir's count; a window not
        full has filed as many as it holds)."""
        self.detector: OnlineDetector | None = None
        self.suspect: float | None = None
        """Change point (epoch s) of an online alarm not confirmed yet."""
        self.pending: dict[str, Any] | None = None
        """A detection waiting for ``training.min_rows`` labeled rows after its change point."""
        self.change_at: float | None = None
        """The newest change point acted on: a version trained from it may be refreshed."""
        self.trained: tuple[float, float] | None = None
        """Event times the production version was trained on (first, last)."""
        self.refreshed_span: float = 0.0
        self.challenged_at: float | None = None
        """Event time of the production version's last challenge."""
        self.probation_due = False
        self.deploys: list[str] = []
        """Keys of the deploys seen (version and time): a redelivered one changes nothing."""
        self._slots: dict[str, Slots] = {}
        """Where each row of a request sits: (window start, position); None once its window
        closed (or it came late). A request goes once none of its rows is left. Tuples,
        but for the list of the request :meth:`observe` is filing."""
        self._unlabeled: dict[float, int] = {}
        self._detections: list[Detection] = []
        self.acted_after: int | None = None
        """After which of its labels the last :meth:`label` call closed a window or made a
        detection (None: neither): labels after it came later, with a request per row."""

    # --- inputs ----------------------------------------------------------------------------

    def deployed(
        self,
        version: int,
        *,
        at: datetime | float,
        validation_metric: float | None = None,
        metrics: Mapping[str, float] | None = None,
        reference: pd.DataFrame | None = None,
        trained: tuple[datetime | float, datetime | float] | None = None,
        probation: bool = False,
    ) -> None:
        """A version became production at event time ``at``: new baseline (from its
        ``metrics``, or ``validation_metric`` alone), streak, detector and retrain in flight
        cleared. ``trained`` is the span of event time it learned from; ``probation`` marks
        its first judged window for the rollback check. A repeated deploy of the same
        version (a redelivered event) changes nothing."""
        if reference is not None:
            self._references[version] = reference
        when = _epoch(at)
        if self.watermark is not None:  # a deploy dated by the wall clock in a backfill
            when = min(when, self.watermark)
        key = f"v{version}@{_epoch(at)}"
        if version == self.version or key in self.deploys:
            return  # a redelivered deploy (perhaps of an earlier one in the same batch)
        self.deploys = [*self.deploys, key][-_KEEP_KEYS:]
        name = self.spec.metric_name
        figures = dict(metrics or {})
        if validation_metric is not None:
            figures.setdefault(name, validation_metric)
        self.version, self.deployed_at = version, when
        self.baseline = figures.get(name)
        self.base = Baseline.from_metrics(name, figures)
        self.trained = None if trained is None else (_epoch(trained[0]), _epoch(trained[1]))
        self.streak, self.inflight, self.pending, self.suspect = 0, None, None, None
        self.challenged_at = None
        self.probation_due = probation
        self.detector = self._new_detector()

    def rejected(self, run_id: str | None = None) -> None:
        """A candidate was rejected. When it was the run of the retrain in flight (``run_id``
        None: whichever), that retrain ended without a deploy and further detections may go
        ahead; a rejected candidate from another run (new data, a manual retrain) leaves it
        in flight."""
        if self.inflight is not None and run_id is not None:
            if run_id != detection_run_id(self.inflight["key"]):
                return
        self.inflight = None

    def observe(
        self,
        request_id: str,
        version: int,
        event_time: datetime | float,
        rows: Sequence[Sequence[float]],
        predictions: Sequence[float],
        *,
        row_times: Sequence[float] | None = None,
    ) -> list[WindowResult]:
        """Scored rows (features in spec order), each at its own time when ``row_times``
        (epoch seconds, one per row) is given, else all at ``event_time``; returns the
        windows this closed, in order. The rows are taken one by one, as if each were a
        request of its own: each goes to the window of its time, and a window closes as soon
        as a row moves event time past it."""
        if request_id in self._slots:  # a redelivered score.completed
            return []
        if row_times is None:
            t = _epoch(event_time)
            if t < self.closed_through:
                self.late_rows += len(rows)
                return []
            times: Sequence[float] = [t] * len(rows)
        else:
            times = row_times
        labels = self.orphans.pop(request_id, None)
        slots: list[tuple[float, int] | None] = []
        self._slots[request_id] = slots
        closed: list[WindowResult] = []
        width = self._width
        for i, (x, pred, t) in enumerate(zip(rows, predictions, times, strict=True)):
            label = labels[i] if labels is not None and i < len(labels) else None
            slot = self._add(request_id, i, float(t), version, float(pred), label, x, width)
            slots.append(slot)
            if (
                self.watermark is not None
                and self.watermark >= min(self.windows, default=math.inf) + width
            ):
                closed.extend(self._close_ready())
        if any(slot is not None for slot in slots):
            self._slots[request_id] = tuple(slots)  # a close on the way may have let it go
        else:
            self._slots.pop(request_id, None)
        if row_times is None:  # a request with no rows moves event time too
            t = _epoch(event_time)
            self.watermark = t if self.watermark is None else max(self.watermark, t)
        return closed + self._close_ready()

    def _add(
        self,
        request_id: str,
        i: int,
        t: float,
        version: int,
        pred: float,
        label: float | None,
        x: Sequence[float],
        width: float,
    ) -> tuple[float, int] | None:
        """One scored row into the window of its time; returns where it went (None: late)."""
        if t < self.closed_through:
            self.late_rows += 1
            return None
        if label is not None and math.isnan(label):
            label = None
        start = math.floor(t / width) * width
        window = self.windows.get(start)
        if window is None:
            window = self.windows[start] = []
        if self.watermark is None or t > self.watermark:
            self.watermark = t
        pos = len(window)
        if pos >= self.policy.max_window_rows:  # full: keep a uniform sample (algorithm R)
            filed = self._filed[start] = self._filed.get(start, pos) + 1
            pos = _draw(request_id, i, filed)
            if pos >= len(window):
                self.sampled_out += 1
                return None
            self._evict(start, pos)
        kept: Any = x  # a read-only float64 row (of an event's matrix) is kept as it is
        if not (isinstance(x, np.ndarray) and x.dtype == np.float64 and not x.flags.writeable):
            kept = np.array(x, dtype=np.float64)
        row = (request_id, i, t, version, pred, label, kept)
        if pos == len(window):
            window.append(row)
        else:
            window[pos] = row
        self._unlabeled[start] = self._unlabeled.get(start, 0) + (label is None)
        if label is not None:
            self._online(row)
        return start, pos

    def _evict(self, start: float, pos: int) -> None:
        """Take a window's row out (its request's slot for it becomes None)."""
        old = self.windows[start][pos]
        self.sampled_out += 1
        self._unlabeled[start] -= old[_LABEL] is None
        self._let_go(old[_RID], [old[_IDX]])

    def _let_go(self, request_id: str, idxs: list[int]) -> None:
        """Rows of a request no longer in any window: their slots become None, and the
        request goes once none is left."""
        slots = self._slots.get(request_id)
        if slots is None:
            return
        if isinstance(slots, list):  # the request observe is filing: it settles it after
            for i in idxs:
                slots[i] = None
            return
        left = list(slots)
        for i in idxs:
            left[i] = None
        if any(left):
            self._slots[request_id] = tuple(left)
        else:
            self._slots.pop(request_id)

    def label(self, request_id: str, labels: Sequence[float]) -> list[WindowResult]:
        """True values for an earlier request, in row order; returns windows this closed (a
        window closes as soon as its last row is labeled, as with a request per row)."""
        slots = self._slots.get(request_id)
        if slots is None:
            # Labels before their rows wait here; labels for closed windows never match and
            # age out (bounded).
            if len(self.orphans) >= _MAX_ORPHANS:
                self.orphans.pop(next(iter(self.orphans)))
            self.orphans[request_id] = [float(v) for v in labels]
            return []
        closed: list[WindowResult] = []
        self.acted_after = None
        for i, (slot, value) in enumerate(zip(slots, labels, strict=False)):
            if slot is None or math.isnan(value):  # a missing label labels nothing
                continue  # (a close empties the later slots of its window's rows)
            start, pos = slot
            row = self.windows[start][pos]
            if row[_LABEL] is None:
                before = (len(closed), len(self._detections))
                self._unlabeled[start] -= 1
                row = (*row[:_LABEL], float(value), row[_X])
                self.windows[start][pos] = row
                self._online(row)
                if self._unlabeled[start] == 0:
                    closed.extend(self._close_ready())
                if (len(closed), len(self._detections)) != before:
                    self.acted_after = i
        last = self._close_ready()
        if last:
            self.acted_after = len(labels) - 1
        return closed + last

    def flush(self) -> list[WindowResult]:
        """Close every open window now (end of a replay)."""
        return [self._close(start) for start in sorted(self.windows)]

    def take_detections(self) -> list[Detection]:
        """Detections made between window closes (online, or released after waiting)."""
        out, self._detections = self._detections, []
        return out

    # --- the online detector ---------------------------------------------------------------

    def _new_detector(self) -> OnlineDetector | None:
        if self.base is None:
            return None
        scale = self.base.loss if self.spec.task == "regression" and self.base.loss > 0 else None
        return OnlineDetector(self.policy.online_delta, scale)

    def _online(self, row: Row) -> None:
        """A newly labeled row: feed its loss to the detector; act on a severe change."""
        if row[_VER] != self.version or self.detector is None or self.base is None:
            return
        loss = float(row_loss(self.spec.metric_name, [row[_LABEL]], [row[_PRED]])[0])
        if self.pending is not None and self.pending["detection"].change_point is not None:
            self.pending["have"] += row[_T] >= _epoch(self.pending["detection"].change_point)
        alarm = self.detector.update(row[_T], loss)  # the history counts rows even when off
        if alarm and self.policy.online:  # a newer alarm replaces an older suspicion
            times, losses = self.detector.arrays()
            at = change_point(losses, self.base.loss, self._min_effect())
            self.suspect = float(times[at]) if at < len(times) else None
        self._release_pending()
        if self.suspect is not None and self.detector.updates % 10 == 0:
            self._check_suspect()

    def _min_effect(self) -> float:
        assert self.base is not None
        return min_effect(self.policy, self.spec.task, self.base)

    def _check_suspect(self) -> None:
        assert self.detector is not None and self.base is not None and self.suspect is not None
        test = perf_test(self.detector.since(self.suspect), self.base, self.policy, self.spec.task)
        if not test.drifted:
            if test.n >= 4 * self.policy.min_labeled_rows and test.effect < test.min_effect:
                self.suspect = None  # the alarm was a move the other way, or a small one
            return
        if not test.severe:
            return
        assert self.version is not None and self.watermark is not None
        cp = self.suspect
        key = f"{self.spec.name}:v{self.version}:online:{_when(cp).isoformat()}"
        window = _when(math.floor(self.watermark / self._width) * self._width).isoformat()
        det = Detection(
            self.spec.name,
            self.version,
            "performance",
            "online",
            window,
            _when(self.watermark),
            _when(cp),
            key,
            f"online detector: {_describe(test)}",
            self._metric_of(test),
            None,
            test,
        )
        ok, _ = self._admit(det)
        if ok:
            self.suspect = None

    # --- guards and waiting ----------------------------------------------------------------

    def _admit(self, det: Detection) -> tuple[bool, str]:
        """The common guards; a detection that passes is emitted now or waits for rows."""
        p = self.policy
        now = _epoch(det.at)
        if self.inflight is not None and p.retrain_timeout_days is not None:
            if now - self.inflight["since"] > p.retrain_timeout_days * _DAY:
                self.inflight = None
        if self.pending is not None:
            return (
                False,
                f"{det.cause} drift, a detection already waits for rows ({self.pending['key']})",
            )
        if self.inflight is not None:
            return False, f"{det.cause} drift, retrain already in flight ({self.inflight['key']})"
        if det.idempotency_key in self.keys:
            return False, f"{det.cause} drift, already detected for {det.idempotency_key}"
        self.keys = [*self.keys, det.idempotency_key][-_KEEP_KEYS:]
        self.streak = 0
        if det.change_point is not None and det.cause != "refresh":
            self.change_at = _epoch(det.change_point)
            self.refreshed_span = 0.0
        missing = self._rows_missing(det)
        if missing > 0:
            have = self.spec.training.min_rows - missing
            self.pending = {
                "key": det.idempotency_key,
                "since": now,
                "detection": det,
                "have": have,
            }
            return (
                True,
                f"{det.reason}; waiting for {missing} more labeled rows after the change point",
            )
        self._emit(det)
        return True, det.reason

    def _rows_missing(self, det: Detection) -> int:
        if det.cause == "data" or det.change_point is None or self.detector is None:
            return 0
        if self.pending is not None and self.pending["detection"] is det:
            have = self.pending["have"]
        else:
            have = sum(1 for t, _ in self.detector.history if t >= _epoch(det.change_point))
        return max(0, self.spec.training.min_rows - have)

    def _release_pending(self) -> None:
        if self.pending is None or self.watermark is None:
            return
        det: Detection = self.pending["detection"]
        waited = self.watermark - self.pending["since"]
        if self._rows_missing(det) > 0 and waited < self._width:
            return
        self.pending = None
        self._emit(replace(det, at=_when(self.watermark)))

    def _emit(self, det: Detection) -> None:
        self.inflight = {"key": det.idempotency_key, "since": _epoch(det.at)}
        self._detections.append(det)

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
        self._filed.pop(start, None)
        gone: dict[str, list[int]] = {}
        for r in rows:
            gone.setdefault(r[_RID], []).append(r[_IDX])
        for rid, idxs in gone.items():
            self._let_go(rid, idxs)
        self.closed_through = max(self.closed_through, start + self._width)
        result = self._judge(start, [r for r in rows if r[_VER] == self.version])
        self._release_pending()
        return result

    def _judge(self, start: float, rows: list[Row]) -> WindowResult:
        p, end = self.policy, start + self._width
        base: dict[str, Any] = {
            "model": self.spec.name,
            "version": self.version,
            "window": _when(start).isoformat(),
            "start": _when(start),
            "end": _when(end),
            "rows": len(rows),
            "labeled_rows": sum(r[_LABEL] is not None for r in rows),
            "metric": self.spec.metric_name,
            "baseline_metric": self.baseline,
            "detector": None if self.detector is None else self.detector.describe(),
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
        current = pd.DataFrame(
            np.vstack([r[_X] for r in rows]) if rows else None, columns=self.spec.feature_names
        )
        labeled = [r for r in rows if r[_LABEL] is not None]
        value = self._metric(labeled)
        test = self._test(labeled)
        drift = self._data_drift(current)  # reported always; counts only as the policy says
        data = bool(drift is not None and drift.drifted) and (
            test is None or p.data_drift_when_labeled
        )
        perf = test is not None and test.drifted
        cause: Cause | None = "performance" if perf else "data" if data else None
        self.streak = self.streak + 1 if cause else 0
        if self.streak == 1:
            self.streak_start = start
        since = _when(self.streak_start) if cause and self.streak_start is not None else None
        probation = self.probation_due and test is not None
        if probation:
            self.probation_due = False
        det, reason = self._window_detection(cause, start, end, labeled, test, value, drift)
        if det is None and cause is None:
            det, reason = self._refresh(end, reason)
            if det is None:
                det, reason = self._challenge(end, reason)
        fired = det is not None and bool(self._detections) and self._detections[-1] is det
        return WindowResult(
            **base,
            drift_share=None if drift is None else float(drift.share),
            metric_value=value,
            drifted=cause is not None,
            cause=cause,
            drift_start=since,
            detect=bool(fired),
            idempotency_key=det.idempotency_key if fired and det else None,
            reason=reason,
            drift=drift,
            current=current,
            test=test,
            probation=probation,
            detection=self._detections.pop() if fired else None,
        )

    def _window_detection(
        self,
        cause: Cause | None,
        start: float,
        end: float,
        labeled: list[Row],
        test: PerfTest | None,
        value: float | None,
        drift: Any,
    ) -> tuple[Detection | None, str]:
        p = self.policy
        if cause is None:
            return None, "no drift" if test is None else f"no drift: {_describe(test)}"
        share = getattr(drift, "share", None)
        figures = (
            _describe(test)
            if cause == "performance" and test is not None
            else f"drift share {share if share is not None else float('nan'):.2f}"
        )
        severe = cause == "performance" and test is not None and test.severe
        if self.streak < p.consecutive and not severe:
            return (
                None,
                f"{cause} drift ({figures}), {self.streak} of {p.consecutive} consecutive windows",
            )
        assert self.deployed_at is not None and self.version is not None
        if end <= self.deployed_at + p.cooldown_days * _DAY:
            return None, f"{cause} drift, in cooldown after the deploy of v{self.version}"
        cp = (
            self._window_change_point(start, labeled)
            if cause == "performance"
            else self.streak_start
        )
        det = Detection(
            self.spec.name,
            self.version,
            cause,
            "window",
            _when(start).isoformat(),
            _when(end),
            None if cp is None else _when(cp),
            f"{self.spec.name}:v{self.version}:{_when(start).isoformat()}",
            f"{cause} drift ({figures}){' severe' if severe else ''}: retrain",
            value,
            None if drift is None else float(drift.share),
            test,
        )
        ok, reason = self._admit(det)
        return (det if ok else None), reason

    def _window_change_point(self, start: float, labeled: list[Row]) -> float | None:
        """Where the worsening began: the split of the version's recent losses (back to the
        start of the streak), else the streak's first window."""
        lo = self.streak_start if self.streak_start is not None else start
        if self.detector is not None and self.base is not None:
            times, losses = self.detector.arrays()
            keep = times >= lo
            if keep.any():
                t, x = times[keep], losses[keep]
                at = change_point(x, self.base.loss, self._min_effect())
                return float(t[at]) if at < len(t) else lo
        return lo

    def _refresh(self, end: float, reason: str) -> tuple[Detection | None, str]:
        """Retrain a version that saw only a short stretch of the new concept (whether it
        learned from the change point on, a recent part of it, or the trailing window that
        won on too few new rows) once as much new data again as it learned is labeled: the
        stretch since the change point doubles while each retrain learns all of it, and
        comes sooner when a recent part won (the concept was still moving). The gate keeps
        production when the refreshed candidate is no better; the next try comes once as
        much new data again is labeled, until a version that learned a whole training
        window of the new concept serves."""
        p = self.policy
        if not p.refresh or self.change_at is None or self.trained is None or self.version is None:
            return None, reason
        first, last = self.trained
        if last < self.change_at:  # trained before the change (a version deployed again)
            return None, reason
        full = self.spec.training.days * _DAY
        span, trained_span = end - self.change_at, max(last - max(first, self.change_at), 1.0)
        due = self.refreshed_span + trained_span if self.refreshed_span else 2 * trained_span
        if trained_span >= 0.9 * full or span < due:
            return None, reason
        days = f"{span / _DAY:.1f}"
        det, why = self._retrain_anyway(
            "refresh",
            end,
            self.change_at,
            f"refresh:{days}",
            f"refresh: v{self.version} learned {trained_span / _DAY:.1f} days of the new concept, "
            f"{days} days of it are labeled now",
        )
        if det is not None:
            self.refreshed_span = span
        return det, (why if det is not None else reason)

    def _challenge(self, end: float, reason: str) -> tuple[Detection | None, str]:
        """Challenge a version that has served ``challenge_days`` since the newest row it
        learned from, or since its last challenge: a retrain on the trailing window, which
        the gate deploys only when it is clearly better than production."""
        p = self.policy
        if not p.challenge or self.trained is None or self.version is None:
            return None, reason
        every = (p.challenge_days or self.spec.training.days) * _DAY
        since = max(self.trained[1], self.challenged_at or -math.inf)
        if end - since < every:
            return None, reason
        det, why = self._retrain_anyway(
            "schedule",
            end,
            None,
            f"challenge:{_when(end).isoformat()}",
            f"challenge: v{self.version} learned from rows up to "
            f"{(end - self.trained[1]) / _DAY:.1f} days ago; a challenger trained on the "
            f"trailing window replaces it only when clearly better",
        )
        if det is not None:
            self.challenged_at = end
        return det, (why if det is not None else reason)

    def _retrain_anyway(
        self, by: By, end: float, change_point: float | None, key: str, reason: str
    ) -> tuple[Detection | None, str]:
        """A retrain with no drift found (cause ``refresh``: a refresh or a challenge) for
        the window ending at ``end``, when the guards let it through."""
        assert self.version is not None
        det = Detection(
            self.spec.name,
            self.version,
            "refresh",
            by,
            _when(end - self._width).isoformat(),
            _when(end),
            None if change_point is None else _when(change_point),
            f"{self.spec.name}:v{self.version}:{key}",
            reason,
        )
        ok, why = self._admit(det)
        return (det if ok else None), why

    def _test(self, labeled: list[Row]) -> PerfTest | None:
        if self.base is None or len(labeled) < self.policy.min_labeled_rows:
            return None
        losses = row_loss(
            self.spec.metric_name, [r[_LABEL] for r in labeled], [r[_PRED] for r in labeled]
        )
        return perf_test(losses, self.base, self.policy, self.spec.task)

    def _metric_of(self, test: PerfTest) -> float | None:
        name = self.spec.metric_name
        if name == "rmse":
            return math.sqrt(test.loss)
        if name == "f1":
            return None  # the test is on the miss rate; f1 needs the whole confusion matrix
        return test.loss if self.spec.task == "regression" else 1.0 - test.loss

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

    def _metric(self, labeled: list[Row]) -> float | None:
        if len(labeled) < self.policy.min_labeled_rows:
            return None
        y = np.array([r[_LABEL] for r in labeled])
        return score(self.spec.metric_name, y, np.array([r[_PRED] for r in labeled]))

    # --- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything but reference samples, as plain JSON-able values (NaN as None)."""
        return {
            "model": self.spec.name,
            "version": self.version,
            "deployed_at": self.deployed_at,
            "baseline": _nan_none(self.baseline),
            "base": None
            if self.base is None
            else [self.base.loss, self.base.sd, self.base.n, self.base.se],
            "watermark": self.watermark,
            "closed_through": None if math.isinf(self.closed_through) else self.closed_through,
            "windows": {repr(s): _window_state(rows) for s, rows in self.windows.items()},
            "streak": self.streak,
            "streak_start": self.streak_start,
            "inflight": self.inflight,
            "keys": list(self.keys),
            "orphans": dict(self.orphans),
            "late_rows": self.late_rows,
            "sampled_out": self.sampled_out,
            "filed": {repr(s): n for s, n in self._filed.items()},
            "detector": None if self.detector is None else self.detector.state(),
            "suspect": self.suspect,
            "pending": None if self.pending is None else _pending_state(self.pending),
            "change_at": self.change_at,
            "trained": None if self.trained is None else list(self.trained),
            "refreshed_span": self.refreshed_span,
            "challenged_at": self.challenged_at,
            "probation_due": self.probation_due,
            "deploys": list(self.deploys),
            "detections": [_detection_state(d) for d in self._detections],
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
        """Rebuild a monitor saved with :meth:`to_state` (older states lack the newer keys)."""
        m = cls(spec, drift_fn=drift_fn, reference_loader=reference_loader)
        m.version, m.deployed_at, m.baseline = (
            state["version"],
            state["deployed_at"],
            state["baseline"],
        )
        base = state.get("base")
        m.base = (
            Baseline(*base)
            if base
            else (
                Baseline.from_metrics(spec.metric_name, {spec.metric_name: m.baseline})
                if m.baseline is not None
                else None
            )
        )
        m.watermark, m.streak, m.inflight = state["watermark"], state["streak"], state["inflight"]
        m.streak_start = state["streak_start"]
        m.closed_through = -math.inf if state["closed_through"] is None else state["closed_through"]
        m.keys, m.orphans = list(state["keys"]), dict(state["orphans"])
        m.late_rows = state["late_rows"]
        m.sampled_out = state.get("sampled_out", 0)
        m._filed = {float(k): n for k, n in state.get("filed", {}).items()}
        detector = state.get("detector")
        m.detector = OnlineDetector.from_state(detector) if detector else m._new_detector()
        m.suspect, m.change_at = state.get("suspect"), state.get("change_at")
        m.pending = None if state.get("pending") is None else _pending_from(state["pending"])
        m.trained = tuple(state["trained"]) if state.get("trained") else None  # type: ignore[assignment]
        m.refreshed_span = state.get("refreshed_span", 0.0)
        m.challenged_at = state.get("challenged_at")
        m.probation_due = state.get("probation_due", False)
        m.deploys = list(state.get("deploys", []))
        m._detections = [_detection_from(d) for d in state.get("detections", [])]
        for key, saved in state["windows"].items():
            start = float(key)
            m.windows[start] = (
                _window_from(saved)
                if isinstance(saved, dict)
                else [(*r[:6], _features_from(r[6])) for r in saved]  # saved row by row
            )
            for pos, r in enumerate(m.windows[start]):
                slots = cast(list[Any], m._slots.setdefault(r[_RID], []))
                slots.extend([None] * (r[_IDX] + 1 - len(slots)))
                slots[r[_IDX]] = (start, pos)
            m._unlabeled[start] = sum(r[_LABEL] is None for r in m.windows[start])
        m._slots = {rid: tuple(slots) for rid, slots in m._slots.items()}
        return m


def _describe(test: PerfTest) -> str:
    return (
        f"loss {test.loss:.4g} vs {test.baseline_loss:.4g} on {test.n} rows, effect "
        f"{test.effect:+.4g} (min {test.min_effect:.4g}), z {test.z:.2f}, p {test.p_value:.3g}"
    )


def _detection_state(d: Detection) -> dict[str, Any]:
    out = {k: getattr(d, k) for k in d.__dataclass_fields__ if k != "test"}
    out["at"] = d.at.isoformat()
    out["change_point"] = None if d.change_point is None else d.change_point.isoformat()
    out["test"] = None if d.test is None else d.test.as_dict()
    return out


def _detection_from(state: dict[str, Any]) -> Detection:
    s = dict(state)
    s["at"] = datetime.fromisoformat(s["at"])
    s["change_point"] = (
        None if s["change_point"] is None else datetime.fromisoformat(s["change_point"])
    )
    s["test"] = None if s["test"] is None else PerfTest(**s["test"])
    return Detection(**s)


def _pending_state(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "detection": _detection_state(p["detection"])}


def _pending_from(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "detection": _detection_from(p["detection"])}


def _nan_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _draw(request_id: str, i: int, filed: int) -> int:
    """A uniform draw in ``[0, filed)`` for row ``i`` of a request: the same on every replay."""
    digest = hashlib.blake2b(f"{request_id}/{i}/{filed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % filed


_PIECE = 1_000
"""Rows per base64 piece of a saved window's features."""


def _window_state(rows: list[Row]) -> dict[str, Any]:
    """A window's rows as saved, by column: ids, indexes, times and versions as lists;
    predictions and labels as float64 arrays (NaN: none); the features as float64 matrices
    of a thousand rows. All in base64 but the lists: a list per row cost the snapshot most
    of its time (half of drift-check's CPU under captured /v2 load), and JSON numbers cost
    several times more to write and read. Rows of several widths (events whose columns
    differ) keep each row's width (``widths``) and their features end to end."""
    widths = [len(r[_X]) for r in rows]
    uniform = len(set(widths)) <= 1
    pieces = [rows[i : i + _PIECE] for i in range(0, len(rows), _PIECE)]
    state: dict[str, Any] = {
        "ids": [r[_RID] for r in rows],
        "idx": [r[_IDX] for r in rows],
        "t": [r[_T] for r in rows],
        "ver": [r[_VER] for r in rows],
        "pred": _b64(np.array([r[_PRED] for r in rows], dtype=np.float64)),
        "label": _b64(np.array([r[_LABEL] for r in rows], dtype=np.float64)),
        "width": widths[0] if rows and uniform else 0,
        "x": [
            _b64(
                np.array([r[_X] for r in piece], dtype=np.float64)
                if uniform
                else np.concatenate([np.asarray(r[_X], dtype=np.float64) for r in piece])
            )
            for piece in pieces
        ],
    }
    if not uniform:
        state["widths"] = widths
    return state


def _window_from(saved: dict[str, Any]) -> list[Row]:
    """The rows :func:`_window_state` saved (features: read-only views of its pieces)."""
    pred, label = (_unb64(saved[k]).tolist() for k in ("pred", "label"))
    widths = saved.get("widths")
    rows: list[Row] = []
    for piece, x in enumerate(saved["x"]):
        flat, first = _unb64(x), piece * _PIECE
        if widths is None:
            features = list(flat.reshape(min(_PIECE, len(pred) - first), saved["width"]))
        else:
            ends = np.cumsum(widths[first : first + _PIECE]).tolist()
            features = [flat[end - w : end] for w, end in zip(widths[first:], ends, strict=False)]
        for j, f in enumerate(features):
            i = first + j
            y = label[i]
            rows.append(
                (
                    saved["ids"][i],
                    saved["idx"][i],
                    saved["t"][i],
                    saved["ver"][i],
                    pred[i],
                    None if math.isnan(y) else y,
                    f,
                )
            )
    return rows


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.astype("<f8", copy=False).tobytes()).decode()


def _unb64(saved: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(saved), dtype="<f8")


def _features_from(saved: str | list[float | None]) -> np.ndarray:
    """A row's features as states saved before :func:`_window_state` had them: the base64
    of their float64 bytes (before that, a list, NaN as None)."""
    if isinstance(saved, str):
        return _unb64(saved).copy()
    return np.array([math.nan if v is None else v for v in saved], dtype=np.float64)
