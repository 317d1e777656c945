"""The replay's HTML report: the error of the served predictions against v1 never
retrained, week by week, with deploys marked; the dashboard's monitoring chart (metric
per window against the baseline, drift share, detections, deploys); detections and
deploys in time; drifted windows with links to their Evidently reports.

Charts are plotly figures; plotly.js (from the installed plotly package) is written into
the page, so the single file opens anywhere, with no network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.runtime.http.ui.charts import monitoring, plotly_js

SERVED, STATIC, DEPLOY = "#2471a3", "#c0392b", "#27ae60"


def _weekly_error(r: dict[str, Any]) -> pd.DataFrame:
    """Mean absolute error per week of event time, served and v1 never retrained."""
    frame = pd.DataFrame(
        {"t": r["times"], "y": r["y"], "served": r["served"], "static": r["static"]}
    ).set_index("t")
    weekly = frame.resample("7D")
    return pd.DataFrame(
        {
            col: weekly.apply(
                lambda g, c=col: float(np.nanmean(np.abs(g[c] - g["y"]))) if len(g) else np.nan
            )
            for col in ("served", "static")
        }
    )


def _error_figure(r: dict[str, Any]) -> dict[str, Any]:
    import plotly.graph_objects as go

    target = r["spec"].target
    err = _weekly_error(r)
    fig = go.Figure()
    fig.add_scatter(x=err.index, y=err["served"], name="served by the loop", line_color=SERVED)
    fig.add_scatter(x=err.index, y=err["static"], name="v1 never retrained", line_color=STATIC)
    top = float(np.nanmax([err["served"].max(), err["static"].max(), 1.0]))
    for i, d in enumerate(x for x in r["deployed"] if x.effective_time is not None):
        fig.add_scatter(
            x=[d.effective_time, d.effective_time],
            y=[0, top],
            mode="lines",
            line={"color": DEPLOY, "dash": "dot", "width": 1},
            name="deploys",
            legendgroup="deploys",
            showlegend=i == 0,
            hovertext=f"v{d.version} {d.reason}",
            hoverinfo="text+x",
        )
    fig.update_layout(
        title=f"Weekly mean absolute error of {target}",
        xaxis_title="week starting (event time, UTC)",
        yaxis_title=f"mean |prediction − {target}| (units of {target})",
        yaxis_rangemode="tozero",
        legend={"orientation": "h", "y": -0.3},
        height=400,
    )
    data: dict[str, Any] = json.loads(fig.to_json())
    return data


def _chart(div_id: str, figure: dict[str, Any]) -> str:
    """A div and the call that draws ``figure`` into it (plotly.js is in the page's head)."""
    spec = json.dumps(figure).replace("</", "<\\/")
    return (
        f'<div id="{div_id}" class="chart"></div><script>(function(){{const f={spec};'
        f'Plotly.newPlot("{div_id}",f.data,f.layout,{{displaylogo:false}});}})();</script>'
    )


def _windows_table(r: dict[str, Any]) -> str:
    rows = []
    store = r["store"]
    for c in sorted(r["checked"], key=lambda c: c.window_end):
        if not c.drifted:
            continue
        link = (
            f'<a href="{html.escape(store.uri(c.report_key))}">report</a>' if c.report_key else ""
        )
        rows.append(
            f"<tr><td>{c.window_start:%Y-%m-%d}</td><td>v{c.version}</td><td>{c.cause or ''}</td>"
            f"<td>{'' if c.drift_share is None else f'{c.drift_share:.2f}'}</td>"
            f"<td>{'' if c.metric_value is None else f'{c.metric_value:.1f}'}</td>"
            f"<td>{'yes' if c.detected else 'no'}</td><td>{link}</td></tr>"
        )
    head = "<tr><th>window</th><th>version</th><th>cause</th><th>drift share</th><th>metric</th><th>detected</th><th></th></tr>"
    return f"<h2>Drifted windows</h2><table>{head}{''.join(rows)}</table>"


def _history_table(r: dict[str, Any]) -> str:
    """Detections and deploys side by side in time, for reading delays off the page."""
    s = r["summary"]
    rows = [
        (d["window_end"], "drift.detected", f"v{d['version']}", d["cause"])
        for d in s.get("detections", [])
    ] + [
        (
            d["effective_time"] or "",
            "rollback" if d["reason"] == "rollback" else "redeploy" if d["redeploy"] else "deploy",
            f"v{d['version']}",
            d["trigger"] or "",
        )
        for d in s.get("deploys", [])
    ]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in sorted(rows)
    )
    head = "<tr><th>event time</th><th>what</th><th>version</th><th>cause / trigger</th></tr>"
    return f"<h2>Detections and deploys</h2><table>{head}{cells}</table>"


def write_report(path: Path, r: dict[str, Any], settings: Any) -> None:
    s = r["summary"]
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in s.items()
        if k not in ("detections", "deploys")
    )
    rejected = "".join(f"<li>{html.escape(x.reason)}</li>" for x in r["rejected"])
    drift = monitoring(s["model"], r["checked"], r.get("detected", []), r["deployed"])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Driftline replay</title>"
        f"<script>{plotly_js().read_text()}</script>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        ".chart{max-width:1100px}</style></head><body>"
        f"<h1>Driftline replay: {html.escape(s['model'])}</h1><table>{facts}</table>"
        f"<h2>Served error over time</h2>{_chart('error', _error_figure(r))}"
        f"<h2>Metric and drift per window</h2>{_chart('drift', drift)}"
        f"{_history_table(r)}{_windows_table(r)}"
        f"<h2>Rejected candidates</h2><ul>{rejected or '<li>none</li>'}</ul></body></html>"
    )
    path.write_text(page)
