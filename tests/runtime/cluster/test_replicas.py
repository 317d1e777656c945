"""Scale-out over processes (``driftline runner --replicas``) and ``driftline status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftline.events.topics import RUNNERS_TOPIC
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cli import main
from driftline.runtime.cluster.capabilities import Capabilities, GpuInfo
from driftline.runtime.cluster.heartbeat import Beat, HeartbeatSender, LiveRunners
from driftline.runtime.cluster.replicas import ReplicaSet, parse_replicas, process_plan
from driftline.runtime.errors import ConfigError
from tests.conftest import wait_for
from tests.fixtures.kafka import make_test_bus

ROOT = Path(__file__).resolve().parents[3]
BUILT_IN = ["ingest", "retrain", "register", "score", "drift-check"]


def test_replicas_are_parsed_with_clear_errors() -> None:
    assert parse_replicas("score=3, drift-check=2", BUILT_IN) == {"score": 3, "drift-check": 2}
    for bad, why in [
        ("score", "NAME=COUNT"),
        ("score=0", "NAME=COUNT"),
        ("scoring=2", "unknown function"),
        ("", "name at least one"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_replicas(bad, BUILT_IN)


def test_each_named_function_gets_its_processes_and_the_rest_share_one() -> None:
    plan = process_plan(BUILT_IN, {"score": 3, "drift-check": 2})
    assert plan == [["score"]] * 3 + [["drift-check"]] * 2 + [["ingest", "retrain", "register"]]
    assert process_plan(["score"], {"score": 2}) == [["score"], ["score"]]


def test_a_replica_of_a_user_function_is_told_where_it_lives() -> None:
    replicas = ReplicaSet(
        [["tag", "score"]], ["--bus=kafka://b:9092"], refs={"tag": "/u/shop.py:tag"}
    )
    command = replicas.command(replicas.children[0].functions)
    assert command[-3:] == ["--functions", "/u/shop.py:tag,score", "--bus=kafka://b:9092"]
    assert replicas.children[0].functions == ["tag", "score"]  # names, as `up` counts them


def test_replicas_need_kafka(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runner", "--replicas", "score=2", "--home", str(tmp_path)]) == 2
    assert "needs a Kafka bus" in capsys.readouterr().err


def _beat(runner: str, caps: Capabilities, offers: dict[str, str], serves: tuple[str, ...]) -> Beat:
    return Beat(
        runner=runner,
        capabilities=caps,
        offers=offers,
        serves=serves,
        ready=serves,
        sent=time.time(),
    )


def test_status_lists_live_runners_and_what_cannot_be_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bus_url = f"sqlite:///{tmp_path / 'bus.db'}"
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.create_topics([RUNNERS_TOPIC], partitions=1)
    sender = HeartbeatSender(bus)
    gpu = Capabilities(cpu_cores=16, memory_mb=131072, gpus=(GpuInfo(0, "H100", 81559),))
    sender.send(
        _beat(
            "cpu-1",
            Capabilities(cpu_cores=2, memory_mb=4096),
            {"ingest": "none", "retrain": "preferred"},
            ("ingest",),
        )
    )
    sender.send(_beat("gpu-1", gpu, {"retrain": "preferred"}, ("retrain",)))
    sender.close()
    bus.close()
    assert main(["status", "--bus", bus_url, "--expect", "ingest,retrain", "--wait", "3"]) == 0
    text = capsys.readouterr().out
    assert "2 live runner(s)" in text and "H100 79GiB" in text
    assert main(["status", "--bus", bus_url, "--expect", "score", "--json", "--wait", "3"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [r["runner"] for r in report["runners"]] == ["cpu-1", "gpu-1"]
    rows = {f["function"]: f for f in report["functions"]}
    assert rows["retrain"]["served_by"] == ["gpu-1"]
    assert rows["score"]["problem"] == "no live runner offers it" and not rows["score"]["serveable"]


@pytest.mark.kafka
def test_runner_replicas_start_processes_in_the_same_group(tansu_broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A private broker: the replicas join the built-in function's real group (driftline.register),
    # which must not meet the history other tests leave on the session broker.
    started = time.time()
    bus = make_test_bus(tansu_broker.bootstrap)
    cmd = [
        sys.executable,
        "-m",
        "driftline.runtime.cli",
        "runner",
        "--replicas",
        "register=2",
        "--functions",
        "register",
        "--bus",
        f"kafka://{tansu_broker.bootstrap}",
        "--store",
        str(tmp_path / "store"),
    ]
    env = {
        **os.environ,
        "DRIFTLINE_HEARTBEAT_INTERVAL_S": "0.5",
        "DRIFTLINE_HEARTBEAT_TIMEOUT_S": "3",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "4000",
    }
    parent = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    view = LiveRunners(bus, timeout_s=3.0)
    view.start(poll_s=0.2)

    def replicas() -> list[Beat]:
        return [
            b for b in view.runners() if b.started >= started and b.offers == {"register": "none"}
        ]

    try:
        wait_for(
            lambda: len([b for b in replicas() if "register" in b.serves]) == 2,
            timeout_s=45,
            interval_s=0.5,
        )
        assert len({b.pid for b in replicas()}) == 2
    finally:
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(timeout=60)
        assert parent.stdout is not None
        parent.stdout.close()
    assert code == 0, "every replica drained and stopped cleanly"
    wait_for(lambda: replicas() == [], timeout_s=5)  # their goodbye beats
    view.close()
    bus.close()
