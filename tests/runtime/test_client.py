"""``driftline.runtime.Client`` against a running ``driftline up`` with an API token: the
lifecycle over HTTP, writes refused without the token, bad input answered 4xx naming why."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.runtime import Client, ClientError
from driftline.runtime.http.gateway import running_gateway
from tests.functions.synthetic import SPEC_TOML
from tests.runtime.http.helpers import start_up, stop_up
from tests.runtime.lifecycle_helpers import data_file, external_onnx, spec_file

pytestmark = pytest.mark.slow
TOKEN = "lifecycle-t0ken"


def test_the_lifecycle_through_the_python_client(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"DRIFTLINE_API_TOKEN": TOKEN}
    up = start_up(home, "ingest,retrain,register,score", log=tmp_path / "up.log", env=env)
    try:
        url = running_gateway(home)
        assert url is not None
        with Client(url, token="") as anonymous, pytest.raises(ClientError) as refused:
            anonymous.create_model(spec_file(tmp_path))
        assert refused.value.status == 401
        with Client(url, token=TOKEN) as dl:
            created = dl.create_model(SPEC_TOML)
            assert (created["model"], created["spec_version"]) == ("synth", 1)
            with pytest.raises(ClientError) as bad:
                dl.create_model(SPEC_TOML.replace('target = "y"', "target = 3"))
            assert bad.value.status == 422 and "target" in bad.value.problem["error"]
            dl.upload(data_file(tmp_path), model="synth")
            assert dl.wait_for_production("synth", timeout_s=90) == 1

            retrain = dl.retrain("synth", reason="from the client")
            assert retrain["model"] == "synth"
            assert dl.wait_for_production("synth", newer_than=1, timeout_s=90) == 2

            run = dl.register("synth", external_onnx(tmp_path), metrics={"r2": 0.9})
            outcome = dl.wait_for_run("synth", run["run_id"], timeout_s=60)
            assert outcome["version"] == 3 and outcome["trigger"] == "external"
            assert dl.model("synth")["aliases"]["production"] == 2, "registered, not promoted"
            assert dl.promote("synth", 3)["version"] == 3
            # the promotion is an event: roll back once the gateway's registry view has it
            assert dl.wait_for_production("synth", newer_than=2, timeout_s=30) == 3
            assert dl.rollback("synth")["version"] == 2

            with pytest.raises(ClientError) as wrong:
                dl.register("synth", external_onnx(tmp_path, ("x1", "x2")))
            assert wrong.value.status == 422
            assert "wrong signature" in wrong.value.problem["error"]
            with pytest.raises(ClientError) as corrupt:
                dl.register("synth", b"not onnx")
            assert corrupt.value.status == 422 and "not a loadable ONNX" in str(corrupt.value)
            with pytest.raises(ClientError) as unknown:
                dl.retrain("nope")
            assert unknown.value.status == 404 and unknown.value.problem["reason"] == (
                "unknown_model"
            )
    finally:
        stop_up(up)
