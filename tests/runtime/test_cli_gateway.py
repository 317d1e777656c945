"""Commands in a second terminal while ``driftline up`` holds the embedded home.

The embedded bus serves one process; ``up`` writes ``<home>/gateway.json`` and the other
commands on that home go through its HTTP API instead of being refused.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from driftline.runtime.cli import main
from driftline.runtime.http.gateway import ADDRESS_FILE
from tests.functions.synthetic import frame
from tests.runtime.http.helpers import FEATURES, MODEL, new_home, start_up, trained

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_models_publish_status_and_dlq_go_through_a_running_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    up = start_up(home, "none")
    try:
        assert main(["models", "list", "--home", str(home), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        label = {"model": "bikes", "request_id": "r-1", "labels": [3.0]}
        args = ["publish", "labels.received", "--data", json.dumps(label), "--home", str(home)]
        assert main(args) == 0
        assert len(capsys.readouterr().out.strip()) == 36, "the published event's id"
        bad = ["publish", "labels.received", "--data", "{}", "--home", str(home)]
        assert main(bad) == 2 and "request_id" in capsys.readouterr().err
        assert main(["models", "show", "nope", "--home", str(home)]) == 2
        assert "404" in capsys.readouterr().err
        assert main(["status", "--home", str(home), "--expect", ""]) == 0
        assert "runners" in json.loads(capsys.readouterr().out)
        assert main(["dlq", "list", "--home", str(home), "--wait", "0.3", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main(["dlq", "replay", "--home", str(home), "--wait", "0.3"]) == 0
        assert "replayed 0 dead-lettered event(s)" in capsys.readouterr().out
        # without the address file the same command meets the held bus, as before
        (home / ADDRESS_FILE).rename(home / "elsewhere.json")
        assert main(["models", "list", "--home", str(home)]) == 2
        assert "in use by another process" in capsys.readouterr().err
        (home / "elsewhere.json").rename(home / ADDRESS_FILE)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
        assert up.stdout is not None
        up.stdout.close()
    assert not (home / ADDRESS_FILE).exists(), "up removes its address when it stops"


def test_driftline_score_through_a_running_up_and_on_its_own(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batch scoring from the CLI: through the batch function of a running ``up`` (the file
    goes into the store, the predictions come back), and in-process once it has stopped;
    both give the same predictions."""
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path / "home", model.v1)
    data = tmp_path / "rows.csv"
    frame(200, seed=11)[FEATURES].to_csv(data, index=False)
    up = start_up(home, "batch")
    try:
        via = tmp_path / "via-up.parquet"
        args = ["score", MODEL, str(data), "--out", str(via), "--home", str(home)]
        assert main([*args, "--timeout", "60"]) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert (summary["status"], summary["scored"], summary["version"]) == ("succeeded", 200, 1)
        assert main(["score", "nope", str(data), "--out", str(via), "--home", str(home)]) == 2
        assert "no model named 'nope'" in capsys.readouterr().err
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
        assert up.stdout is not None
        up.stdout.close()
    alone = tmp_path / "alone.parquet"
    args = ["score", MODEL, str(data), "--out", str(alone), "--home", str(home), "--quiet"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["scored"] == 200
    a, b = pd.read_parquet(via), pd.read_parquet(alone)
    assert a["row"].tolist() == list(range(200)) and a.equals(b)
