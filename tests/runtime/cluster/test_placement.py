"""Placement: the rule itself, heartbeats, and GPU-preferred work moving between runner processes."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from driftline.events import Codec, DriftChecked
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cluster import placement as placement_module
from driftline.runtime.cluster.capabilities import Capabilities, GpuInfo
from driftline.runtime.cluster.heartbeat import Beat, HeartbeatSender, LiveRunners, function_report
from driftline.runtime.cluster.placement import Placement, plan
from driftline.runtime.context import Context
from driftline.runtime.function import spec_of
from driftline.runtime.runner import Runner, output_id
from tests.conftest import wait_for
from tests.fixtures.kafka import unique_name
from tests.runtime.cluster.placement_runner import TIMEOUT_S
from tests.runtime.runner_helpers import echo, publish, request

ROOT = Path(__file__).resolve().parents[3]
CPU = Capabilities(host="cpu", cpu_cores=2)
GPU = Capabilities(host="gpu", cpu_cores=8, gpus=(GpuInfo(0, "H100", 81_559),))
OFFERS = {"ingest": "none", "retrain": "preferred", "trainer": "required"}


def beat(
    runner: str,
    caps: Capabilities,
    serves: tuple[str, ...] = (),
    sent: float | None = None,
    ready: tuple[str, ...] | None = None,
    state: str = "alive",
) -> Beat:
    return Beat(
        runner=runner,
        capabilities=caps,
        offers=OFFERS,
        serves=serves,
        ready=serves if ready is None else ready,
        sent=time.time() if sent is None else sent,
        state=state,
    )  # type: ignore[arg-type]


# -- the rule -------------------------------------------------------------------------------


def test_a_gpu_runner_serves_everything_it_offers() -> None:
    p = plan("g", GPU, OFFERS, [])
    assert p.serve == set(OFFERS) and not p.unserveable


def test_a_cpu_runner_alone_takes_preferred_work_but_never_required_work() -> None:
    p = plan("c", CPU, OFFERS, [beat("c", CPU)])
    assert p.serve == {"ingest", "retrain"}
    assert p.unserveable == {"trainer"}
    assert "needs a GPU" in p.unserved["trainer"]


def test_a_cpu_runner_leaves_preferred_work_to_a_gpu_runner_that_serves_it() -> None:
    live = [beat("g", GPU, serves=("retrain", "trainer")), beat("c", CPU)]
    p = plan("c", CPU, OFFERS, live)
    assert p.serve == {"ingest"}
    assert "served by g" in p.unserved["retrain"]
    assert not p.unserveable, "the GPU runner can serve the required function"


def test_a_cpu_runner_hands_back_only_once_the_gpu_runner_has_joined_the_group() -> None:
    assert "retrain" in plan("c", CPU, OFFERS, [beat("g", GPU, serves=())]).serve
    assert (
        "retrain" in plan("c", CPU, OFFERS, [beat("g", GPU, serves=("retrain",), ready=())]).serve
    )
    assert "retrain" not in plan("c", CPU, OFFERS, [beat("g", GPU, serves=("retrain",))]).serve


def test_until_settled_a_cpu_runner_holds_off_preferred_work() -> None:
    p = plan("c", CPU, OFFERS, [], settled=False)
    assert p.serve == {"ingest"} and "listening" in p.unserved["retrain"]


# -- heartbeats -----------------------------------------------------------------------------


def test_beats_round_trip_through_json() -> None:
    b = Beat(
        runner="r1",
        capabilities=GPU,
        offers=OFFERS,
        serves=("retrain",),
        ready=("retrain",),
        unserved={"x": "why"},
        unserveable=("trainer",),
        pid=7,
        started=1.0,
        sent=2.0,
        interval_s=0.5,
    )
    assert Beat.from_json(b.to_json()) == b


def test_live_runners_drop_silent_and_departed_runners(tmp_path: Path) -> None:
    now = [1000.0]
    view = LiveRunners(EmbeddedBus(tmp_path / "bus.db"), timeout_s=3.0, clock=lambda: now[0])
    view.observe(beat("a", CPU, sent=999.0))
    view.observe(beat("b", GPU, sent=999.5))
    view.observe(beat("c", CPU, sent=990.0))  # read back from history: long dead
    assert [b.runner for b in view.runners()] == ["a", "b"]
    view.observe(beat("b", GPU, sent=999.9, state="stopped"))
    view.observe(beat("a", CPU, sent=998.0))  # older than what we know: ignored
    assert [b.runner for b in view.runners()] == ["a"]
    now[0] = 1002.5
    assert view.runners() == []


def test_function_report_names_what_cannot_be_served() -> None:
    rows = {
        r["function"]: r
        for r in function_report(
            [beat("c", CPU, serves=("ingest", "retrain"))], {"score": "preferred"}
        )
    }
    assert rows["ingest"]["serveable"] and rows["retrain"]["served_by"] == ["c"]
    assert not rows["trainer"]["serveable"] and "needs a GPU" in rows["trainer"]["problem"]
    assert not rows["score"]["serveable"] and rows["score"]["problem"] == "no live runner offers it"


def test_placement_on_the_embedded_bus_serves_and_announces(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    topic = unique_name("runners")
    runner = Runner(bus, [], poll_timeout_s=0.1)
    placement = Placement(
        runner, [echo], CPU, interval_s=0.2, timeout_s=1.0, warmup_s=0.0, topic=topic
    )
    placement.start()
    try:
        wait_for(lambda: "echo" in runner.workers, timeout_s=10)
        publish(bus, [request("r1", "m-embedded")])
        wait_for(lambda: runner.stats["echo"].succeeded >= 1, timeout_s=10)
        view = LiveRunners(bus, timeout_s=1.0, topic=topic)
        wait_for(
            lambda: view.poll(0.1) >= 0 and [b.serves for b in view.runners()] == [("echo",)],
            timeout_s=10,
        )
    finally:
        placement.stop()
    wait_for(lambda: view.poll(0.1) >= 0 and view.runners() == [], timeout_s=5)  # the goodbye beat
    view.close()
    bus.close()


def test_a_failing_init_hook_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement_module, "_RETRY_S", 0.3)
    calls: list[float] = []

    def flaky_init(ctx: Context) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("model store not reachable yet")

    spec = dataclasses.replace(spec_of(echo), init=flaky_init)
    bus = EmbeddedBus(tmp_path / "bus.db")
    runner = Runner(bus, [], poll_timeout_s=0.1)
    placement = Placement(
        runner, [spec], CPU, interval_s=0.2, timeout_s=1.0, warmup_s=0.0, topic=unique_name("ctl")
    )
    placement.start()
    try:
        wait_for(lambda: "echo" in runner.workers, timeout_s=10)
        assert len(calls) == 2 and calls[1] - calls[0] >= 0.3
    finally:
        placement.stop()
        bus.close()


def test_a_beat_that_cannot_be_sent_is_logged_not_raised(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.create_topics(["ctl"])
    sender = HeartbeatSender(bus, topic="ctl")
    sender.send(beat("a", CPU))
    bus.close()
    sender.send(beat("a", CPU))  # the bus is gone: a warning, and the runner goes on
    assert "heartbeat of a not sent" in caplog.text
    sender.close()


# -- several runner processes on Kafka ------------------------------------------------------

codec = Codec()


class _Proc:
    def __init__(self, bootstrap: str, topic: str, name: str, model: str, gpus: int, log: Path):
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.runtime.cluster.placement_runner",
                    bootstrap,
                    topic,
                    name,
                    model,
                    str(gpus),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["ready"], f"runner did not start: {line}"
        self.id = line[1]
        self.pid = self.proc.pid

    def end(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=30)
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.mark.kafka
def test_preferred_gpu_work_follows_the_gpu_runner(
    kafka_bus, kafka_bootstrap, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    name, model, topic = unique_name("place"), unique_name("m"), unique_name("runners")
    pref, req = f"{name}-pref", f"{name}-req"
    kafka_bus.create_topics(
        ["drift.checked", "labels.received", "drift.checked.dlq", "labels.received.dlq"]
    )
    kafka_bus.create_topics([topic], partitions=1)
    view = LiveRunners(kafka_bus, timeout_s=TIMEOUT_S, topic=topic)
    view.start(poll_s=0.1)

    def serving(fn: str) -> set[str]:
        return {b.runner for b in view.runners() if fn in b.serves}

    def joined(fn: str) -> set[str]:
        return {b.runner for b in view.runners() if fn in b.ready}

    reader = kafka_bus.consumer(unique_name("reader"), ["drift.checked"])
    seen_ids: dict[str, set[str]] = {}  # request id -> output ids (one, after deduplication)
    answered: dict[str, set[int]] = {}  # request id -> pids of the runners that answered it

    def outputs() -> dict[str, set[int]]:
        for r in reader.poll(0.2, 1000):
            e = codec.decode(r.value, r.headers) if r.key == model.encode() else None
            if e is not None and e.data.metric == "answer":
                seen_ids.setdefault(e.data.window, set()).add(e.id)  # window: the request id
                answered.setdefault(e.data.window, set()).add(e.data.version)  # version: the pid
        return answered

    def publish(prefix: str, n: int) -> list[str]:
        now = datetime.now(UTC)
        producer, sent = kafka_bus.producer(), []
        for i in range(n):
            request_id = str(uuid.uuid4())
            event = DriftChecked(
                model=model,
                version=0,
                window=f"{prefix}{i}",
                metric="request",
                window_start=now,
                window_end=now,
                rows=1,
            )
            value, headers = codec.encode(event, id=request_id)
            producer.send(event.TYPE, value, key=model.encode(), headers=headers)
            sent.append(request_id)
        producer.flush()
        producer.close()
        return sent

    procs: list[_Proc] = []
    logs = iter(tmp_path / f"runner-{i}.log" for i in range(10))

    def _log() -> Path:
        return next(logs)

    try:
        gpu = _Proc(kafka_bootstrap, topic, name, model, 1, _log())
        procs.append(gpu)
        wait_for(lambda: joined(pref) == {gpu.id} and serving(req) == {gpu.id}, timeout_s=20)
        # One CPU runner: Tansu can wedge a group for good when two members leave it at once
        # (a survivor never completes its join), which a real broker does not do.
        cpu = _Proc(kafka_bootstrap, topic, name, model, 0, _log())
        procs.append(cpu)
        wait_for(lambda: {b.runner for b in view.runners()} == {gpu.id, cpu.id}, timeout_s=20)
        ids = {}
        ids["a"] = publish("a", 40)
        wait_for(lambda: len(outputs()) >= 40, timeout_s=30, interval_s=0.2)
        assert set().union(*outputs().values()) == {gpu.pid}, (
            "while the GPU runner lives, only it serves"
        )
        assert serving(pref) == {gpu.id}

        # the GPU runner dies mid-stream: the CPU runner takes over within the heartbeat timeout
        ids["b"] = publish("b", 300)
        wait_for(lambda: len(outputs()) >= 60, timeout_s=30, interval_s=0.05)
        gpu.end(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: serving(pref) == {cpu.id}, timeout_s=TIMEOUT_S + 10, interval_s=0.1)
        takeover_s = time.monotonic() - killed
        assert takeover_s <= TIMEOUT_S + 3.0, f"the CPU runner took {takeover_s:.1f}s to take over"
        assert all(req in b.unserveable for b in view.runners()), (
            "the required function is reported"
        )
        wait_for(lambda: len(outputs()) >= 340, timeout_s=40, interval_s=0.2)

        # a GPU runner returns: the CPU runner hands the work back
        gpu2 = _Proc(kafka_bootstrap, topic, name, model, 1, _log())
        procs.append(gpu2)
        wait_for(lambda: serving(pref) == {gpu2.id}, timeout_s=25, interval_s=0.2)
        assert not any(b.unserveable for b in view.runners())
        ids["c"] = publish("c", 40)
        wait_for(lambda: len(outputs()) >= 380, timeout_s=45, interval_s=0.2)
        done = outputs()
        assert all(done[f"c{i}"] == {gpu2.pid} for i in range(40)), (
            "the work moved back to the GPU runner"
        )
        b_pids = {pid for i in range(300) for pid in done[f"b{i}"]}
        assert b_pids == {gpu.pid, cpu.pid}, "B: the GPU runner until it died, then the CPU runner"
    except AssertionError:
        for p in procs:  # what each runner said, to see why
            print(f"--- runner {p.id} (pid {p.pid}) ---\n{p.log.read_text()[-6000:]}")
        raise
    finally:
        codes = [p.end() for p in procs]
        view.close()
        reader.close()
    assert codes[1:] == [0] * (len(codes) - 1), "the surviving runners stopped cleanly"
    all_ids = [i for batch in ids.values() for i in batch]
    expected = {output_id(i, pref, 0) for i in all_ids}
    assert set().union(*seen_ids.values()) == expected, (
        "every event processed, under its derived id"
    )
    assert all(len(v) == 1 for v in seen_ids.values()), "after deduplication by id, none twice"
