"""librdkafka settings for :mod:`driftline.runtime.bus.confluent`: defaults and the
translation of the kafka-python names that :class:`~driftline.runtime.settings.Settings`
produces (one set of ``DRIFTLINE_KAFKA_*`` settings serves both Kafka buses)."""

from __future__ import annotations

from typing import Any

from driftline.runtime.errors import ConfigError

__all__ = [
    "COMMON_DEFAULTS",
    "CONSUMER_DEFAULTS",
    "KAFKA_PYTHON_NAMES",
    "PRODUCER_DEFAULTS",
    "librdkafka_options",
]

#: kafka-python setting → librdkafka setting, for the security settings Driftline passes.
KAFKA_PYTHON_NAMES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "client_id": "client.id",
}

#: Defaults shared by every client; ``client_options`` override them.
COMMON_DEFAULTS: dict[str, Any] = {
    # Retry a lost broker quickly at first, then settle at one attempt every 5 s.
    "reconnect.backoff.ms": 200,
    "reconnect.backoff.max.ms": 5_000,
    "socket.timeout.ms": 15_000,
    # Topics are made on purpose (create_topics), never by a typo in a topic name or by a
    # metadata request for one that does not exist (partition_count).
    "allow.auto.create.topics": False,
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "message.timeout.ms": 120_000,
    "delivery.report.only.error": True,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
}


def librdkafka_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with kafka-python's names turned into librdkafka's.

    Dotted names are librdkafka's own and pass as they are (librdkafka checks them when a
    client is made); any other name raises :class:`ConfigError`.
    """
    translated: dict[str, Any] = {}
    unknown = []
    for name, value in options.items():
        if "." in name:
            translated[name] = value
        elif name in KAFKA_PYTHON_NAMES:
            translated[KAFKA_PYTHON_NAMES[name]] = value
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(
            f"client_options: setting(s) {sorted(unknown)} unknown to the confluent bus; use "
            f"librdkafka's dotted names (e.g. 'socket.keepalive.enable') or one of "
            f"{sorted(KAFKA_PYTHON_NAMES)}"
        )
    return translated
