"""KafkaBus: the :class:`~driftline.runtime.bus.base.Bus` over any Kafka-protocol broker.

Built on kafka-python. Delivery is at least once: the producer waits for every in-sync
replica (``acks="all"``), is idempotent where the broker supports it and retries until
``delivery_timeout_ms``; :meth:`KafkaProducer.flush` raises :class:`BusError` if any record
sent since the previous flush failed, so no record is lost silently. Consumers never
auto-commit: the caller commits what it has processed.

Broker outages do not crash callers. The bus asks the broker its version once, when the
first client is made (if it cannot be reached within ``bootstrap_timeout_ms``, 10 s unless
set in ``client_options``, that call raises :class:`BusError`, which is retryable). After
that, clients are made without touching the network, and kafka-python reconnects in the
background with exponential backoff (0.2 s up to 5 s). While the broker is away,
:meth:`KafkaConsumer.poll` returns ``[]``, ``send`` buffers, ``flush`` and ``commit`` raise
:class:`BusError` when their timeout runs out, and ``close`` gives up after a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import kafka
import kafka.errors as kerrors
from kafka.structs import MemberState

from driftline.runtime.bus.base import Bus, Consumer, Headers, Producer, Record, TopicPartition
from driftline.runtime.errors import BusError, ConfigError

__all__ = ["KafkaBus", "KafkaConsumer", "KafkaProducer"]

log = logging.getLogger(__name__)

#: Defaults shared by every client; ``client_options`` override them.
_COMMON_DEFAULTS: dict[str, Any] = {
    # Retry a lost broker quickly at first, then settle at one attempt every 5 s.
    "reconnect_backoff_ms": 200,
    "reconnect_backoff_max_ms": 5_000,
    "request_timeout_ms": 15_000,
    "bootstrap_timeout_ms": 10_000,
}
_PRODUCER_DEFAULTS: dict[str, Any] = {
    # Idempotence is kafka-python's default: on when the broker supports it.
    "acks": "all",
    "linger_ms": 5,
    "delivery_timeout_ms": 120_000,
    # send() waits at most this long for the metadata of a topic it has not seen yet.
    "max_block_ms": 10_000,
    # Topics are made on purpose (create_topics), never by a typo in a topic name.
    "allow_auto_create_topics": False,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "allow_auto_create_topics": False,
}
_CLIENT_CLASSES: tuple[type, ...] = (
    kafka.KafkaProducer,
    kafka.KafkaConsumer,
    kafka.KafkaAdminClient,
)
_CLOSE_TIMEOUT_S = 5.0
_TOPIC_WAIT_MS = 15_000


class KafkaProducer(Producer):
    """A :class:`Producer` over kafka-python's; make one with :meth:`KafkaBus.producer`.

    After a :meth:`flush` that reports failed records, or a fatal error in the underlying
    client, the next :meth:`send` starts a fresh kafka-python client: an idempotent
    producer whose id the broker forgot (as after a memory-only broker restarts) can
    otherwise fail every later record.
    """

    def __init__(self, connect: Callable[[], kafka.KafkaProducer]) -> None:
        self._connect = connect
        self._client = connect()
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()  # guards _errors; taken on kafka-python's sender thread
        self._swap_lock = threading.Lock()  # guards replacing _client
        self._replace = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Queue one record; :meth:`flush` confirms its delivery or reports its failure."""
        try:
            client = self._live_client()
            future = client.send(topic, value=value, key=key, headers=list(headers or []))
        except kerrors.KafkaError as exc:
            raise BusError(f"send to {topic!r} failed: {exc!r}") from exc
        future.add_errback(self._record_failure)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise :class:`BusError` if any failed since last flush."""
        try:
            self._client.flush(timeout=timeout_s)
        except kerrors.KafkaError as exc:
            raise BusError(
                f"flush: records not acknowledged within {timeout_s} s ({exc!r}); "
                "is the broker reachable?"
            ) from exc
        self._raise_failures()

    def close(self) -> None:
        """Deliver what is queued within a few seconds, then close; never raises."""
        if self._closed:
            return
        self._closed = True
        _close_producer_client(self._client, _CLOSE_TIMEOUT_S)
        with self._lock:
            if self._errors:
                log.warning("producer closed; %d record(s) were not delivered", len(self._errors))

    def _live_client(self) -> kafka.KafkaProducer:
        with self._swap_lock:
            if self._replace or _has_fatal_error(self._client):
                log.info("replacing the kafka producer after failed sends")
                _close_producer_client(self._client, 0)
                self._client = self._connect()
                self._replace = False
            return self._client

    def _record_failure(self, exc: BaseException) -> None:
        # Runs on kafka-python's sender thread.
        with self._lock:
            self._errors.append(exc)

    def _raise_failures(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            self._replace = True
            raise BusError(
                f"{len(errors)} record(s) failed to send since the last flush; "
                f"first error: {errors[0]!r}"
            ) from errors[0]


def _has_fatal_error(client: kafka.KafkaProducer) -> bool:
    # kafka-python has no public flag for "this producer is dead"; an idempotent producer in
    # the FATAL state fails every later send until it is replaced.
    manager = getattr(client, "_transaction_manager", None)
    return manager is not None and bool(manager.has_fatal_error())


def _close_producer_client(client: kafka.KafkaProducer, timeout_s: float) -> None:
    try:
        client.close(timeout=timeout_s)
        return
    except kerrors.KafkaTimeoutError:
        log.warning("kafka producer closed with records undelivered (broker unreachable?)")
    # kafka-python's close() flushes first; when that times out it returns with its I/O
    # thread and sockets still open. Abort the undelivered batches so the close completes.
    client._sender.force_close()
    client._sender.join(1.0)
    try:
        client.close(timeout=0)
    except kerrors.KafkaError as exc:
        log.warning("kafka producer did not close cleanly: %r", exc)


class KafkaConsumer(Consumer):
    """A :class:`Consumer` over kafka-python's; make one with :meth:`KafkaBus.consumer`.

    After every rebalance each assigned partition restarts at the group's committed offset
    (kafka-python would carry on from where this member had read a partition it keeps), so
    records whose commit failed are read again and a broker that lost its log is read from
    its start. At least once: records fetched but not committed may come twice.

    Poll it often, from one thread: kafka-python 3.0.12 drops a group join that completes
    between two polls and joins again, so a member left unpolled during a rebalance (or
    several members polled in turn from one thread) can keep its group rebalancing. It can
    also leave a group leader half-joined after a topic's partition count changes (holding
    nothing, sending no heartbeats); a member rebalancing for longer than any rebalance may
    last (``max_poll_interval_ms + session_timeout_ms``) leaves and joins again.
    """

    def __init__(self, client: kafka.KafkaConsumer, group: str, topics: Sequence[str]) -> None:
        self._client = client
        self._group = group
        self._topics = list(topics)
        self._closed = False
        self._timeout_ms: int = client.config["request_timeout_ms"]
        self._rebalanced = threading.Event()
        self._listener = _RebalanceListener(self._rebalanced)
        limit_ms = client.config["max_poll_interval_ms"] + client.config["session_timeout_ms"]
        self._join_watch = _StuckJoinWatch(limit_ms / 1000)
        client.subscribe(self._topics, listener=self._listener)

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        """Records from the assigned partitions; ``[]`` on timeout or while the broker is away."""
        try:
            batches = self._client.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
            if self._join_watch.stuck(self._client.group_metadata().state):
                self._rejoin()
            if self._rebalanced.is_set():
                self._rewind_to_committed()
                return []  # fetched from the old positions: read again after the rewind
        except kerrors.RetriableError as exc:
            log.info("group %s: poll hit a transient error, will retry: %r", self._group, exc)
            return []
        except kerrors.KafkaError as exc:
            raise BusError(f"group {self._group}: poll failed: {exc!r}") from exc
        return [_to_record(r) for records in batches.values() for r in records]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read.

        Raises :class:`BusError` if the group rebalanced meanwhile (the partitions may now
        belong to another member: drop the uncommitted work) or the broker did not answer.
        """
        if not offsets:
            return
        kafka_offsets = {
            _to_kafka_tp(tp): kafka.OffsetAndMetadata(offset, "", -1)
            for tp, offset in offsets.items()
        }
        try:
            self._client.commit(kafka_offsets)
        except kerrors.CommitFailedError as exc:
            raise BusError(
                f"group {self._group}: commit rejected because the group rebalanced; "
                "the partitions may now belong to another member"
            ) from exc
        except kerrors.KafkaError as exc:
            raise BusError(f"group {self._group}: commit failed: {exc!r}") from exc

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp``, or ``None`` if it has none."""
        try:
            offset: int | None = self._client.committed(
                _to_kafka_tp(tp), timeout_ms=self._timeout_ms
            )
        except kerrors.KafkaError as exc:
            raise BusError(f"group {self._group}: committed({tp}) failed: {exc!r}") from exc
        return offset

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._client.assignment()}

    @property
    def rebalances(self) -> int:
        return int(self._listener.assignments)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if _to_kafka_tp(tp) not in self._client.assignment():
            raise BusError(f"cannot seek {tp}: not assigned to this member")
        self._client.seek(_to_kafka_tp(tp), offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching from these partitions (those not assigned are ignored)."""
        self._client.pause(*self._assigned(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch from these partitions again (those not assigned are ignored)."""
        self._client.resume(*self._assigned(partitions))

    def close(self) -> None:
        """Leave the group and close; gives up after a few seconds if the broker is away."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close(autocommit=False, timeout_ms=int(_CLOSE_TIMEOUT_S * 1000))
        except kerrors.KafkaError as exc:
            log.warning("group %s: consumer close was not clean: %r", self._group, exc)

    def _assigned(self, partitions: Iterable[TopicPartition]) -> list[kafka.TopicPartition]:
        assigned = self._client.assignment()
        return [tp for tp in map(_to_kafka_tp, partitions) if tp in assigned]

    def _rewind_to_committed(self) -> None:
        self._rebalanced.clear()
        try:
            for tp in self._client.assignment():
                offset = self._client.committed(tp, timeout_ms=self._timeout_ms)
                if offset is None:
                    self._client.seek_to_beginning(tp)  # as auto_offset_reset="earliest"
                else:
                    self._client.seek(tp, offset)
        except BaseException:
            self._rebalanced.set()  # try again on the next poll
            raise

    def _rejoin(self) -> None:
        log.warning("group %s: member stuck rebalancing; leaving and joining again", self._group)
        self._client.unsubscribe()
        self._client.subscribe(self._topics, listener=self._listener)


class KafkaReader(Consumer):
    """A :class:`Consumer` in no group (:meth:`KafkaBus.reader`): every partition of its
    topics, assigned by hand and read from the start, with no group join to wait for."""

    def __init__(self, client: kafka.KafkaConsumer, partitions: set[TopicPartition]) -> None:
        self._client = client
        self._closed = False
        self._partitions = set(partitions)
        client.assign([_to_kafka_tp(tp) for tp in sorted(partitions, key=str)])
        client.seek_to_beginning()

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        try:
            batches = self._client.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except kerrors.RetriableError:
            return []
        except kerrors.KafkaError as exc:
            raise BusError(
                f"reader of {sorted({tp.topic for tp in self._partitions})}: {exc!r}"
            ) from exc
        return [_to_record(r) for records in batches.values() for r in records]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise BusError("a reader is in no consumer group: it has nothing to commit to")

    def committed(self, tp: TopicPartition) -> int | None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    @property
    def rebalances(self) -> int:
        return 1

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._partitions:
            raise BusError(f"cannot seek {tp}: this reader does not hold it")
        self._client.seek(_to_kafka_tp(tp), offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._client.pause(*[_to_kafka_tp(tp) for tp in partitions if tp in self._partitions])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._client.resume(*[_to_kafka_tp(tp) for tp in partitions if tp in self._partitions])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close(autocommit=False, timeout_ms=int(_CLOSE_TIMEOUT_S * 1000))


class _StuckJoinWatch:
    """Says when a member has been rebalancing for longer than ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self._since: float | None = None

    def stuck(self, state: str) -> bool:
        if state != MemberState.REBALANCING:
            self._since = None
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since < self._limit_s:
            return False
        self._since = None
        return True


class _RebalanceListener(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Flags each new assignment; runs on kafka-python's I/O thread."""

    def __init__(self, rebalanced: threading.Event) -> None:
        self._rebalanced = rebalanced
        self.assignments = 0

    def on_partitions_revoked(self, revoked: object) -> None:
        pass

    def on_partitions_assigned(self, assigned: object) -> None:
        self.assignments += 1
        self._rebalanced.set()


_Client = TypeVar("_Client", KafkaProducer, KafkaConsumer, KafkaReader)


class KafkaBus(Bus):
    """A :class:`Bus` on a Kafka-protocol cluster.

    Args:
        bootstrap_servers: ``host:port[,host:port...]``.
        partitions: partitions of the topics made by :meth:`create_topics`.
        replication_factor: replicas of the topics made by :meth:`create_topics`.
        client_options: kafka-python settings (``security_protocol``, ``sasl_*``, ``ssl_*``,
            timeouts...); each client gets those it understands. Unknown names raise
            :class:`ConfigError`.
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
        options = dict(client_options or {})
        _check_options(options)
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self._options: dict[str, Any] = {
            **_COMMON_DEFAULTS,
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": client_id,
            **options,
        }
        self._group_options = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
        }
        self._admin: kafka.KafkaAdminClient | None = None
        self._clients: list[KafkaProducer | KafkaConsumer | KafkaReader] = []
        self._lock = threading.Lock()

    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet, and wait until all of them are usable."""
        if not names:
            return
        spec = {
            "num_partitions": partitions or self.partitions,
            "replication_factor": self.replication_factor,
        }
        admin = self._admin_client()
        try:
            response = admin.create_topics({name: spec for name in names}, raise_errors=False)
            _check_created(response)
            admin.wait_for_topics(list(names), timeout_ms=_TOPIC_WAIT_MS)
        except kerrors.KafkaError as exc:
            raise BusError(f"creating topics {list(names)} failed: {exc!r}") from exc

    def partition_count(self, topic: str) -> int:
        try:
            topics = self._admin_client().describe_topics([topic])
        except kerrors.KafkaError as exc:
            raise BusError(f"describing topic {topic!r} failed: {exc!r}") from exc
        for t in topics:
            if t.get("name", t.get("topic")) == topic and not t.get("error_code"):
                return len(t.get("partitions") or [])
        return 0

    def topics(self) -> list[str]:
        try:
            names = self._admin_client().list_topics()
        except kerrors.KafkaError as exc:
            raise BusError(f"listing topics failed: {exc!r}") from exc
        return sorted(str(n) for n in names)

    def producer(self) -> KafkaProducer:
        """A new producer; close it (or the bus) when done."""
        options = {**_PRODUCER_DEFAULTS, **self._client_options()}
        return self._track(KafkaProducer(lambda: self._make(kafka.KafkaProducer, options)))

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        """A new member of ``group``, subscribed to ``topics`` (created if missing); close it (or
        the bus) when done."""
        self.create_topics(topics)
        options = {
            **_CONSUMER_DEFAULTS,
            **self._group_options,
            **self._client_options(),
            "group_id": group,
        }
        client = self._make(kafka.KafkaConsumer, options)
        return self._track(KafkaConsumer(client, group, topics))

    def reader(self, topics: Sequence[str]) -> KafkaReader:
        """A consumer in no group holding every partition of ``topics`` (no join to wait)."""
        options = {**_CONSUMER_DEFAULTS, **self._client_options(), "group_id": None}
        client = self._make(kafka.KafkaConsumer, options)
        partitions = {TopicPartition(t, p) for t in topics for p in range(self.partition_count(t))}
        return self._track(KafkaReader(client, partitions))

    def close(self) -> None:
        """Close every producer and consumer made by this bus, and its admin client."""
        with self._lock:
            clients, self._clients = self._clients, []
            admin, self._admin = self._admin, None
        for client in clients:
            client.close()
        if admin is not None:
            admin.close()

    def _client_options(self) -> dict[str, Any]:
        """Options with ``api_version`` pinned, so making a client never waits for the broker."""
        with self._lock:
            if self._options.get("api_version") is None:
                self._options["api_version"] = self._probe_version()
            return dict(self._options)

    def _probe_version(self) -> tuple[int, ...]:
        # kafka-python's own clients leak a thread and sockets when their constructor cannot
        # reach the broker; this bare network client is closed whatever happens.
        client = kafka.KafkaConsumer.DEFAULT_CONFIG["kafka_client"](**self._options)
        try:
            version: tuple[int, ...] = client.check_version(
                timeout_ms=self._options["bootstrap_timeout_ms"]
            )
        except kerrors.KafkaError as exc:
            raise self._unreachable(exc) from exc
        finally:
            client.close()
        return version

    def _make(self, client_cls: type, options: dict[str, Any]) -> Any:
        try:
            return client_cls(**_options_for(client_cls, options))
        except kerrors.KafkaError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> BusError:
        return BusError(
            f"cannot reach Kafka at {self.bootstrap_servers}: {exc!r}; is the broker running, "
            "and are bootstrap_servers and client_options (security, SASL, SSL) right?"
        )

    def _admin_client(self) -> kafka.KafkaAdminClient:
        options = self._client_options()  # probes first: a failed admin constructor leaks
        with self._lock:
            if self._admin is None:
                self._admin = self._make(kafka.KafkaAdminClient, options)
            return self._admin

    def _track(self, client: _Client) -> _Client:
        with self._lock:
            self._clients = [c for c in self._clients if not c.closed]
            self._clients.append(client)
        return client


def _options_for(client_cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``client_cls`` understands."""
    known = client_cls.DEFAULT_CONFIG  # type: ignore[attr-defined]
    return {k: v for k, v in options.items() if k in known}


def _check_options(options: dict[str, Any]) -> None:
    known = set().union(*(cls.DEFAULT_CONFIG for cls in _CLIENT_CLASSES))  # type: ignore[attr-defined]
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"client_options: unknown kafka-python setting(s) {unknown}; valid names are "
            "those of KafkaProducer, KafkaConsumer and KafkaAdminClient"
        )


def _check_created(response: dict[str, Any]) -> None:
    for topic in response["topics"]:
        error = kerrors.for_code(topic["error_code"])
        if error in (kerrors.NoError, kerrors.TopicAlreadyExistsError):
            continue
        message = topic.get("error_message") or "no message"
        raise BusError(f"creating topic {topic['name']!r} failed: {error.__name__} ({message})")


def _to_kafka_tp(tp: TopicPartition) -> kafka.TopicPartition:
    return kafka.TopicPartition(tp.topic, tp.partition)


def _to_record(r: Any) -> Record:
    return Record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value if r.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in r.headers],
        timestamp_ms=r.timestamp,
    )
