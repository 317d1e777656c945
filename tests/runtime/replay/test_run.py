"""The closed loop on the embedded bus, driven by replay over synthetic streams."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from driftline.runtime.replay.run import _print_table, _requests, replay
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
    assert summary["drift_events"] == 0 and summary["promotions"] == 0
    # a scheduled challenger may retrain (v1 served past a training window); it must lose
    assert summary["retrains"] == summary["challenges"] == summary["rejections"]
    assert summary["versions_served"] == [1]
    assert summary["rows"] == 24 * 28 and summary["rows_not_scored"] == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    report = (tmp_path / "out" / "report.html").read_text()
    assert 'Plotly.newPlot("error"' in report and 'Plotly.newPlot("drift"' in report


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


def test_predictions_parquet_and_the_detections_and_deploys_in_the_summary(
    tmp_path: Path,
) -> None:
    before = frame(24 * 24, seed=2)
    after = frame(24 * 18, seed=3, start="2024-01-25", shift=2.0, coef=6.0)
    df = pd.concat([before, after], ignore_index=True)
    summary = _run(tmp_path, df)
    table = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(table.columns) == ["time", "y", "served", "version", "static"]
    assert str(table["time"].dtype) == "datetime64[ns, UTC]"
    assert all(table[c].dtype == "float64" for c in ("y", "served", "static"))
    assert str(table["version"].dtype) == "Int64"
    assert len(table) == summary["rows"] == len(df) - 24 * 14, "every row after v1's 14 days"
    assert table["time"].is_monotonic_increasing
    replayed = pd.to_datetime(df["ts"], utc=True).iloc[24 * 14 :].reset_index(drop=True)
    assert table["time"].reset_index(drop=True).equals(replayed)
    assert table["y"].to_numpy() == pytest.approx(df["y"].to_numpy()[24 * 14 :])
    registered = {d["version"] for d in summary["deploys"]}
    assert set(table["version"].unique()) <= registered and table["version"].notna().all()
    assert sorted(table["version"].unique()) == summary["versions_served"]
    v1 = table[table["version"] == 1]
    assert len(v1) > 0 and (table["version"] > 1).any()
    assert v1["static"].to_numpy() == pytest.approx(v1["served"].to_numpy(), rel=1e-6)

    assert summary["drift_events"] >= 1
    assert len(summary["detections"]) == summary["drift_events"] + summary["challenges"]
    first = summary["detections"][0]
    assert {"window_end", "cause", "version"} <= set(first) and first["version"] == 1
    assert pd.Timestamp(first["window_end"]) > pd.Timestamp("2024-01-25", tz="UTC")
    deploys = summary["deploys"]
    assert [d["version"] for d in deploys][:2] == [1, 2] and deploys[0]["trigger"] == "initial"
    assert deploys[1]["trigger"].startswith("drift:") and deploys[1]["reason"] == "promotion"
    assert deploys[1]["previous_version"] == 1 and not deploys[1]["redeploy"]
    assert pd.Timestamp(deploys[1]["effective_time"]) <= pd.Timestamp(first["window_end"])
    assert "Detections and deploys" in (tmp_path / "out" / "report.html").read_text()


def test_the_closing_table_keeps_labels_and_values_apart() -> None:
    lines: list[str] = []
    summary = {
        **dict.fromkeys(("retrains", "drift_events", "challenges", "promotions", "rejections"), 3),
        **{"model": "bike-sharing", "metric": "mae", "static": 140.1715, "served": 46.8512},
        **{"rows": 16128, "wall_s": 61.34},
    }
    _print_table(summary, lines.append)
    table = [line for line in lines if line]
    # label column as wide as the longest label, two spaces, values right-aligned
    assert table[1] == "  mae, never retrained (v1)" + "  " + "140.2".rjust(len("bike-sharing"))
    assert table[2] == "  mae, served by the loop  " + "  " + "46.9".rjust(len("bike-sharing"))
    assert "  rows   " in table[-2] and table[-2].endswith(" 16,128")
    assert table[-1].startswith("  wall seconds  ") and table[-1].endswith(" 61.3")
    assert len({len(line) for line in table}) == 1


def test_the_home_folder_keeps_registry_and_models_for_later_commands(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from driftline.runtime.cli import main

    summary = _run(tmp_path, frame(24 * 30, seed=4))
    capsys.readouterr()
    assert main(["models", "list", "--home", str(tmp_path / "home"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {
            "model": "synth",
            "versions": 1,
            "production": 1,
            "previous": None,
            "rejections": summary["rejections"],
        }
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


def test_rows_go_in_requests_of_batch_minutes_from_their_first_row() -> None:
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    times = [t0 + pd.Timedelta(minutes=m) for m in (0, 20, 59, 60, 61, 200)]
    assert _requests(times, 60) == [(0, 3), (3, 5), (5, 6)]
    assert _requests(times, 0) == [(k, k + 1) for k in range(6)]
    assert _requests([], 60) == []
    assert _requests(times, 60, max_rows=2) == [(0, 2), (2, 4), (4, 5), (5, 6)]


def test_a_request_never_spans_two_steps_of_scoring_or_of_labels() -> None:
    """Each row, and its label, goes out in the step it would with a request per row."""
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    times = [t0 + pd.Timedelta(minutes=m) for m in (0, 30, 1430, 1450, 1500, 1530)]
    day, hour = timedelta(hours=24), timedelta(hours=1)
    # 23:50 and 00:10 are within the hour, but scored in two steps
    assert _requests(times, 60) == [(0, 2), (2, 4), (4, 6)]
    assert _requests(times, 60, step=day, delay=day) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert _requests(times, 60, step=day, delay=hour) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    # 04:50 and 05:10 are scored in one step of six hours, labeled an hour later in two
    six = timedelta(hours=6)
    later = [t0 + pd.Timedelta(minutes=m) for m in (0, 30, 290, 310, 330)]
    assert _requests(later, 60, step=six, delay=hour) == [(0, 2), (2, 3), (3, 5)]
