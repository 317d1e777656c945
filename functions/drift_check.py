"""drift-check: windows of scored rows per model, judged against the production version.

Feeds a :class:`~driftline.functions.ml.monitor.DriftMonitor` per model with scored rows
(each at its own time when the request carried ``row_times``, else at its event time),
late labels, deploys and rejections. Every closed window gives ``drift.checked`` with its
figures; a window that passes every guard also gives ``drift.detected`` and Evidently's
HTML report in the store (several megabytes each, so other windows keep only figures).

Labeled rows also become feedback data (``feedback/<model>/...parquet``, written when a
window closes), which retrain learns from beside the ingested datasets.

State, per model: the monitor (open windows with their rows and labels, streak, guards),
the scored rows waiting for labels and the feedback not written yet. The runner calls
:func:`save_changed` after each batch, once its outputs are sent and before its offsets are
committed, so a restarted runner (or a replica that takes the partition over) finds every
committed input in the saved state; inputs after it come again and are deduplicated by
request id. A batch of scored rows and labels is saved as a journal of those inputs, whose
size is the batch's; the whole state is saved when a window closes, on a detection, deploy
or rejection, and when the journal outgrows it (:mod:`.drift_state`). Each write takes the
next number of the model's journal only if it is still free (fencing): a replica that
stalled while another took its partitions over cannot overwrite the newer state; its save
fails, it commits nothing and rejoins.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from driftline.events import (
    DriftChecked,
    DriftDetected,
    Event,
    LabelsReceived,
    Matrix,
    ModelDeployed,
    ModelRejected,
    RowTimes,
    ScoreCompleted,
)
from driftline.events.models import id_runs
from driftline.functions import drift_state
from driftline.functions.drift_state import Labeled, Log, Record, Scored
from driftline.functions.ml.drift_stats import ColumnDrift, column_drift, html_report
from driftline.functions.ml.layout import get_table, load_spec, put_table
from driftline.functions.ml.monitor import Detection, DriftMonitor, WindowResult
from driftline.functions.ml.spec import TIME, ModelSpec
from driftline.runtime.context import Context
from driftline.runtime.errors import RetryableError
from driftline.runtime.function import function

_MAX_UNLABELED = 200_000
Waiting = tuple[Any, np.ndarray, np.ndarray | None]
"""A scored request waiting for labels: its event time, its rows (float64, a row each) and
each row's time (int64 microseconds; None: every row is at the event time). A tuple of
arrays, which the garbage collector does not track (there may be 200,000 of them)."""


@dataclass
class _Model:
    spec: ModelSpec
    monitor: DriftMonitor
    scored: OrderedDict[str, Waiting] = field(default_factory=OrderedDict)
    """Scored requests waiting for labels."""
    early: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    """Labels that arrived before their scored rows."""
    feedback: list[dict[str, Any]] = field(default_factory=list)
    held: int = 0
    """Feedback rows at the end of ``feedback`` that the next write leaves for the one after:
    rows of a request labeled after the label that closed a window or made a detection
    (with a request per row, they would have come after that write)."""
    log: Log | None = None
    """Where the saved state stands (None: not saved or read yet)."""
    journal: list[Record] = field(default_factory=list)
    """Inputs applied since the last save, in order."""
    whole: bool = False
    """Whether the next save must be the whole state (a change the journal cannot redo)."""
    changed: bool = False
    """Whether anything above changed since the last save."""

    def apply(self, record: Record) -> list[WindowResult]:
        """Apply a scored request or labels, and journal it. A record that fails half-way
        leaves a state its replay might not rebuild: the next save is whole."""
        self.journal.append(record)
        try:
            return self.replay(record)
        except BaseException:
            self.whole = True
            raise

    def replay(self, record: Record) -> list[WindowResult]:
        """Apply a record (live, or from the journal after a restart)."""
        if isinstance(record, Labeled):
            results = self.monitor.label(record.request_id, record.labels)
            _join_labels(self, record)
            return results
        if record.row_ids is not None:
            return self._replay_requests(record)
        at, rows = cast(Any, record.at), cast(Any, record.rows)  # a Matrix iterates by rows
        results = self.monitor.observe(
            record.request_id,
            record.version,
            at,
            rows,
            record.predictions,
            row_times=None if record.row_times is None else record.row_times.seconds().tolist(),
        )
        times = None if record.row_times is None else record.row_times.micros
        _remember(self, record.request_id, record.event_time, record.rows.array, times)
        return results

    def _replay_requests(self, record: Scored) -> list[WindowResult]:
        """A record of several requests' rows: each request in turn, as if it had come alone
        (at its first row's time, when rows have times)."""
        assert record.row_ids is not None
        array, preds, times = record.rows.array, record.predictions, record.row_times
        seconds = None if times is None else times.seconds().tolist()
        firsts = None if times is None else times.datetimes()
        results: list[WindowResult] = []
        for rid, start, end in id_runs(record.row_ids):
            first = None if firsts is None else firsts[start]
            results.extend(
                self.monitor.observe(
                    rid,
                    record.version,
                    cast(Any, first or record.at),
                    cast(Any, array[start:end]),
                    preds[start:end],
                    row_times=None if seconds is None else seconds[start:end],
                )
            )
            part_times = None if times is None else times.micros[start:end]
            _remember(self, rid, first or record.event_time, array[start:end], part_times)
        return results

    def to_state(self) -> dict[str, Any]:
        return {
            **self.monitor.to_state(),
            "waiting": _waiting_state(self.scored),
            "early": [[rid, labels] for rid, labels in self.early.items()],
            "feedback": [{**row, TIME: _iso(row[TIME])} for row in self.feedback],
        }

    @classmethod
    def from_state(cls, spec: ModelSpec, state: dict[str, Any], loader: Any) -> _Model:
        m = cls(spec, DriftMonitor.from_state(spec, state, reference_loader=loader))
        m.scored = (
            _waiting_from(state["waiting"])
            if "waiting" in state
            else OrderedDict((saved[0], _scored_from(saved)) for saved in state.get("scored", []))
        )
        m.early = OrderedDict((rid, labels) for rid, labels in state.get("early", []))
        m.feedback = [{**row, TIME: _time(row[TIME])} for row in state.get("feedback", [])]
        return m


_CHUNK = 1_000
_NONE = np.empty(0, dtype="<i8")


def _waiting_state(scored: Mapping[str, Waiting]) -> dict[str, Any]:
    """The requests waiting for labels, by column: ids, event times, row counts, whether
    each has row times, then every request's features (and row times) as one float64 (and
    int64) array in base64, a piece per thousand requests. A list per request cost about 8
    µs each to build, and a snapshot of 40,000 took a third of a second."""
    entries = list(scored.values())
    width = entries[0][1].shape[1] if entries else 0
    features, micros = [], []
    for i in range(0, len(entries), _CHUNK):
        part = entries[i : i + _CHUNK]
        features.append(_packed(np.concatenate([e[1].reshape(-1) for e in part]), "<f8"))
        micros.append(
            _packed(np.concatenate([e[2] for e in part if e[2] is not None] + [_NONE]), "<i8")
        )
    return {
        "ids": list(scored),
        "at": [_iso(e[0]) for e in entries],
        "rows": [len(e[1]) for e in entries],
        "timed": [e[2] is not None for e in entries],
        "width": width,
        "features": features,
        "micros": micros,
    }


def _packed(array: np.ndarray, dtype: str) -> str:
    return drift_state.b64(array.astype(dtype, copy=False).tobytes())


def _waiting_from(saved: dict[str, Any]) -> OrderedDict[str, Waiting]:
    """The requests :func:`_waiting_state` saved, each with views of its piece's arrays."""
    out: OrderedDict[str, Waiting] = OrderedDict()
    ids, at, counts, timed, width = (saved[k] for k in ("ids", "at", "rows", "timed", "width"))
    for piece, start in enumerate(range(0, len(ids), _CHUNK)):
        flat = np.frombuffer(base64.b64decode(saved["features"][piece]), dtype="<f8")
        features = flat.reshape(-1, width) if width else flat.reshape(0, 0)
        micros = np.frombuffer(base64.b64decode(saved["micros"][piece]), dtype="<i8")
        row = tick = 0
        for i in range(start, min(start + _CHUNK, len(ids))):
            n = counts[i]
            times = None
            if timed[i]:
                times, tick = micros[tick : tick + n], tick + n
            out[ids[i]] = (_time(at[i]), features[row : row + n], times)
            row += n
    return out


def _scored_from(saved: list[Any]) -> Waiting:
    """A scored request as states saved before :func:`_waiting_state` had it (before that,
    with no row times)."""
    times = RowTimes.from_bytes(base64.b64decode(saved[3])).micros if len(saved) > 3 else None
    rows = saved[2]  # matrix bytes in base64 (before those: lists, NaN as None)
    matrix = Matrix.from_bytes(base64.b64decode(rows)) if isinstance(rows, str) else Matrix(rows)
    return _time(saved[1]), matrix.array, times


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):  # pd.Timestamp too; its isoformat keeps nanoseconds
        return value.isoformat()
    return None if value is None else pd.Timestamp(value).isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class Monitors:
    """A monitor and a feedback buffer per model, restored from the store on first use."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.models: dict[str, _Model] = {}

    def get(self, model: str) -> _Model:
        if model not in self.models:
            self.models[model] = self._restore(model)
        return self.models[model]

    def _restore(self, model: str) -> _Model:
        """The newest snapshot, with the journal after it replayed."""
        spec = load_spec(self.ctx.store, model)
        loader = lambda v: self._reference(model, v)  # noqa: E731
        saved = drift_state.load(self.ctx.store, model)
        m = (
            _Model(spec, DriftMonitor(spec, reference_loader=loader))
            if saved.state is None
            else _Model.from_state(spec, saved.state, loader)
        )
        for record in saved.records:
            m.replay(record)
        m.log, m.held = saved.log, 0
        return m

    def _reference(self, model: str, version: int) -> pd.DataFrame | None:
        registered = (
            self.ctx.registry.version(model, version) if self.ctx.registry is not None else None
        )
        return None if registered is None else get_table(self.ctx.store, registered.reference_key)


def _monitors(ctx: Context) -> Monitors:
    return Monitors(ctx)


def save_changed(ctx: Context) -> None:
    """The checkpoint: save what a batch changed, per model: its journal of inputs, or the
    whole state when one is due. Each write takes the model's next journal number only if
    nobody took it since this process read or wrote the one before (fencing): a replica that
    stalled past its group's timeouts, while another took its partitions over and moved the
    state on, gets :class:`StaleWriteError` instead of overwriting the new owner's state.
    The runner then commits nothing, drops this process's state and rejoins (see
    ``Runner``)."""
    monitors: Monitors = ctx.state
    for m in monitors.models.values():
        if m.changed:
            _save(ctx, m)


def _save(ctx: Context, m: _Model) -> None:
    log = m.log or Log(m.spec.name)
    if m.whole or log.snapshot_due():
        log.write_snapshot(ctx.store, m.to_state())
    else:
        log.write_delta(ctx.store, m.journal)
    m.log, m.journal, m.whole, m.changed = log, [], False, False


@function(
    subscribes=("score.completed", "labels.received", "model.deployed", "model.rejected"),
    emits=("drift.checked", "drift.detected"),
    init=_monitors,
    checkpoint=save_changed,
    timeout_s=300,
)
def drift_check(
    event: ScoreCompleted | LabelsReceived | ModelDeployed | ModelRejected, ctx: Context
) -> list[Event]:
    m = ctx.state.get(event.model)
    m.changed = True
    if isinstance(event, ModelDeployed | ModelRejected):
        m.whole = True
        if isinstance(event, ModelDeployed):
            _deployed(ctx, m, event)
        else:
            m.monitor.rejected(event.run_id)
        return []
    results = m.apply(_record(event, ctx))
    detections = m.monitor.take_detections()
    if results or detections:
        m.whole = True  # windows closed or a detection: the journal cannot redo the outputs
        _write_feedback(ctx, m)  # a retrain reads the feedback: write it before it is asked for
    m.held = 0
    out: list[Event] = []
    for result in results:
        out.extend(_verdict(ctx, m, result))
    out.extend(_detected(m, d) for d in detections)
    return out


def _record(event: ScoreCompleted | LabelsReceived, ctx: Context) -> Record:
    if isinstance(event, LabelsReceived):
        return Labeled(event.request_id, event.labels)
    return Scored(
        event.request_id,
        event.version,
        event.event_time or ctx.event_time,
        event.event_time,
        event.rows,
        event.predictions,
        event.row_times,
        event.row_ids,
    )


def _deployed(ctx: Context, m: _Model, event: ModelDeployed) -> None:
    registry = ctx.registry
    ok = registry is not None and registry.wait_for(
        lambda r: r.version(event.model, event.version), 10.0
    )
    if not ok:
        raise RetryableError(
            f"model {event.model} v{event.version} deployed but not yet in the registry view"
        )
    version = registry.version(event.model, event.version)
    trained = (
        (version.train_start, version.train_end)
        if version.train_start and version.train_end
        else None
    )
    m.monitor.deployed(
        event.version,
        at=event.effective_time or ctx.event_time or datetime.now(UTC),
        metrics=version.metrics,
        reference=get_table(ctx.store, version.reference_key),
        trained=trained,
        probation=event.reason == "promotion" and event.previous_version is not None,
    )


def _remember(
    m: _Model, request_id: str, event_time: Any, rows: np.ndarray, times: np.ndarray | None
) -> None:
    """A scored request waits for its labels (see :data:`Waiting`); labels that came first
    make it feedback at once."""
    labels = m.early.pop(request_id, None)
    if labels is not None:
        _add_feedback(m, event_time, rows, times, labels)
        return
    m.scored[request_id] = (event_time, rows, times)
    if len(m.scored) > _MAX_UNLABELED:
        m.scored.popitem(last=False)


def _join_labels(m: _Model, event: Labeled) -> None:
    found = m.scored.pop(event.request_id, None)
    if found is None:  # the label overtook its scored rows: hold it (bounded)
        m.early[event.request_id] = event.labels
        if len(m.early) > _MAX_UNLABELED:
            m.early.popitem(last=False)
        return
    added = _add_feedback(m, *found, event.labels)
    acted = m.monitor.acted_after
    m.held = 0 if acted is None else max(0, added - (acted + 1))


def _add_feedback(
    m: _Model, when: Any, rows: np.ndarray, times: np.ndarray | None, labels: list[float]
) -> int:
    """Labeled rows as feedback, each at its own time (int64 microseconds; None: at
    ``when``); returns how many."""
    at = RowTimes(times).datetimes() if times is not None else [when] * len(labels)
    before = len(m.feedback)
    for row, label, t in zip(rows, labels, at, strict=False):  # short labels label fewer rows
        m.feedback.append(
            {**dict(zip(m.spec.feature_names, row, strict=True)), m.spec.target: label, TIME: t}
        )
    return len(m.feedback) - before


def _verdict(ctx: Context, m: _Model, r: WindowResult) -> list[Event]:
    t = r.test
    figures = {
        "window": r.window,
        "version": r.version,
        "rows": r.rows,
        "labeled rows": r.labeled_rows,
        "decision": r.reason,
        "drift share": r.drift_share,
        "metric": r.metric,
        "metric value": r.metric_value,
        "baseline metric": r.baseline_metric,
        **(
            {}
            if t is None
            else {
                "loss": t.loss,
                "baseline loss": t.baseline_loss,
                "effect": t.effect,
                "min effect": t.min_effect,
                "z": t.z,
                "p-value": t.p_value,
            }
        ),
        "online detector": r.detector,
    }
    report_key = None
    # Only windows that trigger a retrain get the (megabytes) HTML report: on seasonal data
    # most windows drift a little, and their figures are already in drift.checked.
    if r.detect and r.current is not None and r.version is not None:
        reference = ctx.state._reference(m.spec.name, r.version)
        if reference is not None:
            report_key = f"reports/{m.spec.name}/v{r.version}/{r.start:%Y%m%dT%H%M}.html"
            html = html_report(
                reference,
                r.current,
                m.spec.feature_names,
                drift_share=m.spec.drift.drift_share,
                figures=figures,
            )
            ctx.store.put(report_key, html, "text/html")
    checked = DriftChecked(
        model=m.spec.name,
        version=r.version or 0,
        window=r.window,
        window_start=r.start,
        window_end=r.end,
        rows=r.rows,
        labeled_rows=r.labeled_rows,
        drift_share=r.drift_share,
        metric=r.metric,
        metric_value=r.metric_value,
        baseline_metric=r.baseline_metric,
        drifted=r.drifted,
        cause=r.cause,
        detected=r.detect,
        report_key=report_key,
        loss=None if t is None else t.loss,
        baseline_loss=None if t is None else t.baseline_loss,
        effect=None if t is None else t.effect,
        min_effect=None if t is None else t.min_effect,
        z=None if t is None else _finite(t.z),
        p_value=None if t is None else t.p_value,
        detector=r.detector,
        probation=r.probation,
        reason=r.reason,
        **_features(ctx, m, r),
    )
    ctx.log.info("%s window %s: %s", m.spec.name, r.window, r.reason)
    return [checked] if r.detection is None else [checked, _detected(m, r.detection)]


def _detected(m: _Model, d: Detection) -> DriftDetected:
    return DriftDetected(
        model=m.spec.name,
        version=d.version,
        cause=d.cause,
        window=d.window,
        window_end=d.at,
        drift_share=d.drift_share,
        metric_value=d.metric_value,
        idempotency_key=d.idempotency_key,
        change_point=d.change_point,
        detector=d.by,
    )


def _features(ctx: Context, m: _Model, r: WindowResult) -> dict[str, Any]:
    """The window's drift feature by feature: from the data drift check when it judged them
    (the data drifted), else judged here for a window that drifted on its performance."""
    per = getattr(r.drift, "per_column", None) or {}
    if not per and r.drifted and r.current is not None and r.version is not None:
        reference = ctx.state._reference(m.spec.name, r.version)
        if reference is not None:
            p = m.spec.drift
            per = column_drift(
                reference,
                r.current,
                m.spec.feature_names,
                method=p.stattest,
                threshold=p.stattest_threshold,
            )
    return feature_drift(per)


def feature_drift(per: Mapping[str, ColumnDrift]) -> dict[str, Any]:
    """``drift.checked``'s drifted features and each feature's score (a score that is not a
    number is left out)."""
    return {
        "drifted_features": [c for c, d in per.items() if d.drifted],
        "feature_drift": {c: d.score for c, d in per.items() if math.isfinite(d.score)},
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_feedback(ctx: Context, m: _Model) -> None:
    ready, m.held = len(m.feedback) - m.held, 0
    if ready <= 0:
        return
    frame = pd.DataFrame(m.feedback[:ready])
    first = pd.Timestamp(frame[TIME].min())
    put_table(
        ctx.store, f"feedback/{m.spec.name}/{first:%Y%m%dT%H%M%S}-{len(frame)}.parquet", frame
    )
    m.feedback = m.feedback[ready:]
