"""The embedded bus: topics, partitions, offsets and consumer groups in one SQLite file.

For one process and the children it shares the file with (:meth:`EmbeddedBus.share`; a
file lock refuses anyone else): records and committed offsets live in the file (WAL mode),
so a restarted process finds every flushed record and every committed offset where it
left them. Offsets are given out inside the write transaction, after catching up with
what the other processes committed, so processes sharing the file never give out the same
offset twice. Consumer groups are coordinated in memory: a group lives in one process.
Like a Kafka producer, records are durable once :meth:`Producer.flush` returns.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from driftline.runtime.bus.base import Bus, Consumer, Headers, Producer, Record, TopicPartition
from driftline.runtime.errors import BusError, ConfigError

# names the descriptor of a parent's lock on the bus file (EmbeddedBus.share)
_LOCK_FD_ENV = "DRIFTLINE_EMBEDDED_BUS_LOCK_FD"
log = logging.getLogger("driftline.bus.embedded")
_WATCH_S = 0.02
"""How often a process sharing the file looks for what the others committed."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, headers TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ends (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
"""


def _pack_headers(headers: Headers) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _unpack_headers(text: str) -> Headers:
    return [(k, v.encode("latin-1")) for k, v in json.loads(text)]


def partition_for(key: bytes | None, partitions: int, counter: Iterable[int]) -> int:
    """Keyed records always land on the same partition; unkeyed ones round-robin."""
    if key is None:
        return next(iter(counter)) % partitions
    return zlib.crc32(key) % partitions


class EmbeddedBus(Bus):
    """A bus in one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, *, partitions: int = 1, auto_create: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.default_partitions = partitions
        self.auto_create = auto_create
        self._shared = False  # opened with a lock a parent process shared (share())
        self._lock_file = self._take_file_lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._sleepers: set[_EmbeddedConsumer] = set()
        """Polls waiting for records, each on a condition of its own (on ``_lock``)."""
        self._topics: dict[str, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        if not self._shared:  # the file's owner: ends as the records say (older files)
            self._rebuild_ends()
        self._version = self._data_version()
        self._reload()
        self._groups: dict[str, _Group] = {}
        self._rr = itertools.count()
        self._closed = False
        self._watcher: threading.Thread | None = None
        if self._shared:
            self._watch()

    def _take_file_lock(self) -> int:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        inherited = self._inherited_lock(fd)
        if inherited is not None:
            os.close(fd)
            self._shared = True
            return inherited
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"embedded bus {self.path} is in use by another process; the embedded bus "
                "serves one process: stop the other one, or point both at Kafka (--bus kafka://...)"
            ) from None
        return fd

    @staticmethod
    def _inherited_lock(fd: int) -> int | None:
        """The lock a parent process shared with this one (:meth:`share`), if it is this
        file's: a copy of its descriptor, which holds the parent's lock."""
        given = os.environ.get(_LOCK_FD_ENV)
        if not given:
            return None
        try:
            theirs, ours = os.fstat(int(given)), os.fstat(fd)
        except (OSError, ValueError):
            return None
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            return None
        return os.dup(int(given))

    def share(self) -> tuple[int, dict[str, str]]:
        """Let child processes open this bus while this process holds it: the descriptor
        to pass them (``pass_fds``) and the environment that names it. Each consumer
        group must stay in one process."""
        self._watch()
        return self._lock_file, {_LOCK_FD_ENV: str(self._lock_file)}

    # -- catching up with other processes ---------------------------------------------------
    def _watch(self) -> None:
        """Start the thread that catches up with what other processes commit and wakes
        this process's polls (their records wake nobody here): one look every
        :data:`_WATCH_S` for the process, however many consumers it has."""
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_loop, name="embedded-bus-watch", daemon=True
                )
                self._watcher.start()

    def _watch_loop(self) -> None:
        while True:
            time.sleep(_WATCH_S)
            with self._lock:
                if self._closed:
                    return
                try:
                    self._sync()
                except sqlite3.Error:  # busy past the timeout: look again next time
                    log.warning("embedded bus %s: catching up failed", self.path, exc_info=True)

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _sync(self) -> None:
        """Catch up with the topics and ends another process sharing the file committed,
        and wake this process's polls if they moved. A commit of offsets alone moves
        neither and wakes nobody (each process's groups are its own): under captured /v2
        load, drift-check's process commits after every batch, and each commit woke every
        consumer thread of the gateway's process for nothing."""
        version = self._data_version()
        if version != self._version:
            self._version = version
            if self._reload():
                self._wake()

    def _reload(self) -> bool:
        """Topics and ends as the file has them: two small tables, so that catching up
        after each commit of another process costs two queries, not one per partition.
        Whether any had moved."""
        topics = dict(self._db.execute("SELECT name, partitions FROM topics"))
        moved = topics != self._topics
        self._topics = topics
        for topic, partition, end in self._db.execute("SELECT topic, partition, next FROM ends"):
            tp = TopicPartition(topic, partition)
            if self._ends.get(tp) != end:
                self._ends[tp] = end
                moved = True
        return moved

    def _rebuild_ends(self) -> None:
        """Fill the ends table from the records (a file older than the table has none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ends = []
                for topic, partitions in self._db.execute("SELECT name, partitions FROM topics"):
                    for p in range(partitions):
                        (last,) = self._db.execute(
                            "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?",
                            (topic, p),
                        ).fetchone()
                        if last is not None:
                            ends.append((topic, p, last + 1))
                self._db.execute("DELETE FROM ends")
                self._db.executemany("INSERT INTO ends VALUES (?, ?, ?)", ends)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    # -- topics -------------------------------------------------------------------------
    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        with self._lock:
            self._sync()
            for name in names:
                if name not in self._topics:
                    n = partitions or self.default_partitions
                    # another process may have made it since: its partition count wins
                    self._db.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (name, n))
                    (self._topics[name],) = self._db.execute(
                        "SELECT partitions FROM topics WHERE name = ?", (name,)
                    ).fetchone()

    def partitions(self, topic: str) -> int:
        with self._lock:
            if topic not in self._topics:
                if not self.auto_create:
                    raise BusError(f"topic {topic!r} does not exist")
                self.create_topics([topic])
            return self._topics[topic]

    def partition_count(self, topic: str) -> int:
        with self._lock:
            self._sync()
            return self._topics.get(topic, 0)

    def topics(self) -> list[str]:
        with self._lock:
            self._sync()
            return sorted(self._topics)

    def end_offset(self, tp: TopicPartition) -> int:
        with self._lock:
            self._sync()
            return self._ends.get(tp, 0)

    # -- producing ------------------------------------------------------------------------
    def producer(self) -> Producer:
        return _EmbeddedProducer(self)

    def _append(self, batch: list[tuple[str, bytes | None, bytes, Headers]]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._check_open()
            # the write lock first, then the ends: no other process can append in between
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._sync()
                rows = []
                for topic, key, value, headers in batch:
                    tp = TopicPartition(topic, partition_for(key, self.partitions(topic), self._rr))
                    offset = self._ends.get(tp, 0)
                    self._ends[tp] = offset + 1
                    rows.append(
                        (topic, tp.partition, offset, key, value, _pack_headers(headers), now)
                    )
                self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                touched = {TopicPartition(r[0], r[1]) for r in rows}
                self._db.executemany(
                    "INSERT OR REPLACE INTO ends VALUES (?, ?, ?)",
                    [(tp.topic, tp.partition, self._ends[tp]) for tp in touched],
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                self._ends.clear()  # give the offsets (and any topic made here) back
                self._reload()
                raise
            self._wake({r[0] for r in rows})

    def _wake(self, topics: set[str] | None = None) -> None:
        """Wake the polls waiting on any of ``topics`` (None: every poll); with the lock
        held. A poll is woken only for its own topics: under captured /v2 load the capture
        appends twenty times a second, and waking every consumer thread of the process for
        each append cost the thread that serves requests the interpreter each time."""
        for sleeper in self._sleepers:
            if topics is None or not topics.isdisjoint(sleeper.topics):
                sleeper._woken.notify()

    # -- consuming ------------------------------------------------------------------------
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        with self._lock:
            for t in topics:
                self.partitions(t)
            grp = self._groups.setdefault(group, _Group(group))
            member = _EmbeddedConsumer(self, grp, tuple(topics))
            grp.join(member)
            return member

    def reader(self, topics: Sequence[str]) -> Consumer:
        with self._lock:
            for t in topics:
                self.partitions(t)
            grp = _Group(f"driftline.reader.{uuid.uuid4().hex}")  # not kept: no offsets
            member = _EmbeddedReader(self, grp, tuple(topics))
            grp.join(member)
            return member

    def _read(self, tp: TopicPartition, start: int, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT offset, key, value, headers, ts FROM records "
            "WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (tp.topic, tp.partition, start, limit),
        ).fetchall()
        return [
            Record(tp.topic, tp.partition, o, k, v, _unpack_headers(h), ts)
            for o, k, v, h, ts in rows
        ]

    def _committed(self, group: str, tp: TopicPartition) -> int | None:
        row = self._db.execute(
            "SELECT offset FROM offsets WHERE grp = ? AND topic = ? AND partition = ?",
            (group, tp.topic, tp.partition),
        ).fetchone()
        return None if row is None else int(row[0])

    def _commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            self._check_open()
            self._db.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?)",
                [(group, tp.topic, tp.partition, off) for tp, off in offsets.items()],
            )

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"embedded bus {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake()
            self._db.close()
            os.close(self._lock_file)


class _Group:
    """In-memory group membership: partitions split round-robin over the members."""

    def __init__(self, name: str):
        self.name = name
        self.members: list[_EmbeddedConsumer] = []
        self.generation = 0

    def join(self, member: _EmbeddedConsumer) -> None:
        self.members.append(member)
        self.generation += 1

    def leave(self, member: _EmbeddedConsumer) -> None:
        if member in self.members:
            self.members.remove(member)
            self.generation += 1

    def assignment_for(self, member: _EmbeddedConsumer, bus: EmbeddedBus) -> set[TopicPartition]:
        topics = sorted({t for m in self.members for t in m.topics})
        owners: dict[TopicPartition, _EmbeddedConsumer] = {}
        for topic in topics:
            subscribed = [m for m in self.members if topic in m.topics]
            for p in range(bus.partitions(topic)):
                owners[TopicPartition(topic, p)] = subscribed[p % len(subscribed)]
        return {tp for tp, m in owners.items() if m is member}


class _EmbeddedProducer(Producer):
    _MAX_PENDING = 1000
    _LINGER_S = 0.005

    def __init__(self, bus: EmbeddedBus):
        self._bus = bus
        self._pending: list[tuple[str, bytes | None, bytes, Headers]] = []
        self._first_pending = 0.0

    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append((topic, key, value, list(headers or ())))
        if (
            len(self._pending) >= self._MAX_PENDING
            or time.monotonic() - self._first_pending > self._LINGER_S
        ):
            self.flush()

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._bus._append(batch)

    def close(self) -> None:
        self.flush()


class _EmbeddedConsumer(Consumer):
    def __init__(self, bus: EmbeddedBus, group: _Group, topics: tuple[str, ...]):
        self._bus = bus
        self._group = group
        self.topics = topics
        self._generation = -1
        self._assignments = 0
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._closed = False
        self._woken = threading.Condition(bus._lock)

    def _refresh(self) -> None:
        if self._generation == self._group.generation:
            return
        self._generation = self._group.generation
        self._assignments += 1
        self._assigned = self._group.assignment_for(self, self._bus)
        for tp in list(self._positions):
            if tp not in self._assigned:
                del self._positions[tp]
        for tp in self._assigned:
            if tp not in self._positions:
                self._positions[tp] = self._bus._committed(self._group.name, tp) or 0
        self._paused &= self._assigned

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self._bus._lock:
            while True:
                self._bus._check_open()
                self._refresh()
                records = self._fetch(max_records)
                remaining = deadline - time.monotonic()
                if records or remaining <= 0:
                    return records
                # woken by records on its topics, a catch-up with another process or a
                # close; a rebalance is seen within a tenth of a second
                self._bus._sleepers.add(self)
                try:
                    self._woken.wait(min(remaining, 0.1))
                finally:
                    self._bus._sleepers.discard(self)

    def _fetch(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        ends = self._bus._ends
        ready = sorted(
            (
                tp
                for tp in self._assigned
                if tp not in self._paused and self._positions[tp] < ends.get(tp, 0)
            ),
            key=lambda tp: (tp.topic, tp.partition),
        )
        for i, tp in enumerate(ready):
            share = max(1, (max_records - len(out)) // (len(ready) - i))
            batch = self._bus._read(tp, self._positions[tp], share)
            if batch:
                self._positions[tp] = batch[-1].offset + 1
                out.extend(batch)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with self._bus._lock:
            self._refresh()
            lost = [tp for tp in offsets if tp not in self._assigned]
            if lost:
                raise BusError(
                    f"cannot commit {lost}: no longer assigned to this member (rebalanced)"
                )
            self._bus._commit(self._group.name, offsets)

    def committed(self, tp: TopicPartition) -> int | None:
        with self._bus._lock:
            return self._bus._committed(self._group.name, tp)

    def assignment(self) -> set[TopicPartition]:
        with self._bus._lock:
            self._refresh()
            return set(self._assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        with self._bus._lock:
            self._refresh()
            if tp not in self._assigned:
                raise BusError(f"cannot seek {tp}: not assigned to this member")
            self._positions[tp] = offset

    @property
    def rebalances(self) -> int:
        return self._assignments

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        with self._bus._lock:
            self._paused |= set(partitions) & self._assigned

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        with self._bus._lock:
            self._paused -= set(partitions)

    def close(self) -> None:
        with self._bus._lock:
            if not self._closed:
                self._closed = True
                self._group.leave(self)


class _EmbeddedReader(_EmbeddedConsumer):
    """:meth:`EmbeddedBus.reader`: a group of one that nobody else can join; no commits."""

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise BusError("a reader is in no consumer group: it has nothing to commit to")
