"""One contract, three buses: every test here runs on the embedded bus and on Kafka, through
kafka-python and through confluent-kafka."""

from __future__ import annotations

import uuid

import pytest

from driftline.runtime.bus.base import Bus, TopicPartition
from driftline.runtime.errors import BusError
from tests.conftest import drain


@pytest.fixture
def bus(every_bus: Bus) -> Bus:
    return every_bus


def _topic() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


def test_produce_then_consume_with_keys_and_headers(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=3)
    producer = bus.producer()
    for i in range(30):
        producer.send(
            topic, f"v{i}".encode(), key=f"k{i % 3}".encode(), headers=[("n", str(i).encode())]
        )
    producer.flush()
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    records = drain(consumer, 30)
    consumer.close()
    producer.close()
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(30))
    by_key: dict[bytes | None, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
        assert r.header("n") == r.value[1:]
    assert all(len(parts) == 1 for parts in by_key.values()), "one key, one partition"
    for part in {r.partition for r in records}:  # order within a partition is send order
        values = [int(r.value[1:]) for r in records if r.partition == part]
        assert values == sorted(values)


def test_topics_lists_what_was_created(bus: Bus) -> None:
    names = [_topic(), _topic() + ".dlq"]
    bus.create_topics(names)
    listed = bus.topics()
    assert set(names) <= set(listed) and listed == sorted(listed)


def test_committed_offsets_survive_a_new_consumer(bus: Bus) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    bus.create_topics([topic], partitions=1)
    producer = bus.producer()
    for i in range(10):
        producer.send(topic, str(i).encode())
    producer.flush()
    first = bus.consumer(group, [topic])
    records = drain(first, 10)
    tp = TopicPartition(topic, 0)
    first.commit({tp: records[5].offset + 1})  # handled 0..5 only
    assert first.committed(tp) == records[5].offset + 1
    first.close()
    second = bus.consumer(group, [topic])
    rest = drain(second, 4)
    second.close()
    producer.close()
    assert [r.value for r in rest] == [b"6", b"7", b"8", b"9"]


def test_groups_are_independent(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=2)
    producer = bus.producer()
    for i in range(6):
        producer.send(topic, str(i).encode())
    producer.flush()
    a = bus.consumer(f"a-{uuid.uuid4().hex[:6]}", [topic])
    b = bus.consumer(f"b-{uuid.uuid4().hex[:6]}", [topic])
    assert len(drain(a, 6)) == 6 and len(drain(b, 6)) == 6
    a.close()
    b.close()
    producer.close()


def test_pause_stops_delivery_until_resume(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=1)
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    drain(consumer, 1, timeout_s=3)  # joins the group
    assignment = consumer.assignment()
    assert assignment == {TopicPartition(topic, 0)}
    consumer.pause(assignment)
    producer = bus.producer()
    producer.send(topic, b"x")
    producer.flush()
    assert drain(consumer, 1, timeout_s=2) == []
    consumer.resume(assignment)
    assert [r.value for r in drain(consumer, 1)] == [b"x"]
    consumer.close()
    producer.close()


def test_create_topics_is_idempotent(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=2)
    bus.create_topics([topic], partitions=2)
    producer = bus.producer()
    producer.send(topic, b"ok")
    producer.flush()
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    assert [r.value for r in drain(consumer, 1)] == [b"ok"]
    consumer.close()
    producer.close()


def test_a_consumer_of_a_topic_not_made_yet_gets_what_is_published_later(bus: Bus) -> None:
    topic = _topic()
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic])
    assert bus.partition_count(topic) > 0, "subscribing made the topic"
    assert drain(consumer, 1, timeout_s=3) == []  # joined, nothing to read yet
    producer = bus.producer()
    producer.send(topic, b"later")
    producer.flush()
    assert [r.value for r in drain(consumer, 1)] == [b"later"]
    consumer.close()
    producer.close()


def test_partition_counts(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=2)
    assert bus.partition_count(topic) == 2
    assert bus.partition_count(f"{topic}-never-made") == 0


def test_seek_moves_a_readers_partition(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=1)
    producer = bus.producer()
    for i in range(10):
        producer.send(topic, str(i).encode())
    producer.flush()
    producer.close()
    reader = bus.reader([topic])
    reader.seek(TopicPartition(topic, 0), 7)
    after = drain(reader, 3)
    assert [r.offset for r in after] == [7, 8, 9]
    reader.close()


def test_a_reader_holds_every_partition_at_once_and_cannot_commit(bus: Bus) -> None:
    topic = _topic()
    bus.create_topics([topic], partitions=2)
    producer = bus.producer()
    for i in range(6):
        producer.send(topic, str(i).encode(), key=str(i).encode())
    producer.flush()
    producer.close()
    reader = bus.reader([topic])
    assert reader.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    assert sorted(r.value for r in drain(reader, 6)) == [str(i).encode() for i in range(6)]
    with pytest.raises(BusError):
        reader.commit({TopicPartition(topic, 0): 1})
    reader.close()
