"""``driftline up --replicas`` on Kafka: score runs in two child processes that split its
partitions; SIGKILL one mid-stream and every request is still answered.

A private Tansu broker (the processes join the built-in groups, driftline.score and the
rest, which must not meet what other tests leave on the session broker). The model is
trained by ``up``'s own ingest → retrain → register from an upload; the replicas learn the
production version from ``model.deployed`` or, where that event's partition is held by the
other replica, from the registry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from driftline.events import Codec, Matrix, ScoreRequested
from driftline.functions.ml.layout import spec_key
from driftline.runtime.cluster.heartbeat import Beat, LiveRunners
from driftline.runtime.registry import RegistryFollower
from driftline.runtime.store import LocalStore
from tests.conftest import wait_for
from tests.fixtures.kafka import make_test_bus
from tests.functions.synthetic import SPEC_TOML, frame
from tests.runtime.http.helpers import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
MODEL = "synth"
codec = Codec()


def test_up_rejects_replicas_on_the_embedded_bus_and_unknown_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.runtime.cli import main

    assert main(["up", "--replicas", "score=2", "--home", str(tmp_path)]) == 2
    assert "--replicas score=2: on the embedded bus a function runs in one process" in (
        capsys.readouterr().err
    )
    assert main(["up", "--functions", "ingest,scoring", "--home", str(tmp_path)]) == 2
    assert "unknown function(s) ['scoring']" in capsys.readouterr().err


def test_up_replicas_split_score_and_a_killed_one_loses_nothing(
    tansu_broker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    started = time.time()
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    store.put(spec_key(MODEL), SPEC_TOML.encode())
    env = {
        **os.environ,
        "DRIFTLINE_HEARTBEAT_INTERVAL_S": "0.5",
        "DRIFTLINE_HEARTBEAT_TIMEOUT_S": "3",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "4000",
        "DRIFTLINE_PARTITIONS": "3",
    }
    log = (tmp_path / "up.log").open("w")
    port = free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.runtime.cli",
            "up",
            "--replicas",
            "score=2",
            "--port",
            str(port),
            "--bus",
            f"kafka://{tansu_broker.bootstrap}",
            "--store",
            str(store_dir),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    bus = make_test_bus(tansu_broker.bootstrap)
    view = LiveRunners(bus, timeout_s=3.0)
    view.start(poll_s=0.2)
    follower = RegistryFollower(bus)
    registry = follower.start()
    completed = bus.consumer(f"test-{uuid.uuid4().hex[:8]}", ["score.completed"])
    answered: dict[str, int] = {}

    def collect() -> dict[str, int]:
        for r in completed.poll(0.2, 1000):
            event = codec.decode(r.value, r.headers).data
            answered[event.request_id] = event.version
        return answered

    def replicas() -> list[Beat]:
        return [b for b in view.runners() if b.started >= started and b.serves == ("score",)]

    def holding() -> list[Beat]:
        return [b for b in replicas() if b.partitions.get("score")]

    try:
        store.put(f"uploads/{MODEL}/first.csv", frame(24 * 14, seed=5).to_csv(index=False).encode())
        wait_for(lambda: registry.production(MODEL) is not None, timeout_s=120, interval_s=0.5)
        wait_for(lambda: len(holding()) == 2, timeout_s=60, interval_s=0.5)
        up_beats = [b for b in view.runners() if b.pid == up.pid]
        assert up_beats and "score" not in up_beats[0].serves, (
            "score runs in the replicas, not in up"
        )
        # the gateway scores /v2 requests with its own sessions, on the production version
        infer = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 0.0, 0.5]}
            ]
        }
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", json=infer, timeout=10
        )
        assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text
        # and captures it as score.completed under the id it answered with (capture is on)
        served_id = answer.json()["id"]
        wait_for(lambda: served_id in collect(), timeout_s=30, interval_s=0.2)
        assert answered[served_id] == 1
        shares = [set(b.partitions["score"]) for b in holding()]
        assert not shares[0] & shares[1], "no partition is held twice"
        assert {p for s in shares for p in s if p.startswith("score.requested[")} == {
            f"score.requested[{p}]" for p in range(3)
        }, "the replicas hold every partition between them"

        producer = bus.producer()
        sent: list[str] = []

        def publish(count: int) -> None:
            for _ in range(count):
                event = ScoreRequested(
                    model=MODEL,
                    request_id=f"r{len(sent)}",
                    columns=["x1", "x2", "x3"],
                    rows=Matrix([[1.0, 0.0, 0.5]]),
                )
                value, headers = codec.encode(event)
                producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
                sent.append(event.request_id)
            producer.flush()

        def scored() -> set[str]:
            return set(collect()) & set(sent)

        publish(60)
        wait_for(lambda: len(scored()) == 60, timeout_s=60, interval_s=0.2)
        victim = holding()[0]
        os.kill(victim.pid, signal.SIGKILL)
        for _ in range(12):  # keep publishing while the group notices and rebalances
            publish(20)
            collect()
            time.sleep(0.5)
        wait_for(lambda: scored() == set(sent), timeout_s=90, interval_s=0.5)
        assert set(answered) == set(sent) | {served_id}, (
            "every request answered, none lost with the killed replica"
        )
        assert set(answered.values()) == {1}
        wait_for(
            lambda: len(holding()) == 2 and victim.pid not in {b.pid for b in holding()},
            timeout_s=60,
            interval_s=0.5,
        )  # started again, and given a share again
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            code = up.wait()
        log.close()
        completed.close()
        follower.stop()
        view.close()
        bus.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
