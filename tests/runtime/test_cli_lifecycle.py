"""The model lifecycle end to end on a fresh ``--home`` while ``driftline up`` runs on it:
every command goes through the gateway (``driftline models create``, ``upload``, ``retrain``,
``models register``, ``promote``, ``rollback``), the functions do the rest, and ``/v2``
serves each production version."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from driftline.runtime import Client
from driftline.runtime.cli import main
from driftline.runtime.http.gateway import running_gateway
from tests.runtime.http.helpers import start_up, stop_up
from tests.runtime.lifecycle_helpers import data_file, external_onnx, spec_file

pytestmark = pytest.mark.slow


def _infer(url: str) -> dict[str, object]:
    body = {
        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.5, -1.0, 0.2]}]
    }
    answer = httpx.post(f"{url}/v2/models/synth/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_the_lifecycle_through_the_cli_on_a_running_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    up = start_up(home, "ingest,retrain,register,score", log=tmp_path / "up.log")
    at = ["--home", str(home)]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, *at])
        out = capsys.readouterr()
        return code, out.out, out.err

    try:
        url = running_gateway(home)
        assert url is not None
        assert run("models", "create", str(spec_file(tmp_path)))[0] == 0
        code, out, _ = run("upload", str(data_file(tmp_path)), "--model", "synth")
        assert code == 0 and json.loads(out)["key"].startswith("uploads/synth/")
        with Client(url) as client:
            assert client.wait_for_production("synth", timeout_s=90) == 1
        first = _infer(url)
        assert first["model_version"] == "1"

        code, out, _ = run("retrain", "synth", "--reason", "a test")
        assert code == 0 and json.loads(out)["model"] == "synth"
        with Client(url) as client:
            assert client.wait_for_production("synth", newer_than=1, timeout_s=90) == 2
            assert client.model("synth")["versions"][1]["trigger"] == "manual"

        onnx = external_onnx(tmp_path)
        code, out, err = run(
            "models", "register", "synth", str(onnx), "--metrics", '{"r2": 0.99}', "--promote"
        )
        assert code == 0, err
        assert "registered as v3" in out
        assert _infer(url)["model_version"] == "3"
        wrong = external_onnx(tmp_path, ("x1", "x2"))
        code, _, err = run("models", "register", "synth", str(wrong))
        assert code == 2 and "wrong signature" in err
        code, _, err = run("models", "register", "nope", str(onnx))
        assert code == 2 and "no model named 'nope'" in err
        code, _, err = run("upload", str(onnx), "--model", "synth")
        assert code == 2 and "not a CSV or Parquet" in err

        code, out, _ = run("models", "promote", "synth", "1")
        assert code == 0 and "production 3 -> 1 (promote)" in out
        code, out, _ = run("models", "rollback", "synth")
        assert code == 0 and "production 1 -> 3 (rollback)" in out
        code, out, _ = run("models", "show", "synth")
        shown = json.loads(out)
        assert shown["aliases"]["production"] == 3
        external = shown["versions"][2]
        assert external["trigger"] == "external" and external["metrics"]["r2"] == 0.99
    finally:
        stop_up(up)
