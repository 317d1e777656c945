"""Waiting for the loop to settle: every record on every topic handled by every function.

A replay moves event time forward in steps; after each step it waits until each hosted
function has committed past every record on the topics it reads, so a retrain triggered
in a step is deployed before the next step is scored, as it would be in production where
hours pass between the data's hours. Lag is measured from the records actually seen, not
from broker end offsets (some brokers under-report those, see shared/NOTES.md).

Nothing seen and nothing lagging means "settled" only once everyone is in place: every
hosted function holds every partition of the topics it reads and has read the group's
committed offsets there (the watch is a group-less reader: it holds its partitions at
once).
A consumer group still joining (seconds on Kafka, longer with many members) has seen
nothing and lags behind nothing, and must not pass for one that is caught up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from driftline.runtime.bus.base import Bus, TopicPartition, partitions_of
from driftline.runtime.runner import Runner


class TopicWatch:
    """Follows topics with a group-less reader (it holds every partition from the start)
    and remembers how far each partition goes."""

    def __init__(self, bus: Bus, topics: Sequence[str]):
        self.bus = bus
        self.ends: dict[TopicPartition, int] = {}
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self._consumer = bus.reader(list(topics))
        self._partitions: dict[str, set[TopicPartition]] = {}

    def partitions(self, topics: Iterable[str]) -> set[TopicPartition]:
        """Every partition of ``topics``, asked of the bus once per topic."""
        for topic in topics:
            if not self._partitions.get(topic):
                self._partitions[topic] = partitions_of(self.bus, [topic])
        return set().union(*(self._partitions[t] for t in topics))

    def poll(self, timeout_s: float = 0.05) -> int:
        records = self._consumer.poll(timeout_s, max_records=5000)
        for r in records:
            self.ends[r.tp] = max(self.ends.get(r.tp, 0), r.offset + 1)
            self.counts[r.topic] = self.counts.get(r.topic, 0) + 1
        return len(records)

    def close(self) -> None:
        self._consumer.close()


def not_ready(runner: Runner, watch: TopicWatch) -> list[str]:
    """Functions that do not yet hold every partition of the topics they read (a group
    still joining, or rebalancing)."""
    return [
        name
        for name, worker in runner.workers.items()
        if not watch.partitions(worker.spec.subscribes) <= worker.assigned
    ]


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
    """Block until everyone is in place (:func:`not_ready`), then until nothing new appears
    and no function lags, for ``quiet_s`` in a row."""
    deadline = time.monotonic() + timeout_s

    def quiet() -> bool:
        return (
            not watch.poll(quiet_s) and not not_ready(runner, watch) and not lagging(runner, watch)
        )

    while time.monotonic() < deadline:
        if quiet() and quiet():
            return
    waiting = not_ready(runner, watch)
    raise TimeoutError(
        f"loop did not settle within {timeout_s}s; "
        + (
            f"not yet holding their partitions (a consumer group that never finished "
            f"joining; another process in the same groups?): {waiting}"
            if waiting
            else f"lagging: {lagging(runner, watch)}"
        )
    )
