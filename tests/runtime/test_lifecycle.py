"""The model lifecycle with nothing running: each command opens the home itself, checks its
input (bad input exits 2, naming what was wrong) and leaves its file or event for the
functions (``driftline.runtime.lifecycle`` and ``driftline.runtime.cli.lifecycle``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from driftline.events import Codec
from driftline.functions.ml.layout import put_table
from driftline.functions.ml.spec import validate_frame
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cli import main
from driftline.runtime.store import LocalStore
from tests.functions.synthetic import SPEC_TOML, frame, spec
from tests.runtime.lifecycle_helpers import data_file, external_onnx, spec_file
from tests.runtime.runner_helpers import read_all


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_validates_saves_and_versions_a_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    path = spec_file(tmp_path)
    code, out, _ = _run(capsys, "models", "create", str(path), "--home", home)
    assert code == 0 and json.loads(out) == {
        "model": "synth",
        "spec_version": 1,
        "changed": True,
        "key": "specs/synth.toml",
    }
    code, out, _ = _run(capsys, "models", "create", str(path), "--home", home)
    assert code == 0 and json.loads(out)["changed"] is False, "the same spec is no new version"
    spec_file(tmp_path, SPEC_TOML.replace("alpha = 1.0", "alpha = 2.0"))
    code, out, _ = _run(capsys, "models", "create", str(path), "--home", home)
    assert code == 0 and json.loads(out)["spec_version"] == 2
    store = LocalStore(tmp_path / "home" / "store")
    assert "alpha = 2.0" in store.get("specs/synth.toml").decode()
    assert "alpha = 1.0" in store.get("spec-history/synth/v1.toml").decode()
    spec_file(tmp_path, SPEC_TOML.replace('features = ["x1", "x2", "x3"]', ""))
    code, _, err = _run(capsys, "models", "create", str(path), "--home", home)
    assert code == 2 and "features" in err
    code, _, err = _run(capsys, "models", "create", str(tmp_path / "nope.toml"), "--home", home)
    assert code == 2 and "no file" in err


def test_upload_and_retrain_leave_their_work_for_the_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    assert main(["models", "create", str(spec_file(tmp_path)), "--home", home]) == 0
    capsys.readouterr()
    data = data_file(tmp_path, 48)
    code, out, _ = _run(capsys, "upload", str(data), "--model", "synth", "--home", home)
    key = json.loads(out)["key"]
    assert code == 0 and key.startswith("uploads/synth/") and key.endswith("-train.csv")
    store = LocalStore(tmp_path / "home" / "store")
    assert store.get(key) == data.read_bytes()
    code, out, _ = _run(
        capsys, "upload", str(data), "--model", "synth", "--kind", "feedback", "--home", home
    )
    assert code == 0 and json.loads(out)["key"].startswith("uploads/synth/feedback/")
    code, _, err = _run(capsys, "upload", str(data), "--model", "nope", "--home", home)
    assert code == 2 and "no model named 'nope'" in err and "models create" in err
    text = tmp_path / "notes.txt"
    text.write_text("x")
    code, _, err = _run(capsys, "upload", str(text), "--model", "synth", "--home", home)
    assert code == 2 and "not a CSV or Parquet" in err

    code, out, _ = _run(capsys, "retrain", "synth", "--reason", "why not", "--home", home)
    assert code == 0
    assert _run(capsys, "retrain", "nope", "--home", home)[0] == 2
    bus = EmbeddedBus(tmp_path / "home" / "bus.db")
    try:
        [record] = read_all(bus, "retrain.requested", 1, timeout_s=5)
    finally:
        bus.close()
    event = Codec().decode(record.value, record.headers).data
    assert (event.model, event.reason, event.requested_by) == ("synth", "why not", "cli")


def test_register_checks_an_external_onnx_and_publishes_it_for_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    assert main(["models", "create", str(spec_file(tmp_path)), "--home", home]) == 0
    capsys.readouterr()
    good = str(external_onnx(tmp_path))
    code, _, err = _run(capsys, "models", "register", "synth", good, "--home", home)
    assert code == 2 and "no labeled rows" in err, "nothing to gate on yet"
    rows, _ = validate_frame(spec(), frame(24 * 7))
    put_table(LocalStore(tmp_path / "home" / "store"), "datasets/synth/d1.parquet", rows)

    wrong = str(external_onnx(tmp_path, ("x1", "x2")))
    code, _, err = _run(capsys, "models", "register", "synth", wrong, "--home", home)
    assert code == 2 and "wrong signature" in err and "expected [N, 3]" in err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a model at all")
    code, _, err = _run(capsys, "models", "register", "synth", str(corrupt), "--home", home)
    assert code == 2 and "not a loadable ONNX file" in err
    code, _, err = _run(capsys, "models", "register", "nope", good, "--home", home)
    assert code == 2 and "no model named 'nope'" in err
    bad_metrics = ["--metrics", "[1, 2]"]
    code, _, err = _run(capsys, "models", "register", "synth", good, *bad_metrics, "--home", home)
    assert code == 2 and "--metrics" in err

    args = ["models", "register", "synth", good, "--metrics", '{"r2": 0.9}', "--promote"]
    code, out, _ = _run(capsys, *args, "--home", home)
    assert code == 0
    run_id = json.loads(out)["run_id"]
    bus = EmbeddedBus(tmp_path / "home" / "bus.db")
    try:
        [record] = read_all(bus, "model.trained", 1, timeout_s=5)
    finally:
        bus.close()
    trained = Codec().decode(record.value, record.headers).data
    assert (trained.run_id, trained.trigger, trained.promote, trained.force) == (
        run_id,
        "external",
        True,
        False,
    )
    assert trained.metrics["r2"] == 0.9 and trained.metrics["mae"] < 1.0, "measured, and given"
    store = LocalStore(tmp_path / "home" / "store")
    assert store.exists(trained.artifact_key) and store.exists(trained.holdout_key)
    assert trained.sha256 == hashlib.sha256(Path(good).read_bytes()).hexdigest()
