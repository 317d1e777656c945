"""The dashboard's charts as plotly figures (JSON-ready dicts that ``Plotly.react`` draws).

The monitoring chart of a model: per closed window, the task metric the served version
scored against that version's baseline (its validation figure), the share of drifted
features on a second axis, each ``drift.detected`` marked at its event time, and deploys
and rollbacks as vertical lines at theirs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from driftline.events.models import DriftChecked, DriftDetected, ModelDeployed
from driftline.runtime.http.history import KEEP


def plotly_js() -> Path:
    """plotly.min.js as installed with the plotly package (what pages load: no CDN)."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly (pip install plotly)")
    return path


DEPLOY_COLOR = {"rollback": "#c0392b"}
"""Line colour per deploy reason (other reasons: green)."""
LABELS = 20
"""Deploys named on the chart at most (the newest, spaced so their names do not overlap)."""
LABEL_GAPS = 12
"""Named deploys are at least 1/LABEL_GAPS of the chart's time span apart."""
MAX_POINTS = 500
"""Windows drawn at most: beyond that, consecutive windows are averaged in equal groups."""
MARKERS = 200
"""Points drawn with markers at most (more: a line only)."""
DENSE = 60
"""Deploys from which their lines are drawn thinner and fainter."""


def monitoring(
    model: str,
    windows: Sequence[DriftChecked],
    detections: Sequence[DriftDetected],
    deploys: Sequence[ModelDeployed],
) -> dict[str, Any]:
    """The monitoring figure of ``model`` (an empty one says so in its title). A long
    history is summarised (:func:`summarise`) and drawn over the windows' span."""
    import plotly.graph_objects as go

    metric = next((w.metric for w in reversed(windows) if w.metric), "metric")
    placed = [d for d in deploys if d.effective_time is not None]
    points, size = summarise(windows)
    span, hold = _span(windows, placed)
    title = f"{model}: {metric} per window" if windows else f"{model}: no window checked yet"
    if size > 1:
        title = f"{model}: {metric}, mean of every {size} windows ({len(windows):,} windows)"
    fig = go.Figure(data=[*_traces(go, points, metric), _detections(go, points, detections)])
    fig.update_layout(
        title=title,
        xaxis={"title": "window end (event time, UTC)", **({"range": span} if hold else {})},
        yaxis={"title": metric, "rangemode": "tozero"},
        yaxis2={
            "title": "drifted share of features",
            "overlaying": "y",
            "side": "right",
            "range": [0, 1],
            "showgrid": False,
        },
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 60, "r": 60, "t": 50, "b": 40},
        height=380,
        shapes=[_deploy_line(d, dense=len(placed) >= DENSE) for d in placed],
        annotations=[_deploy_label(d) for d in _named(placed, span)],
    )
    data: dict[str, Any] = json.loads(fig.to_json())
    return data


def summarise(windows: Sequence[DriftChecked]) -> tuple[list[DriftChecked], int]:
    """At most :data:`MAX_POINTS` points: the windows, or the means of equal groups of
    consecutive ones (metric and drift share averaged, rows summed; the group's last window
    names its version and end). Also returns the group size (1: not summarised)."""
    if len(windows) <= MAX_POINTS:
        return list(windows), 1
    size = math.ceil(len(windows) / MAX_POINTS)
    return [_mean(windows[i : i + size]) for i in range(0, len(windows), size)], size


