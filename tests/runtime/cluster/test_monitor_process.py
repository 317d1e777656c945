"""``driftline up`` on the embedded bus runs drift-check in a child process that shares its
bus (DRIFTLINE_MONITOR_PROCESS): the child monitors what ``/v2`` captures, its counters
reach the gateway's ``/metrics``, and it dies with a SIGKILLed ``up``, which then starts
again at once on the same home."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cluster.capabilities import detect
from driftline.runtime.cluster.heartbeat import Beat
from driftline.runtime.errors import ConfigError
from driftline.runtime.http.gateway import running_gateway
from driftline.runtime.stats import FunctionStats, ProcessStats
from tests.conftest import wait_for
from tests.runtime.http.helpers import MODEL, new_home, start_up, stop_up, trained

pytestmark = pytest.mark.slow


def _nice(pid: int, task: str) -> int:
    """A thread's niceness (field 19 of its stat)."""
    stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _monitored(home: Path) -> tuple[int, int]:
    """drift-check's committed offset on score.completed and the topic's end, read straight
    from the bus file (the processes hold its lock)."""
    with sqlite3.connect(f"file:{home / 'bus.db'}?mode=ro", uri=True) as db:
        (end,) = db.execute(
            "SELECT COALESCE(SUM(n), 0) FROM (SELECT MAX(offset) + 1 AS n FROM records "
            "WHERE topic = 'score.completed' GROUP BY partition)"
        ).fetchone()
        (done,) = db.execute(
            "SELECT COALESCE(SUM(offset), 0) FROM offsets "
            "WHERE grp = 'driftline.drift-check' AND topic = 'score.completed'"
        ).fetchone()
    return int(done), int(end)


def test_up_monitors_v2_in_a_child_that_dies_with_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path / "home", model.v1)
    env = {"DRIFTLINE_HEARTBEAT_INTERVAL_S": "0.5"}
    up = start_up(home, "score,drift-check", log=tmp_path / "up.log", env=env)
    try:
        wait_for(lambda: len(_children(up.pid)) == 1, timeout_s=30)
        [child] = _children(up.pid)
        assert b"drift-check" in Path(f"/proc/{child}/cmdline").read_bytes()
        url = running_gateway(home)
        assert url is not None
        for i in range(20):
            answer = httpx.post(
                f"{url}/v2/models/{MODEL}/infer",
                json={
                    "id": f"r-{i}",
                    "inputs": [
                        {"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [i, 1, 2]}
                    ],
                },
            )
            assert answer.status_code == 200, answer.text
        # every captured request reaches drift-check in the child, which commits it
        wait_for(lambda: _monitored(home)[1] > 0 and _monitored(home)[0] == _monitored(home)[1])

        def consumed() -> float:
            text = httpx.get(f"{url}/metrics").text
            match = re.search(
                r'^driftline_function_events_consumed_total\{function="drift-check"\} (\S+)$',
                text,
                re.M,
            )
            return float(match.group(1)) if match else -1.0

        wait_for(lambda: consumed() >= 2)  # its counters, from its heartbeats
        # monitoring yields the CPU to serving: every thread of the child, ten steps nicer
        assert {_nice(child, task) for task in os.listdir(f"/proc/{child}/task")} == {
            os.getpriority(os.PRIO_PROCESS, up.pid) + 10
        }
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        wait_for(lambda: not _alive(child), timeout_s=5)

        def unlocked() -> bool:  # the lock goes with them both, once the kernel has closed
            try:  # the files of the killed processes
                EmbeddedBus(home / "bus.db").close()
            except ConfigError:
                return False
            return True

        wait_for(unlocked, timeout_s=10)
    finally:
        if up.poll() is None:
            stop_up(up)
        elif up.stdout is not None:
            up.stdout.close()
    log = (tmp_path / "up.log").read_text()
    assert "in replica processes: drift-check (1)" in log, log


def test_with_monitor_process_off_up_is_one_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = start_up(home, "drift-check", env={"DRIFTLINE_MONITOR_PROCESS": "false"})
    try:
        time.sleep(2.0)
        assert _children(up.pid) == []
    finally:
        stop_up(up)


def test_process_stats_add_the_childrens_counters_from_their_beats() -> None:
    mine = FunctionStats(consumed=3, succeeded=3)
    mine.observe(0.002)
    theirs = FunctionStats(consumed=5, succeeded=4, dead_lettered=1)
    theirs.observe(0.2)
    other = FunctionStats(consumed=100)

    class Runner:
        stats = {"score": mine}

    def beat(pid: int, stats: dict[str, FunctionStats]) -> Beat:
        wire = Beat(
            runner=f"r{pid}",
            capabilities=detect(),
            stats={n: s.to_wire() for n, s in stats.items()},
            pid=pid,
        )
        return Beat.from_json(wire.to_json())  # as the gateway reads them off the bus

    beats = [beat(11, {"drift-check": theirs, "score": theirs}), beat(12, {"score": other})]
    combined = ProcessStats(Runner(), lambda: beats, lambda: [11]).stats  # 12: not a child
    assert combined["drift-check"].as_dict() == theirs.as_dict()
    assert combined["drift-check"].latency_buckets == theirs.latency_buckets
    assert combined["score"].consumed == 8 and combined["score"].dead_lettered == 1
    assert sum(combined["score"].latency_buckets) == 2
    assert os.getpid() not in (11, 12)
