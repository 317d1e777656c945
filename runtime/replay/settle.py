"""Waiting for the loop to settle: every record on every topic handled by every function.

A replay moves event time forward in steps; after each step it waits until each hosted
function has committed past every record on the topics it reads, so a retrain triggered
in a step is deployed before the next step is scored, as it would be in production where
hours pass between the data's hours. Lag is measured from the records actually seen, not
from broker end offsets (some brokers under-report those, see shared/NOTES.md).

Nothing seen and nothing lagging means "settled" only once everyone is in place: the
watch holds every partition of the topics it follows, and every hosted function holds
every partition of the topics it reads and has read the group's committed offsets there.
A consumer group still joining (seconds on Kafka, longer with many members) has seen
nothing and lags behind nothing, and must not pass for one that is caught up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from driftline.runtime.bus.base import Bus, TopicPartition
from driftline.runtime.runner import Runner


class TopicWatch:
    """Follows topics with a private group and remembers how far each partition goes."""

    def __init__(self, bus: Bus, topics: Sequence[str]):
        self.ends: dict[TopicPartition, int] = {}
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self._consumer = bus.reader(list(topics))
        self.partition_counts: dict[str, int] = {}
        """Partition count per topic, asked of the bus once."""

    def missing(self, bus: Bus) -> set[TopicPartition]:
        """Partitions of the watched topics this watch does not hold yet."""
        return (
            _all_partitions(bus, self.counts, self.partition_counts) - self._consumer.assignment()
        )

    def poll(self, timeout_s: float = 0.05) -> int:
        records = self._consumer.poll(timeout_s, max_records=5000)
        for r in records:
            self.ends[r.tp] = max(self.ends.get(r.tp, 0), r.offset + 1)
            self.counts[r.topic] = self.counts.get(r.topic, 0) + 1
        return len(records)

    def close(self) -> None:
        self._consumer.close()


def _all_partitions(bus: Bus, topics: Iterable[str], known: dict[str, int]) -> set[TopicPartition]:
    out: set[TopicPartition] = set()
    for topic in topics:
        if not known.get(topic):
            known[topic] = bus.partition_count(topic)
        out.update(TopicPartition(topic, p) for p in range(known[topic]))
    return out


def not_ready(runner: Runner, watch: TopicWatch) -> list[str]:
    """Who is not in place yet: the watch, or functions that do not yet hold every
    partition of the topics they read (a group still joining, or rebalancing)."""
    waiting = ["the replay's watch"] if watch.missing(runner.bus) else []
    for name, worker in runner.workers.items():
        need = _all_partitions(runner.bus, worker.spec.subscribes, watch.partition_counts)
        if not need <= worker.assigned:
            waiting.append(name)
    return waiting


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
