"""Open Inference Protocol (KServe v2) scoring, against models trained by the real functions.

A real V2 client nobody here wrote (``tritonclient[http]``) talks to ``driftline up`` run as
a command; a bounded load runs through a hot swap; the protocol's error answers say why.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from driftline.events import Event, Matrix, ScoreRequested
from driftline.functions.ml.serving import ModelServer, Served
from driftline.functions.score import score
from driftline.runtime.context import Context
from driftline.runtime.http.app import create_app
from driftline.runtime.http.capture import Capture
from driftline.runtime.platform import Platform
from driftline.runtime.registry import Registry
from driftline.runtime.settings import Settings
from driftline.runtime.store import LocalStore
from tests.runtime.http.helpers import (
    FEATURES,
    MODEL,
    free_port,
    live,
    new_home,
    publish,
    trained,
)
from tests.runtime.runner_helpers import read_all, read_requests

ROWS = np.array([[1.5, 0.0, 0.5], [-1.0, 2.0, 0.125], [0.25, -0.75, 0.875]], dtype=np.float32)


def _score_function(home: Path, events: list[Event]) -> np.ndarray:
    """What the score function itself answers for ROWS."""
    store, registry = LocalStore(home / "store"), Registry()
    for event in events:
        registry.apply(event)
    ctx = Context(function="score", store=store, registry=registry)
    ctx.state = ModelServer(store, registry)
    done = score(
        ScoreRequested(
            model=MODEL, request_id="r", columns=FEATURES, rows=Matrix(ROWS.astype(float))
        ),
        ctx,
    )
    assert done is not None
    return np.array(done.predictions)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("driftline up never became ready")


@pytest.mark.slow
def test_tritonclient_against_driftline_up(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path / "home", model.v1)
    expected = _score_function(home, model.v1)
    port, env = free_port(), {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_HEARTBEAT_INTERVAL_S"] = "1"  # drift-check's child reports its counters
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.runtime.cli",
            "up",
            "--home",
            str(home),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            assert (
                client.is_server_live()
                and client.is_server_ready()
                and client.is_model_ready(MODEL)
            )
            assert client.get_server_metadata()["name"] == "driftline"
            meta = client.get_model_metadata(MODEL)
            assert meta["versions"] == ["1"]
            assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
            assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]

            binary = triton.InferInput("input", list(ROWS.shape), "FP32")
            binary.set_data_from_numpy(ROWS)  # the binary tensor extension, tritonclient's default
            result = client.infer(MODEL, [binary])
            assert result.get_response()["model_version"] == "1"
            assert np.array_equal(result.as_numpy("predict"), expected), (
                "the score function's answer"
            )

            as_json = triton.InferInput("input", list(ROWS.shape), "FP32")
            as_json.set_data_from_numpy(ROWS, binary_data=False)
            wanted = [triton.InferRequestedOutput("predict", binary_data=False)]
            result = client.infer(
                MODEL, [as_json], outputs=wanted, model_version="1", request_id="req-7"
            )
            assert result.get_response()["id"] == "req-7"
            assert np.array_equal(result.as_numpy("predict"), expected)
        finally:
            client.close()

        # the functions run in the same process, but for drift-check, which runs in a child
        # process (DRIFTLINE_MONITOR_PROCESS) on the same embedded bus and whose counters
        # reach this /metrics in its heartbeats: an event published over HTTP gets scored,
        # and drift-check consumes what scoring it published
        sent = httpx.post(
            f"{url}/v1/events/score.requested",
            json={
                "model": MODEL,
                "request_id": "via-http",
                "columns": FEATURES,
                "rows": ROWS.tolist(),
            },
        )
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 20
        while (
            _metric(
                text := httpx.get(f"{url}/metrics").text,
                "function_events_consumed_total",
                'function="drift-check"',
            )
            < 2
        ):  # model.deployed, then the score.completed
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert _metric(text, "function_events_succeeded_total", 'function="score"') == 2
        assert _metric(text, "model_production_version", 'model="synth"') == 1
        assert _metric(text, "inference_requests_total", 'code="200",model="synth"') == 2

        # the process announces itself: GET /v1/runners lists it with what it serves (the
        # view shows the newest beat it has read: an earlier one may predate score's start)
        deadline = time.monotonic() + 20
        while True:
            listed = httpx.get(f"{url}/v1/runners").json()
            serving = {f for r in listed["runners"] for f in r["serves"]}
            if {"score", "drift-check"} <= serving:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.2)
        [me] = [r for r in listed["runners"] if r["pid"] == proc.pid]
        [monitor] = [r for r in listed["runners"] if r["pid"] != proc.pid]
        assert "score" in me["serves"] and me["capabilities"]["cpu_cores"] >= 1
        assert "drift-check" not in me["serves"] and monitor["serves"] == ["drift-check"]
        assert monitor["stats"]["drift-check"]["consumed"] >= 2
        assert {f["function"] for f in listed["functions"] if f["serveable"]} >= {
            "ingest",
            "score",
            "drift-check",
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            output = proc.stdout.read().decode() if proc.stdout else ""
            if proc.stdout:
                proc.stdout.close()
    assert code == 0, output
    assert f"driftline up: http://127.0.0.1:{port}" in output


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^driftline_{name}{{{re.escape(labels)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


@pytest.mark.slow
def test_hot_swap_under_load_fails_no_request(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)
    platform = Platform.open(
        Settings(home=new_home(model, tmp_path / "home", model.v1), capture_rate=1.0)
    )
    body = {
        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1.5, 0.0, 0.5]}]
    }
    results: list[tuple[float, float, int, str | None]] = []
    served: dict[str, str] = {}
    """Request id (generated by the gateway, returned in the answer) -> version that served it."""
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                started = time.monotonic()
                answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
                version = (
                    answer.json().get("model_version") if answer.status_code == 200 else answer.text
                )
                if answer.status_code == 200:
                    served[answer.json()["id"]] = answer.json()["model_version"]
                results.append((started, time.monotonic(), answer.status_code, version))

    try:
        with live(create_app(platform, ModelServer(platform.store, platform.registry))) as url:
            threads = [threading.Thread(target=load, args=(url,)) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.8)
            publish(platform.bus, model.v2)  # model.registered + model.deployed of v2
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and not any(r[3] == "2" for r in results[-20:]):
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(10)
        # the app has stopped: its capture queue was published before it did
        captured = read_requests(platform.bus, len(served))
    finally:
        stop.set()
        platform.close()
    # every request served was captured once, naming the version that really served it
    assert sorted(c.request_id for c in captured) == sorted(served)
    assert all(str(c.version) == served[c.request_id] for c in captured)
    assert all(c.columns == FEATURES and c.rows.array.shape == (1, 3) for c in captured)
    failed = [r for r in results if r[2] != 200]
    assert not failed, failed[:5]
    swapped_at = min(end for _, end, _, version in results if version == "2")
    assert {v for _, _, _, v in results} == {"1", "2"}
    assert all(v == "2" for start, _, _, v in results if start > swapped_at), (
        "no request goes back to v1"
    )
    assert len(results) > 100


@pytest.fixture(scope="module")
def v2_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model = trained(tmp_path_factory)
    home = tmp_path_factory.mktemp("v2") / "home"
    platform = Platform.open(Settings(home=new_home(model, home, model.v1 + model.v2)))
    try:
        with TestClient(
            create_app(platform, ModelServer(platform.store, platform.registry))
        ) as client:
            yield client
    finally:
        platform.close()


def _infer(
    client: TestClient, inputs: list[dict], path: str = f"/v2/models/{MODEL}/infer"
) -> httpx.Response:  # type: ignore[type-arg]
    return client.post(path, json={"inputs": inputs})


def test_per_feature_inputs_and_pinned_versions(v2_app: TestClient) -> None:
    one = _infer(
        v2_app, [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [[1.0, 0.0, 0.5]]}]
    )
    assert one.status_code == 200 and one.json()["model_version"] == "2"
    named = _infer(
        v2_app,
        [
            {"name": f, "shape": [1], "datatype": "FP32", "data": [v]}
            for f, v in zip(["x3", "x1", "x2"], [0.5, 1.0, 0.0], strict=True)
        ],
    )
    assert named.json()["outputs"][0]["data"] == one.json()["outputs"][0]["data"]
    old = _infer(
        v2_app,
        [{"name": "input", "shape": [3], "datatype": "FP32", "data": [1.0, 0.0, 0.5]}],
        f"/v2/models/{MODEL}/versions/1/infer",
    )
    assert old.status_code == 200 and old.json()["model_version"] == "1"
    assert old.json()["outputs"][0]["data"] != one.json()["outputs"][0]["data"]
    assert v2_app.get(f"/v2/models/{MODEL}/versions/1/ready").json()["ready"] is True
    assert v2_app.get(f"/v2/models/{MODEL}").json()["versions"] == ["1", "2"]


@pytest.mark.parametrize(
    ("inputs", "status", "says"),
    [
        (
            [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}],
            400,
            "takes [N, 3]",
        ),
        (
            [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}],
            400,
            "needs 6 values",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}],
            400,
            "datatype BYTES",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": ["a", 1, 2]}],
            400,
            "not FP32 values",
        ),
        ([{"name": "input", "shape": [1, 3], "datatype": "FP32"}], 400, "no data"),
        ([{"name": "input", "datatype": "FP32", "data": [1, 2, 3]}], 400, "inputs.0.shape"),
        ([], 400, "inputs"),
        (
            [{"name": "input", "shape": [-1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}],
            400,
            "negative dimension",
        ),
        (
            [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}],
            400,
            "the model has no input(s) ['features']",
        ),
    ],
)
def test_infer_errors_say_why(v2_app: TestClient, inputs: list, status: int, says: str) -> None:  # type: ignore[type-arg]
    answer = _infer(v2_app, inputs)
    assert answer.status_code == status and says in answer.json()["error"], answer.json()


def test_malformed_json_is_400_with_an_error_body(v2_app: TestClient) -> None:
    answer = v2_app.post(
        f"/v2/models/{MODEL}/infer",
        content=b'{"inputs": [',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("the inference request is not JSON")


def test_an_unexpected_failure_is_a_500_problem_and_counted_as_one(
    v2_app: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault nobody mapped (here onnxruntime failing mid-run, injected) answers a logged
    500 problem, is counted as a 500 (not as the 200 it would have been), and the next
    request is served."""
    good = [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 0.0, 0.5]}]

    def failing(self: Served, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("onnxruntime: the session failed")

    def errors() -> float:
        return _metric(
            v2_app.get("/metrics").text, "inference_requests_total", f'code="500",model="{MODEL}"'
        )

    before = max(errors(), 0.0)
    behind_a_proxy = TestClient(v2_app.app, root_path="/api")  # uvicorn --root-path /api
    with monkeypatch.context() as patch:
        patch.setattr(Served, "predict", failing)
        answers = [
            _infer(v2_app, good),
            _infer(behind_a_proxy, good, f"/api/v2/models/{MODEL}/infer"),
        ]
    for answer in answers:
        assert answer.status_code == 500, answer.text
        assert answer.json()["reason"] == "internal" and "RuntimeError" in answer.json()["error"]
    assert "the session failed" in caplog.text  # the traceback is logged, not answered
    assert errors() == before + 2
    assert _infer(v2_app, good).status_code == 200


def test_a_client_that_hangs_up_is_answered_nothing_and_counted_as_499(
    v2_app: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client gone before its body was read is not a server error: nothing is sent, no
    error is logged, and it counts as 499 (nginx's code), not as a 500."""
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    def count(code: str) -> float:
        text = v2_app.get("/metrics").text
        return max(_metric(text, "inference_requests_total", f'code="{code}",model="{MODEL}"'), 0)

    before = {code: count(code) for code in ("499", "500")}
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v2/models/{MODEL}/infer",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    asyncio.run(v2_app.app(scope, receive, send))  # type: ignore[arg-type]
    assert sent == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert count("499") == before["499"] + 1 and count("500") == before["500"]


def test_unknown_models_and_versions_are_404(v2_app: TestClient) -> None:
    assert v2_app.get("/v2/models/nope/ready").status_code == 404
    answer = v2_app.post("/v2/models/nope/infer", json={"inputs": []})
    assert answer.status_code == 404 and "no model named 'nope'" in answer.json()["error"]
    answer = v2_app.get(f"/v2/models/{MODEL}/versions/9")
    assert answer.status_code == 404 and "registered: [1, 2]" in answer.json()["error"]


def test_capture_publishes_each_request_with_its_id(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A bounded burst: one score.completed per request, with the request's own id (so
    labels published for it later join), its rows, predictions and event time."""
    model = trained(tmp_path_factory)
    platform = Platform.open(
        Settings(home=new_home(model, tmp_path / "home", model.v1), capture_rate=1.0)
    )
    rows = ROWS.astype(float).tolist()
    try:
        with TestClient(create_app(platform, ModelServer(platform.store, platform.registry))) as c:
            for i in range(40):
                body = {
                    "id": f"req-{i}",
                    "parameters": {"event_time": "2024-02-01T12:00:00+00:00"},
                    "inputs": [
                        {"name": "input", "shape": [3, 3], "datatype": "FP64", "data": rows}
                    ],
                }
                answer = c.post(f"/v2/models/{MODEL}/infer", json=body)
                assert answer.status_code == 200 and answer.json()["id"] == f"req-{i}"
            predictions = answer.json()["outputs"][0]["data"]
            bad = c.post(
                f"/v2/models/{MODEL}/infer",
                json={**body, "parameters": {"event_time": "yesterday"}},
            )
            assert bad.status_code == 400 and "event_time" in bad.json()["error"]
        events = read_all(platform.bus, "score.completed", 1, timeout_s=10)
        assert len(events) < 40  # a burst goes out in batches: one event carries many requests
        captured = read_requests(platform.bus, 40)
        assert sorted(e.request_id for e in captured) == sorted(f"req-{i}" for i in range(40))
        last = next(e for e in captured if e.request_id == "req-39")
        assert last.version == 1 and last.predictions == pytest.approx(predictions)
        assert np.allclose(last.rows.array, ROWS)
        assert last.event_time is not None and last.event_time.isoformat().startswith(
            "2024-02-01T12"
        )

    finally:
        platform.close()


def test_a_full_capture_queue_drops_captures_not_requests(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)
    settings = Settings(
        home=new_home(model, tmp_path / "home", model.v1), capture_rate=1.0, capture_queue=1
    )
    platform = Platform.open(settings)
    gate = threading.Event()
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    try:
        app = create_app(platform, ModelServer(platform.store, platform.registry))
        with TestClient(app) as c:
            capture: Capture = app.state.capture
            publish_many = capture.publisher.publish_many
            capture.publisher.publish_many = lambda events: (gate.wait(10), publish_many(events))
            answers = [c.post(f"/v2/models/{MODEL}/infer", json=body) for _ in range(30)]
            assert all(a.status_code == 200 for a in answers)
            metrics = c.get("/metrics").text
            gate.set()
        assert capture.counts["dropped"] >= 27  # one publishing, one waiting, the rest dropped
        assert _metric(metrics, "capture_events_total", 'outcome="dropped"') >= 27
        assert capture.counts["sent"] + capture.counts["dropped"] == 30
    finally:
        gate.set()
        platform.close()
