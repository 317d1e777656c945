"""A drift-check replica for the fencing test: ``python -m tests.runtime.fence_runner
BOOTSTRAP STORE_DIR GROUP KIND`` (KIND: ``kafka`` or ``confluent``, the client it uses).

Hosts drift-check's handler, state and checkpoint (reading ``score.completed`` only) in
consumer group GROUP on the Kafka bus, with its state in the folder store STORE_DIR,
until SIGTERM. A row whose request id starts with ``stall`` keeps the handler busy for
two seconds, so the test can freeze this process (SIGSTOP) in the middle of a batch.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

from driftline.events import Event, ScoreCompleted
from driftline.functions.drift_check import _monitors, drift_check, save_changed
from driftline.runtime.context import Context
from driftline.runtime.function import function
from driftline.runtime.runner import Runner
from driftline.runtime.store import LocalStore
from tests.fixtures.kafka import make_bus_of_kind


def main(bootstrap: str, store_dir: str, group: str, kind: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")

    @function(
        subscribes="score.completed",
        emits=("drift.checked", "drift.detected"),
        name=group,
        init=_monitors,
        checkpoint=save_changed,
    )
    def check(event: ScoreCompleted, ctx: Context) -> list[Event]:
        if event.request_id.startswith("stall"):
            time.sleep(2.0)
        return drift_check(event, ctx)

    bus = make_bus_of_kind(kind, bootstrap)
    runner = Runner(bus, [check], store=LocalStore(store_dir), poll_timeout_s=0.2)
    runner.start()
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    print("ready", flush=True)
    runner.wait()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
