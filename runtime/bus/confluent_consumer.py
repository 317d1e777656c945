"""ConfluentConsumer and ConfluentReader: the :class:`~driftline.runtime.bus.base.Consumer`
of :mod:`driftline.runtime.bus.confluent` in a group and in none, over confluent-kafka's."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import confluent_kafka as ck

from driftline.runtime.bus.base import Consumer, Record, TopicPartition
from driftline.runtime.errors import BusError

__all__ = ["ConfluentConsumer", "ConfluentReader"]

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 15.0
#: Error codes meaning "the group moved on": a commit now may hand work to no one.
_REBALANCED = {
    ck.KafkaError.REBALANCE_IN_PROGRESS,
    ck.KafkaError.ILLEGAL_GENERATION,
    ck.KafkaError.UNKNOWN_MEMBER_ID,
    ck.KafkaError._ASSIGNMENT_LOST,
}


class _Members(Consumer):
    """What a group member and a reader share: records, pause, resume, seek, close."""

    def __init__(self, client: ck.Consumer, name: str) -> None:
        self._client = client
        self._name = name
        self._closed = False
        # Kept here, not asked of librdkafka: its assignment() is a round trip to its main
        # thread, and the runner asks after every poll.
        self._assigned: frozenset[TopicPartition] = frozenset()

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        """Records from the assigned partitions; ``[]`` on timeout or while the broker is away."""
        try:
            messages = self._client.consume(max_records, timeout_s)
        except (ck.KafkaException, RuntimeError) as exc:
            raise BusError(f"{self._name}: poll failed: {exc}") from exc
        records = []
        for m in messages:
            err = m.error()
            if err is None:
                records.append(_to_record(m))
            elif err.fatal():
                raise BusError(f"{self._name}: fatal consumer error: {err}")
            else:
                log.info("%s: transient consumer error, will retry: %s", self._name, err)
        return records

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assignment():
            raise BusError(f"cannot seek {tp}: {self._name} does not hold it")
        try:
            self._client.seek(ck.TopicPartition(tp.topic, tp.partition, offset))
        except ck.KafkaException as exc:
            raise BusError(f"{self._name}: seek {tp} to {offset} failed: {exc}") from exc

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching from these partitions (those not held are ignored)."""
        held = self._held(partitions)
        if held:
            self._client.pause(held)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch from these partitions again (those not held are ignored)."""
        held = self._held(partitions)
        if held:
            self._client.resume(held)

    def close(self) -> None:
        """Leave the group (if any) and close; quick even while the broker is away."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        except (ck.KafkaException, RuntimeError) as exc:
            log.warning("%s: consumer close was not clean: %s", self._name, exc)

    def _held(self, partitions: Iterable[TopicPartition]) -> list[ck.TopicPartition]:
        held = self.assignment()
        return [ck.TopicPartition(tp.topic, tp.partition) for tp in partitions if tp in held]


class ConfluentConsumer(_Members):
    """A :class:`Consumer` in a group; make one with :meth:`ConfluentBus.consumer`.

    Rebalances use the eager protocol: every partition is revoked, then the new assignment
    starts at the group's committed offsets (or the earliest, for a new group). Records
    fetched but not committed may come twice.
    """

    def __init__(self, client: ck.Consumer, group: str, topics: Sequence[str]) -> None:
        super().__init__(client, f"group {group}")
        self._assignments = 0
        client.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    @property
    def rebalances(self) -> int:
        return self._assignments

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read.

        Raises :class:`BusError` if the group rebalanced meanwhile (the partitions may now
        belong to another member: drop the uncommitted work) or the broker did not answer.
        """
        if not offsets:
            return
        wanted = [ck.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        try:
            answered = self._client.commit(offsets=wanted, asynchronous=False) or []
        except ck.KafkaException as exc:
            raise self._commit_error(exc.args[0]) from exc
        for tp in answered:
            if tp.error is not None:
                raise self._commit_error(tp.error)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp``, or ``None`` if it has none."""
        try:
            (answer,) = self._client.committed(
                [ck.TopicPartition(tp.topic, tp.partition)], timeout=_REQUEST_TIMEOUT_S
            )
        except ck.KafkaException as exc:
            raise BusError(f"{self._name}: committed({tp}) failed: {exc.args[0]}") from exc
        offset: int = answer.offset
        return offset if offset >= 0 else None

    def _commit_error(self, err: ck.KafkaError) -> BusError:
        if err.code() in _REBALANCED:
            return BusError(
                f"{self._name}: commit rejected because the group rebalanced ({err.name()}); "
                "the partitions may now belong to another member"
            )
        return BusError(f"{self._name}: commit failed: {err}")

    def _on_assign(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        # Runs inside consume(), on the polling thread; librdkafka assigns them after this
        # returns, each at its committed offset (OFFSET_INVALID means "the committed one").
        self._assignments += 1
        self._assigned |= {TopicPartition(tp.topic, tp.partition) for tp in partitions}
        log.info("%s: assigned %d partition(s)", self._name, len(partitions))

    def _on_revoke(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        # Also called for partitions lost without a rebalance (no on_lost is set).
        self._assigned -= {TopicPartition(tp.topic, tp.partition) for tp in partitions}
        log.info("%s: %d partition(s) revoked", self._name, len(partitions))


class ConfluentReader(_Members):
    """A :class:`Consumer` in no group (:meth:`ConfluentBus.reader`): every partition of its
    topics, assigned by hand and read from the start, with no group join to wait for."""

    def __init__(self, client: ck.Consumer, partitions: set[TopicPartition]) -> None:
        topics = sorted({tp.topic for tp in partitions})
        super().__init__(client, f"reader of {topics}")
        self._assigned = frozenset(partitions)
        client.assign(
            [
                ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING)
                for tp in sorted(partitions, key=str)
            ]
        )

    @property
    def rebalances(self) -> int:
        return 1

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise BusError("a reader is in no consumer group: it has nothing to commit to")

    def committed(self, tp: TopicPartition) -> int | None:
        return None


def _to_record(m: Any) -> Record:
    # ``m`` is a consumed ck.Message: its topic, partition, offset and timestamp are set
    # (the stubs say Optional), and its headers are a list of (name, bytes or None).
    headers = m.headers()
    value = m.value()
    return Record(
        m.topic(),
        m.partition(),
        m.offset(),
        m.key(),
        b"" if value is None else value,
        [(k, b"" if v is None else v) for k, v in headers] if headers else [],
        m.timestamp()[1],
    )
