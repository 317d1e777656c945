"""The Bus: topics, partitions, offsets and consumer groups, behind one small interface.

Three implementations share this contract and one test suite
(``tests/runtime/bus/test_contract.py``):

- :class:`driftline.runtime.bus.embedded.EmbeddedBus`: one SQLite file, one process;
- :class:`driftline.runtime.bus.kafka.KafkaBus`: any Kafka-protocol broker, via kafka-python;
- :class:`driftline.runtime.bus.confluent.ConfluentBus`: the same, via confluent-kafka.

Offsets follow Kafka's meaning: a committed offset is the offset of the *next* record
the group will read.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Producer(abc.ABC):
    """Sends records; :meth:`flush` returns only when everything sent is durable."""

    @abc.abstractmethod
    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None: ...

    @abc.abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Consumer(abc.ABC):
    """A member of one consumer group, subscribed to some topics.

    Partitions are assigned by the group; a new group starts at the earliest offset.
    """

    @abc.abstractmethod
    def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]: ...

    @abc.abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read."""

    @abc.abstractmethod
    def committed(self, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read an assigned partition from ``offset`` on (a reader that knows where it
        stopped, like a registry loaded from a snapshot); nothing is committed."""

    @property
    def rebalances(self) -> int:
        """How many assignments this member has received so far (each rebalance adds one,
        even one that gives back the same partitions: others may have held them between)."""
        return 0

    @abc.abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Bus(abc.ABC):
    """Factory for producers and consumers on one cluster (or one SQLite file)."""

    @abc.abstractmethod
    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        """Create topics that do not exist yet (existing ones are left alone)."""

    @abc.abstractmethod
    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (0: it does not exist)."""

    @abc.abstractmethod
    def topics(self) -> list[str]:
        """The names of every topic on the bus, sorted (users' topics and dead letters too)."""

    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """A new member of ``group`` subscribed to ``topics``; topics that do not exist yet are
        created first (a Kafka client subscribed to a missing topic would not see it appear
        until its next metadata refresh, minutes later)."""

    @abc.abstractmethod
    def reader(self, topics: Sequence[str]) -> Consumer:
        """A consumer in no group, holding every partition of ``topics`` from the start at
        once (no join to wait for); it cannot commit. For readers of whole topics: the
        registry, a replay's watch, the dead letters."""

    @abc.abstractmethod
    def close(self) -> None: ...


def partitions_of(bus: Bus, topics: Iterable[str]) -> set[TopicPartition]:
    """Every partition of ``topics`` (a topic that does not exist has none)."""
    return {TopicPartition(t, p) for t in topics for p in range(bus.partition_count(t))}
