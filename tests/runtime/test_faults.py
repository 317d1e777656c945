"""Faults on the Kafka bus: a runner killed with SIGKILL, and the broker going away."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from driftline.events import Codec
from driftline.runtime.runner import Runner, output_id
from tests.conftest import wait_for
from tests.fixtures.kafka import TansuBroker, make_test_bus
from tests.runtime.runner_helpers import echo, publish, read_all, request

pytestmark = pytest.mark.kafka
codec = Codec()
ROOT = Path(__file__).resolve().parents[2]


def _start_runner(bootstrap: str, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.fault_runner", bootstrap, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _end(proc: subprocess.Popen[str], signum: int) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=30)
    finally:
        assert proc.stdout is not None
        proc.stdout.close()


def _outputs(bus, model: str, want: int):  # type: ignore[no-untyped-def]
    records = [
        r for r in read_all(bus, "score.completed", want, timeout_s=5) if r.key == model.encode()
    ]
    return [codec.decode(r.value, r.headers) for r in records]


def test_sigkill_mid_stream_loses_nothing_and_duplicates_keep_their_ids(
    kafka_bus, kafka_bootstrap
) -> None:  # type: ignore[no-untyped-def]
    model, name = f"m-{uuid.uuid4().hex[:6]}", f"fault-{uuid.uuid4().hex[:6]}"
    kafka_bus.create_topics(["score.requested", "score.completed", "score.requested.dlq"])
    ids = publish(kafka_bus, [request(f"r{i}", model) for i in range(400)])
    first = _start_runner(kafka_bootstrap, name)
    try:
        wait_for(lambda: len(_outputs(kafka_bus, model, 50)) >= 50, timeout_s=60)
    finally:
        _end(first, signal.SIGKILL)
    before = len(_outputs(kafka_bus, model, 400))
    assert before < 400, "the kill should land mid-stream"
    second = _start_runner(kafka_bootstrap, name)
    try:
        wait_for(
            lambda: (
                {e.data.request_id for e in _outputs(kafka_bus, model, 400)}
                >= {f"r{i}" for i in range(400)}
            ),
            timeout_s=90,
            interval_s=1.0,
        )
    finally:
        assert _end(second, signal.SIGTERM) == 0
    out = _outputs(kafka_bus, model, 400)
    expected = {output_id(i, name, 0) for i in ids}
    assert {e.id for e in out} == expected, "every input has its output, under its derived id"
    by_id: dict[str, set[str]] = {}
    for e in out:
        by_id.setdefault(e.id, set()).add(e.data.request_id)
    assert all(len(reqs) == 1 for reqs in by_id.values()), (
        "a duplicate carries the same id as the original"
    )


def test_the_runner_survives_the_broker_going_away(tmp_path: Path) -> None:
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        bus = make_test_bus(broker.bootstrap)
        topics = ["score.requested", "score.completed", "score.requested.dlq"]
        bus.create_topics(topics)
        runner = Runner(bus, [echo], poll_timeout_s=0.2)
        runner.start()
        publish(bus, [request("before")])
        wait_for(lambda: runner.stats["echo"].succeeded >= 1, timeout_s=30)
        broker.kill()
        time.sleep(3)
        assert runner.workers["echo"].thread.is_alive(), "the runner thread survives the outage"
        broker.start()  # same port, empty (memory storage): topics come back by hand
        wait_for(lambda: _succeeds(lambda: bus.create_topics(topics)), timeout_s=60, interval_s=1.0)
        wait_for(
            lambda: _succeeds(lambda: publish(bus, [request("after")])),
            timeout_s=60,
            interval_s=1.0,
        )
        wait_for(lambda: runner.stats["echo"].succeeded >= 2, timeout_s=90, interval_s=0.5)
        runner.stop()
        bus.close()


def _succeeds(action) -> bool:  # type: ignore[no-untyped-def]
    try:
        action()
        return True
    except Exception:  # the broker is still coming back
        return False
