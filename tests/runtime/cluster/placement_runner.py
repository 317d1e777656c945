"""A runner process for the placement tests.

``python -m tests.runtime.cluster.placement_runner BOOTSTRAP CONTROL_TOPIC NAME MODEL GPUS``

Offers two functions under placement: ``NAME-pref`` (gpu="preferred") and ``NAME-req``
(gpu="required", labels.received, emits nothing). ``NAME-pref`` answers requests on the
drift.checked topic, the one topic that neither a built-in function nor another test reads
(so this test's traffic slows no other test down): a request is a ``drift.checked`` event with
``metric="request"`` and the request id as ``window``; the answer has ``metric="answer"``,
the same ``window`` and this process's pid as ``version``. ``GPUS`` goes through the ``gpus`` settings override, so a
machine without a GPU plays a GPU runner. Heartbeats every 0.5 s, a 3 s timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from driftline.events import DriftChecked, LabelsReceived
from driftline.runtime.bus.kafka import KafkaBus
from driftline.runtime.cluster.capabilities import detect
from driftline.runtime.cluster.placement import Placement
from driftline.runtime.context import Context
from driftline.runtime.function import function
from driftline.runtime.runner import Runner
from driftline.runtime.settings import Settings
from tests.fixtures.kafka import TEST_GROUP_SETTINGS

INTERVAL_S = 0.5
TIMEOUT_S = 3.0


def main(bootstrap: str, topic: str, name: str, model: str, gpus: int) -> None:
    @function(
        subscribes="drift.checked", emits="drift.checked", name=f"{name}-pref", gpu="preferred"
    )
    def pref(event: DriftChecked, ctx: Context) -> DriftChecked | None:
        if event.model != model or event.metric != "request":  # answers, or another run's traffic
            return None
        time.sleep(0.01)
        return event.model_copy(update={"metric": "answer", "version": os.getpid()})

    @function(subscribes="labels.received", name=f"{name}-req", gpu="required")
    def req(event: LabelsReceived, ctx: Context) -> None:
        return None

    # to stderr, which the test keeps in a file and shows when it fails
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    caps = detect(Settings(gpus=gpus))
    # Tansu sometimes leaves a member stuck in a join when others leave the group at once;
    # the bus rejoins after max_poll_interval + session timeout: keep that short here.
    bus = KafkaBus(
        bootstrap,
        client_id="driftline-test",
        **{**TEST_GROUP_SETTINGS, "max_poll_interval_ms": 6000},
    )
    runner = Runner(bus, [], capabilities=caps, poll_timeout_s=0.2, max_records=20)
    placement = Placement(
        runner,
        [pref, req],
        caps,
        interval_s=INTERVAL_S,
        timeout_s=TIMEOUT_S,
        warmup_s=2.0,
        settle_s=30.0,
        topic=topic,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    placement.start()
    print(f"ready {placement.id}", flush=True)
    while not stop.wait(1.0):
        logging.info("consumed %s", {k: v.consumed for k, v in runner.stats.items()})
    placement.stop()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
