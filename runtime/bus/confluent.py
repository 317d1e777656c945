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
from collections.abc import Sequence
from typing import Any, TypeVar

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.runtime.bus.base import Bus, TopicPartition
from driftline.runtime.bus.confluent_consumer import ConfluentConsumer, ConfluentReader
from driftline.runtime.bus.confluent_options import (
    COMMON_DEFAULTS,
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    librdkafka_options,
)
from driftline.runtime.bus.confluent_producer import ConfluentProducer
from driftline.runtime.errors import BusError, ConfigError

__all__ = ["ConfluentBus", "ConfluentConsumer", "ConfluentProducer", "ConfluentReader"]

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection attempts during an outage, group changes).
_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")

_REQUEST_TIMEOUT_S = 15.0
_TOPIC_WAIT_S = 15.0


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

    def topics(self) -> list[str]:
        try:
            metadata = self._admin_client().list_topics(timeout=_REQUEST_TIMEOUT_S)
        except ck.KafkaException as exc:
            raise self._failed("listing topics", exc) from exc
        return sorted(metadata.topics)

    def producer(self) -> ConfluentProducer:
        """A new producer; close it (or the bus) when done."""
        return self._track(ConfluentProducer(self._config(PRODUCER_DEFAULTS)))

    def consumer(self, group: str, topics: Sequence[str]) -> ConfluentConsumer:
        """A new member of ``group``, subscribed to ``topics`` (created if missing); close it (or
        the bus) when done."""
        self.create_topics(topics)
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
