"""Faults on the Kafka bus: a runner killed with SIGKILL, the broker going away, and a
stalled replica fenced; each on kafka-python and on confluent-kafka (``bus_kind``)."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftline.events import Codec, Matrix, ScoreCompleted
from driftline.functions.drift_check import Monitors
from driftline.functions.ml.layout import spec_key
from driftline.runtime.context import Context
from driftline.runtime.runner import Runner, output_id
from driftline.runtime.store import LocalStore
from tests.conftest import wait_for
from tests.fixtures.kafka import TansuBroker, make_bus_of_kind
from tests.functions.synthetic import SPEC_TOML
from tests.runtime.runner_helpers import echo, publish, read_all, request

pytestmark = pytest.mark.kafka
codec = Codec()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["kafka", "confluent"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    """Which Kafka client the runner under test uses."""
    kind: str = request.param
    return kind


def _start_runner(bootstrap: str, name: str, kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.fault_runner", bootstrap, name, kind],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The next line the process prints, waiting at most ``timeout_s``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no line from the runner within {timeout_s}s"
    return proc.stdout.readline().strip()


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
    kafka_bus, kafka_bootstrap, bus_kind: str
) -> None:  # type: ignore[no-untyped-def]
    model, name = f"m-{uuid.uuid4().hex[:6]}", f"fault-{uuid.uuid4().hex[:6]}"
    kafka_bus.create_topics(["score.requested", "score.completed", "score.requested.dlq"])
    ids = publish(kafka_bus, [request(f"r{i}", model) for i in range(400)])
    first = _start_runner(kafka_bootstrap, name, bus_kind)
    try:  # killed as soon as it says it handled 50, not after a slow look at its outputs
        assert _line(first, timeout_s=60) == "handled 50"
    finally:
        _end(first, signal.SIGKILL)
    before = len(_outputs(kafka_bus, model, 400))
    assert before < 400, "the kill should land mid-stream"
    second = _start_runner(kafka_bootstrap, name, bus_kind)
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


def test_the_runner_survives_the_broker_going_away(tmp_path: Path, bus_kind: str) -> None:
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        bus = make_bus_of_kind(bus_kind, broker.bootstrap)
        topics = ["score.requested", "score.completed", "score.requested.dlq"]
        bus.create_topics(topics)
        # a flush that waits 5 s, not 30, for the broker: the outage is the point, not the wait
        runner = Runner(bus, [echo], poll_timeout_s=0.2, flush_timeout_s=5.0)
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


def _scored(model: str, request_id: str, hour: int) -> ScoreCompleted:
    return ScoreCompleted(
        model=model,
        request_id=request_id,
        version=1,
        predictions=[1.0],
        columns=["x1", "x2", "x3"],
        rows=Matrix([[float(hour), 0.5, 0.25]]),
        event_time=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=hour),
    )


def _saved_rows(store: LocalStore, model: str) -> list[str]:
    """Request ids in drift-check's saved state for ``model`` (rows waiting for labels), as
    a process starting now would restore it."""
    reader = Context(function="drift-check", store=store)
    return list(Monitors(reader).get(model).scored)


def _start_replica(
    bootstrap: str, store: Path, name: str, kind: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """A replica process and the lines it prints (read by a thread: never blocks the test)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.fence_runner", bootstrap, str(store), name, kind],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    return proc, lines


def test_a_stalled_replica_is_fenced_and_no_row_is_lost_or_counted_twice(
    kafka_bus, kafka_bootstrap, tmp_path: Path, bus_kind: str
) -> None:  # type: ignore[no-untyped-def]
    """Replica A is frozen (SIGSTOP) in the middle of a batch, past its group's session
    timeout; B takes the partition over, handles that batch again and more rows, and saves.
    When A wakes up it finishes its batch and tries to save its older state: the save is
    refused (fenced), A commits nothing and rejoins, and B's state stays, every row once."""
    name = f"fence-{uuid.uuid4().hex[:6]}"
    # a model of its own: score.completed keeps the rows of earlier runs on this broker
    # (the other client's), and those are another model's, which this state never holds
    model = f"fence{uuid.uuid4().hex[:6]}"
    store = LocalStore(tmp_path / "store")
    store.put(spec_key(model), SPEC_TOML.replace('name = "synth"', f'name = "{model}"').encode())
    kafka_bus.create_topics(["score.completed", "score.completed.dlq"])
    publish(kafka_bus, [_scored(model, f"r{i}", i) for i in range(20)])
    a, a_said = _start_replica(kafka_bootstrap, store.root, name, bus_kind)
    b = None
    try:
        wait_for(lambda: len(_saved_rows(store, model)) == 20, timeout_s=60)
        publish(kafka_bus, [_scored(model, "stall-1", 20)])
        time.sleep(1.0)  # A is in the two-second handler call of stall-1
        a.send_signal(signal.SIGSTOP)
        b, _ = _start_replica(kafka_bootstrap, store.root, name, bus_kind)
        publish(kafka_bus, [_scored(model, f"r{i}", i + 1) for i in range(20, 40)])
        wait_for(lambda: len(_saved_rows(store, model)) == 41, timeout_s=90)
        a.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30  # A finishes stall-1 and tries to save
        while not any("fenced" in line for line in a_said) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_saved_rows(store, model)) == 41, "A's older state did not overwrite B's"
        assert any("fenced" in line for line in a_said), a_said[-5:]
        publish(kafka_bus, [_scored(model, f"r{i}", i + 1) for i in range(40, 45)])
        wait_for(lambda: len(_saved_rows(store, model)) == 46, timeout_s=90)
        rows = _saved_rows(store, model)
        assert sorted(rows) == sorted([f"r{i}" for i in range(45)] + ["stall-1"])
    finally:
        a.send_signal(signal.SIGCONT)
        for proc in (a, b):
            if proc is not None:  # its reader thread ends at the end of its output
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                time.sleep(0.2)
                assert proc.stdout is not None
                proc.stdout.close()
