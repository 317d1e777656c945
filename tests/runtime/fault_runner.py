"""A runner process for the fault tests:
``python -m tests.runtime.fault_runner BOOTSTRAP NAME [kafka|confluent]``.

Hosts one echo-like function named NAME on a Kafka bus (kafka-python by default, or
confluent-kafka) until SIGTERM; each handler call sleeps a little, and the process prints
``handled 50`` at its 50th call, so a test can SIGKILL it mid-stream at once.
"""

from __future__ import annotations

import signal
import sys
import time

from driftline.events import ScoreCompleted, ScoreRequested
from driftline.runtime.context import Context
from driftline.runtime.function import function
from driftline.runtime.runner import Runner
from tests.fixtures.kafka import make_bus_of_kind

MID = 50


def main(bootstrap: str, name: str, kind: str = "kafka") -> None:
    calls = 0

    @function(subscribes="score.requested", emits="score.completed", name=name)
    def handler(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
        nonlocal calls
        calls += 1
        if calls == MID:
            print(f"handled {MID}", flush=True)
        time.sleep(0.005)
        return ScoreCompleted(
            model=event.model, request_id=event.request_id, version=1, predictions=[1.0]
        )

    bus = make_bus_of_kind(kind, bootstrap)
    runner = Runner(bus, [handler], poll_timeout_s=0.2, max_records=20)
    runner.start()
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    print("ready", flush=True)
    runner.wait()
    bus.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
