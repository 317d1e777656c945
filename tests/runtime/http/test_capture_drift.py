"""HTTP traffic is monitored like bus traffic: a shifted stream scored on /v2, with its labels
published later by request id, leads to drift.detected, a retrain and a new version that
/v2 then serves."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from driftline.events import Codec
from driftline.functions import FUNCTIONS
from driftline.functions.ml.layout import get_table
from driftline.functions.ml.serving import ModelServer
from driftline.functions.ml.spec import TIME
from driftline.runtime.http.app import create_app
from driftline.runtime.platform import Platform
from driftline.runtime.runner import Runner
from driftline.runtime.settings import Settings
from tests.functions.synthetic import frame
from tests.runtime.http.helpers import FEATURES, MODEL, new_home, trained
from tests.runtime.runner_helpers import read_all

pytestmark = pytest.mark.slow


def test_a_shifted_http_stream_leads_to_drift_a_retrain_and_a_new_version(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)  # v1 learned y = 3 x1 - 2 x2 + x3 + 10 up to 2024-01-14
    platform = Platform.open(
        Settings(home=new_home(model, tmp_path / "home", model.v1), capture_rate=1.0)
    )
    for info in list(platform.store.list(f"datasets/{MODEL}/")):  # only v1's data, no v2's
        if info.key.endswith(".parquet") and get_table(platform.store, info.key)[TIME].max() > (
            pd.Timestamp("2024-01-15", tz="UTC")
        ):
            platform.store.delete(info.key)
    loop = [f for f in FUNCTIONS if f.spec.name in ("drift-check", "retrain", "register")]  # type: ignore[attr-defined]
    runner = Runner(
        platform.bus, loop, store=platform.store, registry=platform.registry, poll_timeout_s=0.2
    )
    shifted = frame(24 * 12, start="2024-01-15", seed=21, coef=-3.0)  # the relation to x1 flips
    try:
        runner.start()
        app = create_app(platform, ModelServer(platform.store, platform.registry))
        with TestClient(app) as client:
            for i, row in shifted.iterrows():
                answer = client.post(
                    f"/v2/models/{MODEL}/infer",
                    json={
                        "id": f"h-{i}",
                        "parameters": {"event_time": row["ts"]},
                        "inputs": [
                            {
                                "name": "input",
                                "shape": [1, 3],
                                "datatype": "FP64",
                                "data": [float(row[f]) for f in FEATURES],
                            }
                        ],
                    },
                )
                assert answer.status_code == 200, answer.text
                label = {"model": MODEL, "request_id": f"h-{i}", "labels": [float(row["y"])]}
                sent = client.post("/v1/events/labels.received", json=label)
                assert sent.status_code == 202, sent.text
                time.sleep(0.002)  # let the capture thread keep up (its queue would drop)
            deadline = time.monotonic() + 180
            while platform.registry.production(MODEL).version == 1:
                assert time.monotonic() < deadline, "no new version from the HTTP stream"
                time.sleep(0.5)
            new = platform.registry.production(MODEL).version
            last_days = shifted.tail(72)
            body = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [len(last_days), 3],
                        "datatype": "FP64",
                        "data": last_days[FEATURES].to_numpy().tolist(),
                    }
                ]
            }
            served = client.post(f"/v2/models/{MODEL}/infer", json=body)
            old = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=body)
            assert app.state.capture.counts["dropped"] == 0
        detected = [
            Codec().decode(r.value, r.headers).data
            for r in read_all(platform.bus, "drift.detected", 1, timeout_s=5)
        ]

    finally:
        runner.stop()
        platform.close()
    assert detected and detected[0].version == 1 and detected[0].cause == "performance"
    assert new >= 2 and served.json()["model_version"] == str(new)
    # the new version learned the flipped relation: far closer than v1 on the last three days
    y = last_days["y"].to_numpy()
    mae = {
        name: float(np.mean(np.abs(np.array(a.json()["outputs"][0]["data"]) - y)))
        for name, a in (("new", served), ("v1", old))
    }
    assert mae["new"] < mae["v1"] / 2, mae
