"""The replay's HTML report: error over time with deploy markers, drift share per window,
and links to the Evidently reports of drifted windows. Plain HTML and inline SVG."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

W, H, PAD = 900, 260, 40


def _scale(
    values: list[float], lo: float, hi: float, size: float, flip: bool = False
) -> list[float]:
    span = (hi - lo) or 1.0
    return [(size - (v - lo) / span * size) if flip else (v - lo) / span * size for v in values]


def _polyline(xs: list[float], ys: list[float], color: str) -> str:
    pts = " ".join(
        f"{x + PAD:.1f},{y + 10:.1f}" for x, y in zip(xs, ys, strict=True) if not np.isnan(y)
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'


def _error_chart(r: dict[str, Any]) -> str:
    spec = r["spec"]
    frame = pd.DataFrame(
        {"t": r["times"], "y": r["y"], "served": r["served"], "static": r["static"]}
    )
    weekly = frame.set_index("t").resample("7D")

    def err(col):
        return weekly.apply(
            lambda g: float(np.nanmean(np.abs(g[col] - g["y"]))) if len(g) else np.nan
        )

    served, static = err("served"), err("static")
    t0, t1 = frame["t"].min(), frame["t"].max()
    span = (t1 - t0).total_seconds() or 1.0
    xs = [((t - t0).total_seconds() / span) * (W - 2 * PAD) for t in served.index]
    top = float(np.nanmax([served.max(), static.max(), 1.0]))
    svg = [f'<svg width="{W}" height="{H}" role="img" aria-label="error over time">']
    svg.append(_polyline(xs, _scale(list(static.values), 0, top, H - 50, True), "#c0392b"))
    svg.append(_polyline(xs, _scale(list(served.values), 0, top, H - 50, True), "#2471a3"))
    for d in r["deployed"]:
        if d.effective_time is None:
            continue
        x = ((pd.Timestamp(d.effective_time) - t0).total_seconds() / span) * (W - 2 * PAD) + PAD
        if PAD <= x <= W - PAD:
            svg.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="10" y2="{H - 40}" stroke="#27ae60" '
                f'stroke-dasharray="3,3"><title>v{d.version} deployed</title></line>'
            )
    svg.append(f'<text x="{PAD}" y="{H - 15}" font-size="12">{t0:%Y-%m-%d}</text>')
    svg.append(f'<text x="{W - PAD - 70}" y="{H - 15}" font-size="12">{t1:%Y-%m-%d}</text>')
    svg.append(f'<text x="4" y="20" font-size="12">{top:.0f}</text></svg>')
    return (
        f"<h2>Weekly mean absolute error of {html.escape(spec.target)}</h2>"
        '<p><span style="color:#2471a3">served by the loop</span> · '
        '<span style="color:#c0392b">v1 never retrained</span> · '
        '<span style="color:#27ae60">deploys</span></p>' + "".join(svg)
    )


def _drift_chart(r: dict[str, Any]) -> str:
    checked = sorted(r["checked"], key=lambda c: c.window_end)
    if not checked:
        return "<p>No drift windows closed.</p>"
    shares = [c.drift_share if c.drift_share is not None else np.nan for c in checked]
    xs = _scale(list(range(len(checked))), 0, max(1, len(checked) - 1), W - 2 * PAD)
    bars = []
    for x, share, c in zip(xs, shares, checked, strict=True):
        h = 0 if np.isnan(share) else share * (H - 60)
        color = "#c0392b" if c.detected else ("#e67e22" if c.drifted else "#95a5a6")
        bars.append(
            f'<rect x="{x + PAD:.1f}" y="{H - 40 - h:.1f}" width="4" height="{h:.1f}" fill="{color}">'
            f"<title>{c.window_start:%Y-%m-%d}: share {share:.2f}, {c.metric} {c.metric_value}</title></rect>"
        )
    return (
        "<h2>Data drift share per window</h2><p>grey: no drift · orange: drifted · red: drift.detected</p>"
        f'<svg width="{W}" height="{H}">{"".join(bars)}</svg>'
    )


def _windows_table(r: dict[str, Any], settings: Any) -> str:
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
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Driftline replay</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Driftline replay: {html.escape(s['model'])}</h1><table>{facts}</table>"
        f"{_error_chart(r)}{_drift_chart(r)}{_history_table(r)}{_windows_table(r, settings)}"
        f"<h2>Rejected candidates</h2><ul>{rejected or '<li>none</li>'}</ul></body></html>"
    )
    path.write_text(page)
