"""GET /metrics: runner counters and latencies, inference, drift share and production versions,
parsed with prometheus_client's own text parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from driftline.events import DriftChecked
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.http.app import create_app
from driftline.runtime.platform import Platform
from driftline.runtime.runner import Runner
from driftline.runtime.settings import Settings
from tests.conftest import wait_for
from tests.runtime.http.helpers import MODEL, new_home, publish, trained
from tests.runtime.runner_helpers import echo, request


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def _checked(share: float, drifted: bool, day: int) -> DriftChecked:
    start = datetime(2024, 1, day, tzinfo=UTC)
    return DriftChecked(
        model=MODEL,
        version=1,
        window=start.isoformat(),
        window_start=start,
        window_end=start + timedelta(days=1),
        rows=100 + day,
        drift_share=share,
        drifted=drifted,
    )


def test_metrics_cover_functions_inference_drift_and_versions(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)
    platform = Platform.open(Settings(home=new_home(model, tmp_path / "home", model.v1)))
    runner = Runner(
        platform.bus, [echo], store=platform.store, registry=platform.registry, poll_timeout_s=0.1
    )
    runner.start()
    try:
        with TestClient(
            create_app(platform, ModelServer(platform.store, platform.registry), runner)
        ) as client:
            publish(
                platform.bus,
                [
                    request("ok-1"),
                    request("ok-2"),
                    request("flaky-1"),
                    request("poison-1"),
                    _checked(0.25, False, 1),
                    _checked(0.75, True, 2),
                ],
            )
            good = {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ]
            }
            assert client.post(f"/v2/models/{MODEL}/infer", json=good).status_code == 200
            assert (
                client.post(
                    f"/v2/models/{MODEL}/infer",
                    json={"inputs": [{**good["inputs"][0], "shape": [1, 2]}]},
                ).status_code
                == 400
            )
            assert client.post("/v2/models/nope/infer", json=good).status_code == 404

            fn = (("function", "echo"),)
            wait_for(
                lambda: _samples(client).get(("driftline_function_events_consumed_total", fn)) == 4
            )
            wait_for(lambda: ("driftline_drift_share", (("model", MODEL),)) in _samples(client))
            samples = _samples(client)
    finally:
        runner.stop()
        platform.close()

    assert samples[("driftline_function_events_succeeded_total", fn)] == 3
    assert samples[("driftline_function_events_retried_total", fn)] == 2
    assert samples[("driftline_function_events_dead_lettered_total", fn)] == 1
    assert samples[("driftline_function_handler_seconds_count", fn)] == 4
    assert samples[("driftline_function_handler_seconds_bucket", (*fn, ("le", "+Inf")))] == 4
    assert samples[("driftline_function_handler_seconds_bucket", (*fn, ("le", "600.0")))] == 4
    assert samples[("driftline_model_production_version", (("model", MODEL),))] == 1
    assert samples[("driftline_drift_share", (("model", MODEL),))] == 0.75, "the latest window"
    assert samples[("driftline_drift_window_drifted", (("model", MODEL),))] == 1
    assert samples[("driftline_drift_window_rows", (("model", MODEL),))] == 102
    for code, model_label in (("200", MODEL), ("400", MODEL), ("404", "")):
        assert (
            samples[
                ("driftline_inference_requests_total", (("code", code), ("model", model_label)))
            ]
            == 1
        )
    assert samples[("driftline_inference_seconds_count", (("model", MODEL),))] == 2
