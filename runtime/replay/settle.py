"""Waiting for the loop to settle: every record on every topic handled by every function.

A replay moves event time forward in steps; after each step it waits until each hosted
function has committed past every record on the topics it reads, so a retrain triggered
in a step is deployed before the next step is scored, as it would be in production where
hours pass between the data's hours. Lag is measured from the records actually seen, not
from broker end offsets (some brokers under-report those, see shared/NOTES.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from driftline.runtime.bus.base import Bus, TopicPartition
from driftline.runtime.runner import Runner


class TopicWatch:
    """Follows topics with a private group and remembers how far each partition goes."""

    def __init__(self, bus: Bus, topics: Sequence[str]):
        self.ends: dict[TopicPartition, int] = {}
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self._consumer = bus.consumer(f"driftline.watch.{uuid.uuid4().hex}", list(topics))

    def poll(self, timeout_s: float = 0.05) -> int:
        records = self._consumer.poll(timeout_s, max_records=5000)
        for r in records:
            self.ends[r.tp] = max(self.ends.get(r.tp, 0), r.offset + 1)
            self.counts[r.topic] = self.counts.get(r.topic, 0) + 1
        return len(records)

    def close(self) -> None:
        self._consumer.close()


def lagging(runner: Runner, watch: TopicWatch) -> list[str]:
    """Functions that have not yet committed past every record the watch has seen."""
    behind = []
    for name, worker in runner.workers.items():
        for tp, end in watch.ends.items():
            if tp.topic in worker.spec.subscribes and worker.committed.get(tp, 0) < end:
                behind.append(name)
                break
    return behind


def settle(
    runner: Runner, watch: TopicWatch, *, quiet_s: float = 0.05, timeout_s: float = 600.0
) -> None:
    """Block until nothing new appears and no function lags, for ``quiet_s`` in a row."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = watch.poll(quiet_s)
        if not new and not lagging(runner, watch):
            if not watch.poll(quiet_s) and not lagging(runner, watch):
                return
    raise TimeoutError(
        f"loop did not settle within {timeout_s}s; lagging: {lagging(runner, watch)}"
    )
