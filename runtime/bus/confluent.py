"""ConfluentBus: the :class:`~driftline.runtime.bus.base.Bus` over confluent-kafka (librdkafka).

The optional fast bus: ``pip install 'driftline[fast]'`` and point the bus URL at
``confluent://host:port[,host:port...]``. It keeps :class:`~driftline.runtime.bus.kafka.KafkaBus`'s
semantics, on a client several times faster per record (shared/NOTES.md):

- the producer waits for every in-sync replica (``acks=all``), is idempotent, and retries
  until ``message.timeout.ms``; :meth:`ConfluentProducer.flush` raises :class:`BusError` if
  a record sent since the previous flush failed, and a producer hit by a fatal error (an
  idempotent producer whose id a restarted broker forgot) is replaced on the next send;
- consumers never commit by themselves: the caller commits what it has processed. After
  every rebalance each assigned partition starts at the group's committed offset (the eager
  protocol revokes everything first), so at least once holds across rebalances, and
  :attr:`ConfluentConsumer.rebalances` counts the assignments so the runner rebuilds state;
- broker outages do not crash callers: librdkafka reconnects in the background (0.2 s
  backoff up to 5 s); while the broker is away ``poll`` returns ``[]``, ``send`` buffers,
  ``flush``, ``commit`` and the admin calls raise :class:`BusError` when their time runs out.

``client_options`` take the kafka-python names the settings produce (``security_protocol``,
``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``,
``ssl_certfile``, ``ssl_keyfile``), translated to librdkafka's, or librdkafka's own dotted
names (``socket.keepalive.enable``), passed through as they are.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.runtime.bus.base import Bus, Consumer, Headers, Producer, Record, TopicPartition
from driftline.runtime.bus.confluent_options import (
    COMMON_DEFAULTS,
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    librdkafka_options,
)
from driftline.runtime.errors import BusError, ConfigError

__all__ = ["ConfluentBus", "ConfluentConsumer", "ConfluentProducer", "ConfluentReader"]

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection attempts during an outage, group changes).
_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")

_CLOSE_TIMEOUT_S = 5.0
_REQUEST_TIMEOUT_S = 15.0
_TOPIC_WAIT_S = 15.0
_FULL_QUEUE_WAIT_S = 10.0
#: Error codes meaning "the group moved on": a commit now may hand work to no one.
_REBALANCED = {
    ck.KafkaError.REBALANCE_IN_PROGRESS,
    ck.KafkaError.ILLEGAL_GENERATION,
    ck.KafkaError.UNKNOWN_MEMBER_ID,
    ck.KafkaError._ASSIGNMENT_LOST,
}


class ConfluentProducer(Producer):
    """A :class:`Producer` over confluent-kafka's; make one with :meth:`ConfluentBus.producer`.

    Only failed deliveries call back (``delivery.report.only.error``): a good record costs no
    Python call. After a failed :meth:`flush` or a fatal error, the next :meth:`send` starts
    a fresh client.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = {**config, "on_delivery": self._record_failure, "error_cb": self._on_error}
        self._errors: list[ck.KafkaError] = []
        self._replace = False
        self._closed = False
        self._client = self._connect()

    @property
    def closed(self) -> bool:
        return self._closed

    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Queue one record; :meth:`flush` confirms its delivery or reports its failure."""
        client = self._live_client() if self._replace else self._client
        try:
            # confluent-kafka's type for headers is wider (str and None values too)
            client.produce(topic, value, key, headers=headers or None)  # type: ignore[arg-type]
        except BufferError:  # the local queue is full: deliver some, then try once more
            client.flush(_FULL_QUEUE_WAIT_S)
            self._produce_again(client, topic, value, key, headers)
        except ck.KafkaException as exc:
            self._replace = self._replace or exc.args[0].fatal()
            raise BusError(f"send to {topic!r} failed: {exc.args[0]}") from exc

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise :class:`BusError` if any failed since last flush."""
        left = self._client.flush(timeout_s)
        self._raise_failures()
        if left:
            raise BusError(
                f"flush: {left} record(s) not acknowledged within {timeout_s} s; "
                "is the broker reachable?"
            )

    def close(self) -> None:
        """Deliver what is queued within a few seconds, then drop the client; never raises."""
        if self._closed:
            return
        self._closed = True
        left = self._client.flush(_CLOSE_TIMEOUT_S)
        if left or self._errors:
            log.warning(
                "producer closed; %d record(s) were not delivered", left + len(self._errors)
            )
        _close_producer_client(self._client)

    def _connect(self) -> ck.Producer:
        try:
            return ck.Producer(self._config)
        except ck.KafkaException as exc:
            raise ConfigError(f"confluent-kafka producer settings: {exc.args[0]}") from exc

    def _live_client(self) -> ck.Producer:
        if self._replace:
            log.info("replacing the confluent-kafka producer after failed sends")
            _close_producer_client(self._client)
            self._client = self._connect()
            self._replace = False
        return self._client

    def _produce_again(
        self,
        client: ck.Producer,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers | None,
    ) -> None:
        try:
            client.produce(topic, value, key, headers=headers or None)  # type: ignore[arg-type]
        except BufferError as exc:
            raise BusError(
                f"send to {topic!r}: the local queue stayed full for {_FULL_QUEUE_WAIT_S} s; "
                "is the broker reachable?"
            ) from exc

    def _record_failure(self, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is not None:  # runs inside flush/produce, on the caller's thread
            self._errors.append(err)

    def _on_error(self, err: ck.KafkaError) -> None:
        if err.fatal():
            log.warning("confluent-kafka producer hit a fatal error: %s", err)
            self._replace = True
        else:
            log.info("confluent-kafka producer: %s", err)

    def _raise_failures(self) -> None:
        errors, self._errors = self._errors, []
        if errors:
            self._replace = True
            raise BusError(
                f"{len(errors)} record(s) failed to send since the last flush; "
                f"first error: {errors[0]}"
            )


def _close_producer_client(client: ck.Producer) -> None:
    """Drop what is still queued and close the client's connections now."""
    client.purge(in_queue=True, in_flight=True)
    client.close()


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


_Client = TypeVar("_Client", ConfluentProducer, ConfluentConsumer, ConfluentReader)


class ConfluentBus(Bus):
    """A :class:`Bus` on a Kafka-protocol cluster, through confluent-kafka.

    Args:
        bootstrap_servers: ``host:port[,host:port...]``.
        partitions: partitions of the topics made by :meth:`create_topics`.
        replication_factor: replicas of the topics made by :meth:`create_topics`.
        client_options: security settings with kafka-python's names (as
            :meth:`Settings.kafka_client_options` gives them) or any librdkafka setting by
            its dotted name. Other names raise :class:`ConfigError`.
        session_timeout_ms: a consumer silent this long is dropped from its group.
        heartbeat_interval_ms: at most a third of ``session_timeout_ms``.
        max_poll_interval_ms: a consumer not polling this long leaves its group.
        client_id: names the clients in broker logs and metrics.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 3,
        replication_factor: int = 1,
        client_options: dict[str, Any] | None = None,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 2000,
        max_poll_interval_ms: int = 300000,
        client_id: str = "driftline",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self._identity = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "logger": _LIBRDKAFKA_LOG,
        }
        self._options = librdkafka_options(client_options or {})
        self._group_config = {
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": heartbeat_interval_ms,
            "max.poll.interval.ms": max_poll_interval_ms,
        }
        self._admin: AdminClient | None = None
        self._clients: list[ConfluentProducer | ConfluentConsumer | ConfluentReader] = []
        self._lock = threading.Lock()

    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet, and wait until all of them are usable."""
        if not names:
            return
        count = partitions or self.partitions
        new = [
            NewTopic(n, num_partitions=count, replication_factor=self.replication_factor)
            for n in names
        ]
        futures = self._admin_client().create_topics(new, request_timeout=_REQUEST_TIMEOUT_S)
        for name, future in futures.items():
            try:
                future.result(timeout=_REQUEST_TIMEOUT_S)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._failed(f"creating topic {name!r}", exc) from exc
        self._wait_for_topics(names)

    def partition_count(self, topic: str) -> int:
        try:
            metadata = self._admin_client().list_topics(topic=topic, timeout=_REQUEST_TIMEOUT_S)
        except ck.KafkaException as exc:
            raise self._failed(f"describing topic {topic!r}", exc) from exc
        found = metadata.topics.get(topic)
        return 0 if found is None or found.error is not None else len(found.partitions)

    def producer(self) -> ConfluentProducer:
        """A new producer; close it (or the bus) when done."""
        return self._track(ConfluentProducer(self._config(PRODUCER_DEFAULTS)))

    def consumer(self, group: str, topics: Sequence[str]) -> ConfluentConsumer:
        """A new member of ``group``, subscribed to ``topics``; close it (or the bus) when done."""
        config = self._config(CONSUMER_DEFAULTS, self._group_config, {"group.id": group})
        return self._track(ConfluentConsumer(self._consumer_client(config), group, topics))

    def reader(self, topics: Sequence[str]) -> ConfluentReader:
        """A consumer in no group holding every partition of ``topics`` (no join to wait)."""
        # librdkafka wants a group.id even for assign(); a reader never joins or commits it.
        group = f"driftline-reader-{uuid.uuid4().hex}"
        client = self._consumer_client(self._config(CONSUMER_DEFAULTS, {"group.id": group}))
        partitions = {TopicPartition(t, p) for t in topics for p in range(self.partition_count(t))}
        return self._track(ConfluentReader(client, partitions))

    def close(self) -> None:
        """Close every producer and consumer made by this bus, and its admin client."""
        with self._lock:
            clients, self._clients = self._clients, []
            admin, self._admin = self._admin, None
        for client in clients:
            client.close()
        if admin is not None:
            admin.__exit__(None, None, None)  # AdminClient's only way to close its connections

    def _config(self, *layers: dict[str, Any]) -> dict[str, Any]:
        """Defaults, then ``layers``, then the caller's ``client_options`` over them all."""
        config = dict(COMMON_DEFAULTS)
        for layer in layers:
            config.update(layer)
        return {**config, **self._identity, **self._options}

    def _consumer_client(self, config: dict[str, Any]) -> ck.Consumer:
        try:
            return ck.Consumer(config)
        except (ck.KafkaException, ValueError) as exc:
            raise ConfigError(f"confluent-kafka consumer settings: {exc}") from exc

    def _admin_client(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                try:
                    self._admin = AdminClient(self._config())
                except ck.KafkaException as exc:
                    raise ConfigError(f"confluent-kafka admin settings: {exc.args[0]}") from exc
            return self._admin

    def _wait_for_topics(self, names: Sequence[str]) -> None:
        deadline = time.monotonic() + _TOPIC_WAIT_S
        waiting = [n for n in names if not self._usable(n)]
        while waiting:
            if time.monotonic() > deadline:
                raise BusError(f"topics {waiting} not usable within {_TOPIC_WAIT_S} s")
            time.sleep(0.1)
            waiting = [n for n in waiting if not self._usable(n)]

    def _usable(self, topic: str) -> bool:
        try:
            metadata = self._admin_client().list_topics(topic=topic, timeout=_REQUEST_TIMEOUT_S)
        except ck.KafkaException as exc:
            raise self._failed(f"describing topic {topic!r}", exc) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return False
        return all(p.leader >= 0 for p in found.partitions.values())

    def _failed(self, what: str, exc: ck.KafkaException) -> BusError:
        return BusError(
            f"{what} failed on Kafka at {self.bootstrap_servers}: {exc.args[0]}; is the broker "
            "running, and are bootstrap_servers and client_options (security, SASL, SSL) right?"
        )

    def _track(self, client: _Client) -> _Client:
        with self._lock:
            self._clients = [c for c in self._clients if not c.closed]
            self._clients.append(client)
        return client


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
