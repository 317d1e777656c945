"""What each dashboard page shows, read from the registry, the gateway's event history
(drift windows, detections, training runs), the runner heartbeats, the function stats and
the dead-letter topics: plain dicts for the templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from driftline.events.models import (
    DriftChecked,
    DriftDetected,
    ModelRegistered,
    ModelTrained,
)
from driftline.runtime.http.history import KEEP, E, History, Scoring
from driftline.runtime.registry import ModelEntry, Registry

SHOW_VERSIONS = 50
"""Versions listed on a model page (the newest); the rest are counted."""
SHOW_HISTORY = 20
"""Deployments and rejections listed on a model page (the newest)."""
SHOW_RUNS = 50
"""Training runs listed on a model page (the newest)."""


def models(registry: Registry, history: History | None) -> list[dict[str, Any]]:
    """One row per model: aliases, counts, its production's last deploy, its last window."""
    rows = []
    for name in registry.models():
        entry = registry.entry(name)
        if entry is None:
            continue
        rows.append(
            {
                "name": name,
                "production": entry.production,
                "previous": entry.previous,
                "versions": len(entry.versions),
                "rejections": len(entry.rejections),
                "since": _served_since(entry),
                "last": _last_window(history, name),
            }
        )
    return rows


def model(entry: ModelEntry, history: History | None) -> dict[str, Any]:
    """A model page: aliases, last window, versions and training runs (newest first),
    drifted windows with their features, costs, deploys, rejections."""
    versions = [entry.versions[v] for v in sorted(entry.versions, reverse=True)]
    weights = importance(entry, history)
    checked = windows(history, entry.name)
    return {
        "name": entry.name,
        "production": entry.production,
        "previous": entry.previous,
        "since": _served_since(entry),
        "last": _last_window(history, entry.name),
        "versions": [_version(v, entry) for v in versions[:SHOW_VERSIONS]],
        "versions_total": len(versions),
        "runs": runs(entry, history)[:SHOW_RUNS],
        "cost": cost(_of(history, ModelTrained, entry.name)),
        "scoring": scoring(history.scoring.get(entry.name) if history is not None else None),
        "drifted": drifted(checked, weights),
        "windows_capped": len(checked) >= KEEP,
        "deployments": list(reversed(entry.deployments))[:SHOW_HISTORY],
        "rejections": list(reversed(entry.rejections))[:SHOW_HISTORY],
    }


def windows(history: History | None, name: str) -> list[DriftChecked]:
    return _of(history, DriftChecked, name)


def detections(history: History | None, name: str) -> list[DriftDetected]:
    return _of(history, DriftDetected, name)


def runs(entry: ModelEntry, history: History | None) -> list[dict[str, Any]]:
    """The model's training runs, newest first (a redelivered one once), each with what
    became of it: registered as a version, rejected at the gate (and why), or neither yet."""
    trained = {t.run_id: t for t in _of(history, ModelTrained, entry.name)}
    registered = {v.run_id: v.version for v in entry.versions.values()}
    rejected = {r.run_id: r.reason for r in entry.rejections}
    return [
        {
            "run": t,
            "metrics": {k: round(m, 4) for k, m in sorted(t.metrics.items())},
            "version": registered.get(t.run_id),
            "rejected": rejected.get(t.run_id),
        }
        for t in reversed(trained.values())
    ]


def importance(entry: ModelEntry, history: History | None) -> dict[int, dict[str, float]]:
    """Each version's permutation importance, from the ``model.trained`` of its run (versions
    whose run is not in the history, or trained before it was measured, have none)."""
    by_run = {
        t.run_id: t.feature_importance
        for t in _of(history, ModelTrained, entry.name)
        if t.feature_importance
    }
    return {v: by_run[r.run_id] for v, r in entry.versions.items() if r.run_id in by_run}


def drifted(
    checked: list[DriftChecked], weights: dict[int, dict[str, float]]
) -> list[dict[str, Any]]:
    """The newest drifted windows (or with a report), each with its drifted features beside
    their importance to the version that served the window, most important first."""
    rows: list[dict[str, Any]] = []
    for w in reversed(checked):
        if not (w.drifted or w.report_key):
            continue
        imp = weights.get(w.version, {})
        names = sorted(w.drifted_features, key=lambda f: -imp.get(f, float("-inf")))
        rows.append({"window": w, "features": [(f, imp.get(f)) for f in names]})
        if len(rows) == SHOW_HISTORY:
            break
    return rows


