"""The closed loop on the embedded bus, driven by replay over synthetic streams."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from driftline.runtime.replay import replay
from driftline.runtime.settings import Settings
from tests.functions.synthetic import SPEC_TOML, frame

pytestmark = pytest.mark.slow


def _write(tmp_path: Path, df: pd.DataFrame) -> tuple[Path, Path]:
    data, spec = tmp_path / "data.csv", tmp_path / "synth.toml"
    df.to_csv(data, index=False)
    spec.write_text(SPEC_TOML)
    return data, spec


def _run(tmp_path: Path, df: pd.DataFrame) -> dict:  # type: ignore[type-arg]
    data, spec = _write(tmp_path, df)
    return replay(data, spec, Settings(home=tmp_path / "home"), out=tmp_path / "out", progress=False)


def test_a_stationary_stream_raises_no_drift(tmp_path: Path) -> None:
    summary = _run(tmp_path, frame(24 * 42, seed=1))
    assert summary["dead_lettered"] == 0
    assert summary["windows_checked"] >= 8, "every closed window was judged"
    assert summary["drift_events"] == 0 and summary["retrains"] == 0
    assert summary["versions_served"] == [1]
    assert summary["rows"] == 24 * 28 and summary["rows_not_scored"] == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()


def test_a_shift_is_detected_retrained_deployed_and_served(tmp_path: Path) -> None:
    before = frame(24 * 24, seed=2)
    # from day 24 on, x1 moves and its effect on y doubles: data and concept drift at once
    after = frame(24 * 18, seed=3, start="2024-01-25", shift=2.0, coef=6.0)
    summary = _run(tmp_path, pd.concat([before, after], ignore_index=True))
    assert summary["dead_lettered"] == 0
    assert summary["drift_events"] >= 1 and summary["retrains"] >= 1
    assert summary["promotions"] >= 1
    assert max(summary["versions_served"]) >= 2, "scoring moved to the retrained version"
    assert summary["served"] < summary["static"], "the loop beats the model it started with"
