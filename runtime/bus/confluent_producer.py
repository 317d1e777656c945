"""ConfluentProducer: the :class:`~driftline.runtime.bus.base.Producer` of
:mod:`driftline.runtime.bus.confluent`, over confluent-kafka's."""

from __future__ import annotations

import logging
from typing import Any

import confluent_kafka as ck

from driftline.runtime.bus.base import Headers, Producer
from driftline.runtime.errors import BusError, ConfigError

__all__ = ["ConfluentProducer"]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0
_FULL_QUEUE_WAIT_S = 10.0


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
    """Drop what is still queued and close the client's connections now. Each dropped
    record is reported as failed (``_PURGE_QUEUE``), so the next :meth:`flush` says so."""
    client.purge(in_queue=True, in_flight=True)
    client.poll(0)
    client.close()
