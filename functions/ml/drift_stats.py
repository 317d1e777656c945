"""Data drift between a reference sample and a current window, computed by Evidently 0.7.

:func:`data_drift` runs only Evidently's ``DriftedColumnsCount`` metric (about 0.1-0.25 s a
window; the full ``DataDriftPreset`` costs about 2 s) and, for a drifted window, the
per-column ``ValueDrift`` scores (:func:`column_drift` alone, for a window that drifted on
its performance). :func:`html_report` renders the full preset, meant for
drifted windows only (a report is megabytes).

Evidently picks the test per column: with a reference of at most 1,000 rows, K-S for
numeric columns (chi-square or Z for five values or fewer); above that, normed Wasserstein
distance (Jensen-Shannon for few values). Evidently takes seconds to import, so it is
imported on first use, once per process.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from driftline.runtime.errors import ValidationError


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column."""

    method: str
    """Test or distance used (e.g. ``K-S p_value``, ``Wasserstein distance (normed)``)."""
    score: float
    """p-value (drift when below threshold) or distance (drift when at or above)."""
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Data drift of one window against a reference."""

    share: float
    """Share of columns whose distribution drifted."""
    count: int
    """Number of drifted columns."""
    n_columns: int
    drifted: bool
    """Whether ``share`` reached the policy's drift share."""
    per_column: dict[str, ColumnDrift] = field(default_factory=dict)
    """Per-column verdicts; filled for drifted windows (or when asked for)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "share": self.share,
            "count": self.count,
            "n_columns": self.n_columns,
            "drifted": self.drifted,
            "per_column": {c: vars(d) for c, d in self.per_column.items()},
        }


@functools.cache
def _evidently() -> SimpleNamespace:
    import evidently
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import DataDriftPreset

    return SimpleNamespace(
        Report=evidently.Report,
        Dataset=evidently.Dataset,
        DataDefinition=evidently.DataDefinition,
        DriftedColumnsCount=DriftedColumnsCount,
        ValueDrift=ValueDrift,
        DataDriftPreset=DataDriftPreset,
    )


def _run(
    metrics: list[Any], reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]
) -> Any:
    ev = _evidently()
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise ValidationError(
            f"drift check: columns {missing} missing from the reference or the window"
        )
    if len(reference) < 2 or len(current) < 2:
        raise ValidationError(
            f"drift check: need at least 2 rows on each side (reference {len(reference)}, window {len(current)})"
        )
    definition = ev.DataDefinition(numerical_columns=columns)
    cur = ev.Dataset.from_pandas(
        current[columns].reset_index(drop=True), data_definition=definition
    )
    ref = ev.Dataset.from_pandas(
        reference[columns].reset_index(drop=True), data_definition=definition
    )
    # Constant columns (a week without holidays) are normal; Evidently's correlation step then
    # divides by a zero deviation, which only matters to a correlation we do not read.
    with np.errstate(divide="ignore", invalid="ignore"):
        return ev.Report(metrics).run(cur, ref)  # Evidently takes the current data first


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    drift_share: float = 0.5,
    *,
    method: str | None = None,
    threshold: float | None = None,
    per_column: bool | None = None,
) -> DriftResult:
    """Share of ``columns`` that drifted from ``reference`` to ``current``.

    ``per_column``: True always adds per-column scores (about 0.06 s a column), False never,
    None (default) only when the window drifted.
    """
    ev, cols = _evidently(), list(columns)
    count_metric = ev.DriftedColumnsCount(
        columns=cols, drift_share=drift_share, method=method, threshold=threshold
    )
    snapshot = _run([count_metric], reference, current, cols)
    value = snapshot.dict()["metrics"][0]["value"]
    share, count = float(value["share"]), int(value["count"])
    drifted = share >= drift_share
    details = (
        _per_column(reference, current, cols, method, threshold)
        if per_column or (per_column is None and drifted)
        else {}
    )
    return DriftResult(
        share=share, count=count, n_columns=len(cols), drifted=drifted, per_column=details
    )


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    method: str | None = None,
    threshold: float | None = None,
) -> dict[str, ColumnDrift]:
    """Evidently's verdict on each of ``columns`` (about 0.06 s a column): for a window that
    drifted on its performance while its data, taken as a whole, did not."""
    return _per_column(reference, current, list(columns), method, threshold)


def _per_column(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    method: str | None,
    threshold: float | None,
) -> dict[str, ColumnDrift]:
    ev = _evidently()
    metrics = [ev.ValueDrift(column=c, method=method, threshold=threshold) for c in columns]
    snapshot = _run(metrics, reference, current, columns)
    out: dict[str, ColumnDrift] = {}
    for entry in snapshot.dict()["metrics"]:
        config, score = entry["config"], float(entry["value"])
        name, threshold = _display_name(str(config["method"])), float(config["threshold"])
        # Evidently: p-values drift below the threshold, distances at or above it.
        drifted = score < threshold if "p_value" in name else score >= threshold
        out[config["column"]] = ColumnDrift(name, score, threshold, drifted)
    return out


def _display_name(method: str) -> str:
    """Evidently reports a chosen method by its short name (``ks``), an automatic one by its
    display name (``K-S p_value``); the display name tells p-values from distances."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    try:
        return str(get_registered_stattest(method, ColumnType.Numerical).display_name)
    except Exception:  # already a display name, or a method Evidently does not register
        return method


def html_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    path: str | Path | None = None,
    *,
    drift_share: float = 0.5,
    figures: Mapping[str, Any] | None = None,
) -> bytes:
    """Evidently's full data-drift report as standalone HTML (written to ``path`` if given),
    headed by ``figures`` (what the drift decision used) as a table when given.

    About 2 s and several megabytes: meant for drifted windows only.
    """
    ev, cols = _evidently(), list(columns)
    snapshot = _run(
        [ev.DataDriftPreset(columns=cols, drift_share=drift_share)], reference, current, cols
    )
    text = snapshot.get_html_str(as_iframe=False)
    if figures:
        text = _with_figures(text, figures)
    html = text.encode("utf-8")
    if path is not None:
        Path(path).write_bytes(html)
    return html


def _with_figures(html_text: str, figures: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in figures.items()
    )
    head = (
        "<section style='font-family:sans-serif;margin:1em'><h2>Driftline decision</h2>"
        f"<table>{rows}</table></section>"
    )
    at = html_text.find("<body")
    at = html_text.find(">", at) + 1 if at >= 0 else 0
    return html_text[:at] + head + html_text[at:]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