def _mean(group: Sequence[DriftChecked]) -> DriftChecked:
    def avg(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    return group[-1].model_copy(
        update={
            "window_start": group[0].window_start,
            "rows": sum(w.rows for w in group),
            "labeled_rows": sum(w.labeled_rows for w in group),
            "metric_value": avg([w.metric_value for w in group]),
            "drift_share": avg([w.drift_share for w in group]),
        }
    )


def _span(
    windows: Sequence[DriftChecked], placed: Sequence[ModelDeployed]
) -> tuple[list[datetime] | None, bool]:
    """The chart's time span and whether to hold the x axis to it: when the history was
    cut (:data:`KEEP` windows), from the first window kept, so older deploys fall off the
    left; else from the first window or deploy (plotly's own range). None: nothing placed."""
    times = [d.effective_time for d in placed if d.effective_time is not None]
    if not windows:
        return ([min(times), max(times)] if times else None), False
    cut = len(windows) >= KEEP
    first = windows[0].window_start if cut else min([windows[0].window_start, *times])
    return [first, max([windows[-1].window_end, *times])], cut


def _named(placed: Sequence[ModelDeployed], span: list[datetime] | None) -> list[ModelDeployed]:
    """The deploys whose names fit: the newest first, each at least 1/LABEL_GAPS of the
    span before the last one named, none left of the span, at most LABELS."""
    if span is None:
        return []
    lo, hi = span
    gap = (hi - lo) / LABEL_GAPS
    named: list[ModelDeployed] = []
    for d in reversed(placed):
        when = d.effective_time
        if when is None or when < lo or len(named) == LABELS:
            break
        if not named or named[-1].effective_time - when >= gap:  # type: ignore[operator]
            named.append(d)
    return named[::-1]


def _traces(go: Any, windows: Sequence[DriftChecked], metric: str) -> list[Any]:
    ends = [w.window_end for w in windows]
    return [
        go.Bar(
            x=ends,
            y=[w.drift_share for w in windows],
            name="drift share",
            yaxis="y2",
            marker={"color": "rgba(230,126,34,0.35)"},
        ),
        go.Scatter(
            x=ends,
            y=[w.metric_value for w in windows],
            name=f"{metric} (served version)",
            mode="lines+markers" if len(windows) <= MARKERS else "lines",
            line={"color": "#2471a3"},
            text=[f"v{w.version}, {w.labeled_rows} labeled rows" for w in windows],
        ),
        go.Scatter(
            x=ends,
            y=[w.baseline_metric for w in windows],
            name=f"{metric} baseline (validation)",
            mode="lines",
            line={"color": "#7f8c8d", "dash": "dash", "shape": "hv"},
        ),
    ]


def _detections(
    go: Any, windows: Sequence[DriftChecked], detections: Sequence[DriftDetected]
) -> Any:
    """Crosses at each detection's metric value (at the top of the metric's range for one
    without: a data drift or a scheduled refresh)."""
    top = max((w.metric_value for w in windows if w.metric_value is not None), default=1.0)
    return go.Scatter(
        x=[d.window_end for d in detections],
        y=[top if d.metric_value is None else d.metric_value for d in detections],
        name="drift.detected",
        mode="markers",
        marker={"color": "#c0392b", "size": 12, "symbol": "x"},
        text=[f"{d.cause} ({d.detector}) on v{d.version}" for d in detections],
    )


def _deploy_line(d: ModelDeployed, *, dense: bool = False) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": d.effective_time,
        "x1": d.effective_time,
        "y0": 0,
        "y1": 1,
        "line": {
            "color": DEPLOY_COLOR.get(d.reason, "#27ae60"),
            "dash": "dot",
            "width": 0.75 if dense else 1.5,
        },
        "opacity": 0.5 if dense else 1.0,
    }


def _deploy_label(d: ModelDeployed) -> dict[str, Any]:
    return {
        "x": d.effective_time,
        "xref": "x",
        "y": 1,
        "yref": "paper",
        "yanchor": "bottom",
        "text": f"v{d.version} {d.reason}",
        "showarrow": False,
        "font": {"size": 10, "color": DEPLOY_COLOR.get(d.reason, "#27ae60")},
    }


def features(
    window: DriftChecked | None, version: int | None, importance: dict[str, float], metric: str
) -> dict[str, Any]:
    """Per feature, its permutation importance to ``version`` (bars, most important on top),
    red where ``window`` found it drifted; Evidently's score of each in the hover text."""
    import plotly.graph_objects as go

    names = sorted(importance, key=lambda f: importance[f]) or sorted(
        window.feature_drift if window is not None else []
    )
    drifted = set(window.drifted_features) if window is not None else set()
    scores = window.feature_drift if window is not None else {}
    bars = go.Bar(
        x=[importance.get(f, 0.0) for f in names],
        y=names,
        orientation="h",
        name=f"importance to v{version}",
        marker={"color": [DRIFTED_COLOR if f in drifted else STEADY_COLOR for f in names]},
        text=["drifted" if f in drifted else "" for f in names],
        textposition="auto",
        hovertext=[_drift_note(f, drifted, scores) for f in names],
    )
    if window is not None:
        title = f"window ending {window.window_end:%Y-%m-%d %H:%M}: drifted features in red"
    else:
        title = f"importance to v{version}; no window judged feature by feature yet"
    fig = go.Figure(data=[bars])
    fig.update_layout(
        title=title if importance else f"{title}; v{version} has no importance recorded",
        xaxis={"title": f"permutation importance to v{version} ({metric} worse when shuffled)"},
        yaxis={"automargin": True},
        margin={"l": 60, "r": 30, "t": 50, "b": 50},
        height=max(220, 60 + 28 * len(names)),
        showlegend=False,
    )
    data: dict[str, Any] = json.loads(fig.to_json())
    return data


DRIFTED_COLOR = "#c0392b"
STEADY_COLOR = "#95a5a6"


def _drift_note(name: str, drifted: set[str], scores: dict[str, float]) -> str:
    if name not in scores:
        return f"{name}: not judged in this window"
    verdict = "drifted" if name in drifted else "no drift"
    return f"{name}: {verdict} (Evidently score {scores[name]:.3g})"
