"""What the confluent-kafka bus adds to the contract: its settings, how it is chosen, and
rebalances, commits and outages on a real broker (the contract itself: test_contract.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from driftline.runtime.bus.base import TopicPartition
from driftline.runtime.bus.confluent import ConfluentBus, ConfluentConsumer
from driftline.runtime.bus.confluent_options import librdkafka_options
from driftline.runtime.bus.kafka import KafkaBus
from driftline.runtime.errors import BusError, ConfigError
from driftline.runtime.platform import open_bus
from driftline.runtime.settings import Settings
from tests.conftest import drain, wait_for
from tests.fixtures.kafka import TansuBroker, free_port, make_confluent_test_bus, unique_name

SECURE = Settings(
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="alice",
    kafka_sasl_password=SecretStr("s3cret"),
    kafka_ssl_cafile="/etc/ssl/ca.pem",
)


def test_the_security_settings_become_librdkafkas() -> None:
    assert librdkafka_options(SECURE.kafka_client_options()) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_librdkafka_names_pass_and_other_names_are_refused() -> None:
    assert librdkafka_options({"socket.keepalive.enable": True}) == {
        "socket.keepalive.enable": True
    }
    with pytest.raises(ConfigError, match=r"\['max_poll_records'\] unknown to the confluent bus"):
        librdkafka_options({"max_poll_records": 10})


def test_a_setting_librdkafka_does_not_know_is_a_config_error() -> None:
    bus = ConfluentBus(f"127.0.0.1:{free_port()}", client_options={"no.such.setting": 1})
    with pytest.raises(ConfigError, match="no.such.setting"):
        bus.producer()
    bus.close()


@pytest.mark.parametrize(
    ("url", "kind"), [("confluent://h1:9092,h2:9092", ConfluentBus), ("kafka://h1:9092", KafkaBus)]
)
def test_the_url_scheme_picks_the_client(url: str, kind: type, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, bus=url)
    bus = open_bus(settings)
    try:
        assert isinstance(bus, kind)
        assert bus.bootstrap_servers == url.split("://")[1]
        assert settings.on_kafka
    finally:
        bus.close()


def test_the_secure_settings_make_a_client_librdkafka_accepts() -> None:
    url = f"confluent://127.0.0.1:{free_port()}"
    bus = open_bus(SECURE.model_copy(update={"bus": url, "kafka_ssl_cafile": None}))
    bus.producer()  # librdkafka checks every name and value here, without connecting
    bus.close()


def test_a_ca_file_that_is_not_there_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-ca.pem"
    bus = open_bus(
        SECURE.model_copy(update={"bus": "confluent://h:1", "kafka_ssl_cafile": missing})
    )
    with pytest.raises(ConfigError, match="ssl.ca.location"):
        bus.producer()
    bus.close()


@pytest.mark.kafka
def test_members_split_the_partitions_and_a_rebalance_restarts_from_committed(
    confluent_bus: ConfluentBus,
) -> None:
    topic, group = unique_name("split"), unique_name("g")
    confluent_bus.create_topics([topic], partitions=2)
    producer = confluent_bus.producer()
    for i in range(20):
        producer.send(topic, str(i).encode(), key=str(i).encode())
    producer.flush()
    a = confluent_bus.consumer(group, [topic])
    first = drain(a, 20)
    a.commit({TopicPartition(topic, p): 0 for p in range(2)})  # nothing handled yet
    b = confluent_bus.consumer(group, [topic])
    seen_a: list[bytes] = []
    seen_b: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen_a) + len(seen_b) < 20 and time.monotonic() < deadline:
        seen_a.extend(r.value for r in a.poll(0.2))
        seen_b.extend(r.value for r in b.poll(0.2))
    assert len(first) == 20 and a.rebalances >= 2 and b.rebalances >= 1
    assert a.assignment() and b.assignment() and not a.assignment() & b.assignment()
    assert sorted(seen_a + seen_b, key=int) == [str(i).encode() for i in range(20)]
    for consumer in (a, b):
        consumer.close()
    producer.close()


@pytest.fixture
def outage_bus(tansu_broker: TansuBroker) -> Iterator[ConfluentBus]:
    """A bus on a private broker that gives up on undelivered records after 2.5 s."""
    bus = make_confluent_test_bus(
        tansu_broker.bootstrap,
        {"reconnect.backoff.max.ms": 1000, "message.timeout.ms": 2500},
    )
    yield bus
    bus.close()


@pytest.mark.kafka
def test_flush_reports_records_the_broker_never_acknowledged(
    tansu_broker: TansuBroker, outage_bus: ConfluentBus
) -> None:
    topic = unique_name("lost")
    outage_bus.create_topics([topic])
    producer = outage_bus.producer()
    producer.send(topic, b"delivered")
    producer.flush()
    tansu_broker.kill()
    for i in range(3):
        producer.send(topic, f"lost-{i}".encode())
    started = time.monotonic()
    with pytest.raises(BusError, match="3 record\\(s\\) failed"):
        producer.flush(timeout_s=20)
    assert time.monotonic() - started < 10  # message.timeout.ms, not the flush timeout
    producer.flush(timeout_s=1)  # each failure is reported once


@pytest.mark.kafka
def test_close_is_prompt_while_the_broker_is_down(
    tansu_broker: TansuBroker, outage_bus: ConfluentBus
) -> None:
    topic = unique_name("close")
    outage_bus.create_topics([topic])
    consumer = outage_bus.consumer(unique_name("g"), [topic])
    wait_for(lambda: consumer.poll(0.2) == [] and consumer.assignment(), timeout_s=20)
    producer = outage_bus.producer()
    tansu_broker.kill()
    producer.send(topic, b"pending")
    assert consumer.poll(0.5) == []
    started = time.monotonic()
    outage_bus.close()
    assert time.monotonic() - started < 10
    assert producer.closed and isinstance(consumer, ConfluentConsumer) and consumer.closed
