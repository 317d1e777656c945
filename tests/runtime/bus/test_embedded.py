"""What only the embedded bus promises: durability across a restart, one process, groups."""

from __future__ import annotations

import os
import sqlite3
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


def test_a_file_from_before_the_ends_table_opens_with_its_ends(tmp_path: Path) -> None:
    """The ends of each partition live in a table of their own (one query for another
    process to catch up); a file written before that table existed gets it filled from
    its records, so new records follow the old ones and no offset is given out twice."""
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=2)
    producer = bus.producer()
    for i in range(30):
        producer.send("t", str(i).encode(), key=str(i).encode())
    producer.flush()
    before = {p: bus.end_offset(TopicPartition("t", p)) for p in range(2)}
    bus.close()
    db = sqlite3.connect(tmp_path / "bus.db")
    db.execute("DROP TABLE ends")  # as an older Driftline left it
    db.commit()
    db.close()

    again = EmbeddedBus(tmp_path / "bus.db", partitions=2)
    assert {p: again.end_offset(TopicPartition("t", p)) for p in range(2)} == before
    p = again.producer()
    p.send("t", b"new", key=b"0")
    p.flush()
    records = again.consumer("g", ["t"]).poll(1.0, max_records=1000)
    assert len(records) == 31
    for part in range(2):
        offsets = [r.offset for r in records if r.partition == part]
        assert offsets == list(range(len(offsets)))  # dense, none twice
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


_CHILD = """
import json, sys, time
from driftline.runtime.bus.base import TopicPartition
from driftline.runtime.bus.embedded import EmbeddedBus

bus = EmbeddedBus(sys.argv[1])
bus.create_topics(["made-there"], partitions=2)
producer = bus.producer()
for i in range(300):
    producer.send("t", b"child-%d" % i)
    if i % 3 == 0:
        producer.flush()
        time.sleep(0.001)
producer.flush()
consumer = bus.consumer("child", ["t"])
seen = []
while len(seen) < 600:
    batch = consumer.poll(10.0)
    assert batch, f"the parent's records never arrived: {len(seen)} seen"
    seen += batch
consumer.commit({TopicPartition("t", 0): 600})
print(json.dumps(sorted(r.value.decode() for r in seen)))
bus.close()
"""


def test_a_child_given_the_lock_shares_the_bus_and_offsets_never_collide(tmp_path: Path) -> None:
    """What ``driftline up`` does with drift-check in a process of its own: both processes
    append at once; every record gets its own offset, each side reads the other's, topics
    and commits made in the child show in the parent; anyone else is still refused."""
    import json
    import subprocess
    import sys
    import threading
    import time

    path = tmp_path / "bus.db"
    bus = EmbeddedBus(path)
    bus.create_topics(["t"], partitions=1)
    fd, env = bus.share()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        env={**os.environ, **env},
        pass_fds=(fd,),
        stdout=subprocess.PIPE,
        text=True,
    )

    def produce() -> None:  # once the child has started, beside it
        while bus.partition_count("made-there") == 0:
            time.sleep(0.001)
        producer = bus.producer()
        for i in range(300):
            producer.send("t", b"parent-%d" % i)
            if i % 3 == 0:
                producer.flush()
                time.sleep(0.001)
        producer.flush()

    writer = threading.Thread(target=produce)
    writer.start()
    out, _ = child.communicate(timeout=60)
    writer.join()
    assert child.returncode == 0
    consumer = bus.consumer("parent", ["t"])
    records: list = []
    while len(records) < 600:
        batch = consumer.poll(5.0)
        assert batch, len(records)
        records += batch
    everything = sorted([f"parent-{i}" for i in range(300)] + [f"child-{i}" for i in range(300)])
    assert sorted(r.value.decode() for r in records) == everything
    assert [r.offset for r in records] == list(range(600))
    sides = [r.value.startswith(b"child") for r in records]
    assert sum(a != b for a, b in zip(sides, sides[1:], strict=False)) > 10, (
        "the writers took turns"
    )
    assert json.loads(out) == everything
    assert bus.partition_count("made-there") == 2
    assert bus.consumer("child", ["t"]).committed(TopicPartition("t", 0)) == 600
    with pytest.raises(ConfigError, match="in use by another process"):
        EmbeddedBus(path)  # no shared descriptor: refused as before
    bus.close()


_COMMITTER = """
import sys, time
from driftline.runtime.bus.base import TopicPartition
from driftline.runtime.bus.embedded import EmbeddedBus
bus = EmbeddedBus(sys.argv[1])
consumer = bus.consumer("child", ["t"])
for i in range(5):
    consumer.commit({TopicPartition("t", 0): 0})
    time.sleep(0.05)
print("committed", flush=True)
sys.stdin.readline()
producer = bus.producer()
producer.send("t", b"from the child")
producer.flush()
bus.close()
"""


def test_another_process_wakes_polls_here_with_records_not_with_commits(tmp_path: Path) -> None:
    """Under captured /v2 load drift-check's process commits after every batch: each commit
    used to wake every consumer thread of the gateway's process, to find nothing."""
    import subprocess
    import sys
    import threading

    path = tmp_path / "bus.db"
    bus = EmbeddedBus(path)
    bus.create_topics(["t"], partitions=1)
    wakes = 0
    wake = bus._wake

    def counted(topics: set[str] | None = None) -> None:
        nonlocal wakes
        wakes += 1
        wake(topics)

    bus._wake = counted  # type: ignore[method-assign]
    fd, env = bus.share()
    with subprocess.Popen(
        [sys.executable, "-c", _COMMITTER, str(path)],
        env={**os.environ, **env},
        pass_fds=(fd,),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "committed"
            threading.Event().wait(0.2)  # ten looks of the watch after the last commit
            assert wakes == 0
            consumer = bus.consumer("parent", ["t"])
            child.stdin.write("go\n")
            child.stdin.flush()
            records = consumer.poll(10.0)
            assert [r.value for r in records] == [b"from the child"]
            assert wakes >= 1
            assert child.wait(30) == 0
        finally:
            child.kill()
            bus.close()


def test_a_poll_is_woken_by_records_on_its_own_topics_only(tmp_path: Path) -> None:
    """Each waiting poll has its own condition: appends elsewhere leave it asleep (under
    captured /v2 load every append woke every consumer thread of the gateway's process)."""
    import threading

    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.create_topics(["mine", "other"], partitions=1)
    consumer = bus.consumer("g", ["mine"])
    woken = 0
    notify = consumer._woken.notify

    def counted(n: int = 1) -> None:
        nonlocal woken
        woken += 1
        notify(n)

    consumer._woken.notify = counted  # type: ignore[method-assign]
    got: list = []
    poller = threading.Thread(target=lambda: got.extend(consumer.poll(30.0)))
    poller.start()
    producer = bus.producer()
    while consumer not in bus._sleepers:
        threading.Event().wait(0.001)
    for i in range(20):
        producer.send("other", b"%d" % i)
        producer.flush()
    assert woken == 0 and not got
    producer.send("mine", b"at last")
    producer.flush()
    poller.join(10)
    assert [r.value for r in got] == [b"at last"] and woken >= 1
    bus.close()
