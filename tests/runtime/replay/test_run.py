"""The closed loop on the embedded bus, driven by replay over synthetic streams."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from driftline.runtime.replay.run import replay
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
    return replay(
        data, spec, Settings(home=tmp_path / "home"), out=tmp_path / "out", progress=False
    )


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


def test_the_home_folder_keeps_registry_and_models_for_later_commands(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from driftline.runtime.cli import main

    _run(tmp_path, frame(24 * 30, seed=4))
    capsys.readouterr()
    assert main(["models", "list", "--home", str(tmp_path / "home"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {"model": "synth", "versions": 1, "production": 1, "previous": None, "rejections": 0}
    ]
    assert main(["models", "show", "synth", "--home", str(tmp_path / "home")]) == 0
    shown = json.loads(capsys.readouterr().out)
    v1 = shown["versions"][0]
    assert v1["trigger"] == "initial" and len(v1["sha256"]) == 64
    assert (tmp_path / "home" / "store" / v1["artifact_key"]).exists()
    assert main(["models", "show", "nope", "--home", str(tmp_path / "home")]) == 2
    capsys.readouterr()
    # a second replay into the same home would start from a model that is already trained
    data, spec = tmp_path / "data.csv", tmp_path / "synth.toml"
    assert (
        main(
            [
                "replay",
                str(data),
                "--spec",
                str(spec),
                "--home",
                str(tmp_path / "home"),
                "--out",
                str(tmp_path / "out2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "model 'synth' already has version(s) [1]" in capsys.readouterr().err
    assert main(["models", "list", "--home", str(tmp_path / "home"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == listed, "the refused replay changed nothing"
