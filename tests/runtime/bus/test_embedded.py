"""What only the embedded bus promises: durability across a restart, one process, groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.runtime.bus.base import TopicPartition
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.errors import ConfigError


def test_restart_keeps_records_and_commits(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=2)
    producer = bus.producer()
    for i in range(100):
        producer.send("t", str(i).encode(), key=str(i).encode())
    producer.flush()
    consumer = bus.consumer("g", ["t"])
    seen = consumer.poll(1.0, max_records=1000)
    assert len(seen) == 100
    consumer.commit({TopicPartition("t", 0): 10})
    bus.close()

    again = EmbeddedBus(tmp_path / "bus.db", partitions=2)
    c2 = again.consumer("g", ["t"])
    records = c2.poll(1.0, max_records=1000)
    on_p0 = [r for r in seen if r.partition == 0]
    assert sorted(r.value for r in records) == sorted(
        [r.value for r in seen if r.partition == 1] + [r.value for r in on_p0 if r.offset >= 10]
    )
    p = again.producer()
    p.send("t", b"new", key=b"0")
    p.flush()
    new = c2.poll(1.0)
    assert [r.value for r in new] == [b"new"] and new[0].offset == again.end_offset(new[0].tp) - 1
    again.close()


def test_a_second_process_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    with pytest.raises(ConfigError, match="in use by another process"):
        EmbeddedBus(tmp_path / "bus.db")
    bus.close()


def test_group_members_split_partitions_and_take_over(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=4)
    a = bus.consumer("g", ["t"])
    b = bus.consumer("g", ["t"])
    assert a.assignment() | b.assignment() == {TopicPartition("t", p) for p in range(4)}
    assert not a.assignment() & b.assignment()
    b.close()
    assert len(a.assignment()) == 4
    bus.close()


def test_unflushed_records_are_not_visible_and_flush_makes_them_so(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    consumer = bus.consumer("g", ["t"])
    producer = bus.producer()
    producer.send("t", b"a")
    assert consumer.poll(0.05) == []
    producer.flush()
    assert [r.value for r in consumer.poll(0.5)] == [b"a"]
    bus.close()
