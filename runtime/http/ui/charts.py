"""The dashboard's charts as plotly figures (JSON-ready dicts that ``Plotly.react`` draws).

The monitoring chart of a model: per closed window, the task metric the served version
scored against that version's baseline (its validation figure), the share of drifted
features on a second axis, each ``drift.detected`` marked at its event time, and deploys
and rollbacks as vertical lines at theirs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from driftline.events.models import DriftChecked, DriftDetected, ModelDeployed


def plotly_js() -> Path:
    """plotly.min.js as installed with the plotly package (what pages load: no CDN)."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly (pip install plotly)")
    return path


DEPLOY_COLOR = {"rollback": "#c0392b"}
"""Line colour per deploy reason (other reasons: green)."""
LABELS = 20
"""Deploys named on the chart (the newest; older ones are lines only)."""


def monitoring(
    model: str,
    windows: Sequence[DriftChecked],
    detections: Sequence[DriftDetected],
    deploys: Sequence[ModelDeployed],
) -> dict[str, Any]:
    """The monitoring figure of ``model`` (an empty one says so in its title)."""
    import plotly.graph_objects as go

    metric = next((w.metric for w in reversed(windows) if w.metric), "metric")
    placed = [d for d in deploys if d.effective_time is not None]
    fig = go.Figure(data=[*_traces(go, windows, metric), _detections(go, windows, detections)])
    fig.update_layout(
        title=f"{model}: {metric} per window" if windows else f"{model}: no window checked yet",
        xaxis={"title": "window end (event time, UTC)"},
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
        shapes=[_deploy_line(d) for d in placed],
        annotations=[_deploy_label(d) for d in placed[-LABELS:]],
    )
    data: dict[str, Any] = json.loads(fig.to_json())
    return data


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
            mode="lines+markers",
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


def _deploy_line(d: ModelDeployed) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": d.effective_time,
        "x1": d.effective_time,
        "y0": 0,
        "y1": 1,
        "line": {"color": DEPLOY_COLOR.get(d.reason, "#27ae60"), "dash": "dot", "width": 1.5},
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