def features(
    checked: list[DriftChecked], weights: dict[int, dict[str, float]], production: int | None
) -> tuple[DriftChecked | None, int | None, dict[str, float]]:
    """What the features chart draws: the newest window judged feature by feature, with the
    importance of the version that served it; without one, production's importance alone."""
    window = next((w for w in reversed(checked) if w.feature_drift), None)
    version = window.version if window is not None else production
    return window, version, weights.get(version, {}) if version is not None else {}


def scoring(s: Scoring | None) -> dict[str, Any] | None:
    """The score function's handler seconds per 1,000 predictions (None: none measured)."""
    if s is None or s.predictions == 0:
        return None
    return {
        "requests": s.requests,
        "predictions": s.predictions,
        "seconds": s.seconds,
        "per_1000": 1000 * s.seconds / s.predictions,
    }


WEEK_S = 7 * 86_400.0


def cost(trained: list[ModelTrained]) -> dict[str, Any] | None:
    """Compute seconds of the model's training runs seen (a redelivered run once), and what
    retraining every week over the same span of event time would have cost at the same mean
    seconds per run (the alternative a scheduled pipeline offers). None: no run measured."""
    timed = [t for t in {t.run_id: t for t in trained}.values() if t.train_seconds > 0]
    if not timed:
        return None
    seconds = sum(t.train_seconds for t in timed)
    ends = [t.train_end for t in timed if t.train_end is not None]
    weeks = (max(ends) - min(ends)).total_seconds() / WEEK_S if len(ends) > 1 else 0.0
    per_run = seconds / len(timed)
    return {
        "runs": len(timed),
        "seconds": seconds,
        "per_run": per_run,
        "weeks": weeks,
        "weekly_runs": int(weeks) + 1,
        "weekly_seconds": (int(weeks) + 1) * per_run,
    }


def _of(history: History | None, kind: type[E], name: str) -> list[E]:
    return history.of(kind, name) if history is not None else []


def _served_since(entry: ModelEntry) -> datetime | None:
    """Event time from which the production version serves (its latest deploy)."""
    deploys = [d for d in entry.deployments if d.version == entry.production]
    return deploys[-1].effective_time if deploys else None


def _last_window(history: History | None, name: str) -> DriftChecked | None:
    return history.latest.get(name) if history is not None else None


def _version(v: ModelRegistered, entry: ModelEntry) -> dict[str, Any]:
    alias = {entry.production: "production", entry.previous: "previous"}.get(v.version, "")
    return {
        "version": v.version,
        "alias": alias,
        "trigger": v.trigger,
        "parent": v.parent_version,
        "metrics": {k: round(m, 4) for k, m in sorted(v.metrics.items())},
        "train_start": v.train_start,
        "train_end": v.train_end,
        "datasets": v.dataset_versions,
        "gate": v.gate,
        "run_id": v.run_id,
        "sha256": v.sha256,
    }


def platform(runners: Any, runner: Any, dead: list[dict[str, Any]]) -> dict[str, Any]:
    """The platform page: live runners, who serves each function, function stats, the DLQ."""
    from driftline.functions import FUNCTIONS
    from driftline.runtime.cluster.heartbeat import function_report

    known = {f.spec.name: f.spec.gpu for f in FUNCTIONS}  # type: ignore[attr-defined]
    live = runners.runners() if runners is not None else []
    stats = dict(runner.stats) if runner is not None else {}
    return {
        "runners": runners.snapshot() if runners is not None else None,
        "functions": function_report(live, known),
        "stats": {name: _stats(s) for name, s in sorted(stats.items())},
        "dead_letters": dead,
    }


def _stats(s: Any) -> dict[str, Any]:
    calls = sum(s.latency_buckets)
    mean_ms = 1000 * s.handler_seconds / calls if calls else None
    return {**s.as_dict(), "mean_ms": mean_ms}
