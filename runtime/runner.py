"""The runner: hosts functions on a bus, at least once, with idempotent outputs.

For each function, one thread and one consumer in the function's group:

1. poll a batch; hand it to a worker thread, so a slow handler (training) never blocks
   the poll loop: after ``pause_after_s`` the partitions are paused and the loop keeps
   polling (keeping group membership alive) until the batch is done;
2. per record: decode (undecodable → DLQ; a user type's version registered since the
   start is learnt from the schema registry first), drop duplicates (input id seen before), call
   the handler with tenacity retries (only retryable errors, exponential backoff with
   jitter), a handler past its timeout is abandoned and its record dead-lettered;
3. encode outputs with ids derived from (input id, function, position): a redelivered
   input produces the same ids, so duplicates can be dropped downstream;
4. flush the producer, then commit. If the bus fails, nothing is committed: the consumer
   is recreated at the committed offsets, so the uncommitted records come again.

SIGTERM (via :meth:`Runner.stop`) finishes the batch in hand, flushes and commits.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from driftline.events.codec import Codec, Envelope, child_traceparent
from driftline.events.models import Event
from driftline.events.topics import dlq_topic
from driftline.events.user import is_builtin
from driftline.runtime.bus.base import Bus, Consumer, Producer, Record, TopicPartition
from driftline.runtime.context import Context
from driftline.runtime.errors import (
    BusError,
    DecodeError,
    DriftlineError,
    PermanentError,
    StaleWriteError,
)
from driftline.runtime.function import FunctionSpec, Handler, spec_of
from driftline.runtime.schemas import SchemaRegistry
from driftline.runtime.stats import FunctionStats

log = logging.getLogger("driftline.runner")

ID_NAMESPACE = uuid.UUID("6f1c3c1e-4d0b-5a8e-9a43-3c2b8d0f7a11")


_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def output_id(input_id: str, function: str, position: int) -> str:
    """The id of a function's ``position``-th output for an input: stable across redelivery.

    ``str(uuid.uuid5(ID_NAMESPACE, f"{input_id}/{function}/{position}"))`` (RFC 4122's
    name-based UUID), written out: three times as fast as the uuid module's, which builds
    a UUID object to format it (tests/runtime/test_runner.py checks they agree).
    """
    name = f"{input_id}/{function}/{position}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class HandlerTimeoutError(PermanentError):
    """The handler ran past its function's timeout."""


def _is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


class _Seen:
    """A bounded set of recently handled input ids (duplicate detection)."""

    def __init__(self, size: int = 100_000):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)


class _Failed(Exception):
    """The handler failed for good after ``attempts`` attempts."""

    def __init__(self, attempts: int, cause: BaseException):
        super().__init__(str(cause))
        self.attempts = attempts
        self.cause = cause


class _Batch:
    """Records handed to the worker thread; the poll loop can abandon it on a timeout."""

    def __init__(self, records: list[Record]):
        self.records = records
        self.position = 0
        self.started = time.monotonic()
        self.abandoned = False
        self.offsets: dict[TopicPartition, int] = {}


class FunctionWorker:
    """One function on one bus: the poll loop and its worker thread."""

    def __init__(
        self,
        spec: FunctionSpec,
        bus: Bus,
        codec: Codec,
        ctx: Context,
        *,
        poll_timeout_s: float = 0.5,
        pause_after_s: float = 1.0,
        max_records: int = 500,
        flush_timeout_s: float = 30.0,
    ):
        self.spec = spec
        self.bus = bus
        self.codec = codec
        self.ctx = ctx
        self.stats = FunctionStats()
        self.poll_timeout_s = poll_timeout_s
        self.pause_after_s = pause_after_s
        self.max_records = max_records
        self.flush_timeout_s = flush_timeout_s
        """How long a batch's outputs may take to be acknowledged before the batch counts as
        failed (nothing committed; it comes again after the reconnect)."""
        self._types = {t.TYPE: t for t in spec.input_types}
        self._emits = set(spec.emits)
        self._user_inputs = any(not is_builtin(t) for t in spec.input_types)
        self._tried: set[bytes] = set()
        self._seen = _Seen()
        self._stop = threading.Event()
        self._source = f"driftline/{spec.name}"
        self._retrying = Retrying(
            stop=stop_after_attempt(spec.retry.attempts - 1),  # the first attempt ran already
            wait=wait_exponential_jitter(
                multiplier=spec.retry.initial_backoff_s,
                max=spec.retry.max_backoff_s,
                jitter=spec.retry.jitter_s,
            ),
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"fn-{spec.name}")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._outbox: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self._unsettled: set[str] = set()
        """Ids handled in the batch in hand: seen for good only once the batch is committed."""
        self.committed: dict[TopicPartition, int] = {}
        """The group's committed offset per partition as this worker knows it: read from the
        group when a partition is assigned, then what this worker commits (for lag and
        replay barriers; without the first, history left by an earlier run looks unread)."""
        self.joined = False
        """Whether the group has given this worker partitions yet (placement hands over after)."""
        self.assigned: frozenset[TopicPartition] = frozenset()
        """The partitions the group gives this worker now (heartbeats show the spread)."""
        self._rebalances: int | None = None
        """The consumer's assignment count when last seen (None: a new consumer)."""
        self._state_fresh = True
        """Whether ``ctx.state`` was built from the saved checkpoint since the last assignment."""
        self.started_at = 0.0
        self.thread = threading.Thread(target=self._run, name=f"runner-{spec.name}", daemon=True)

    def _count_retry(self, _state: Any) -> None:
        self.stats.retried += 1

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._connect()
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        self.thread.join(timeout_s)

    def _connect(self) -> None:
        self._consumer = self.bus.consumer(self.spec.group, list(self.spec.subscribes))
        self._producer = self.bus.producer()

    def _reconnect(self, backoff_s: float) -> None:
        for client in (self._consumer, self._producer):
            try:
                if client is not None:
                    client.close()
            except Exception:  # a broken client may fail to close; we drop it either way
                log.debug("close failed", exc_info=True)
        self._consumer = self._producer = None
        self.assigned, self._rebalances = frozenset(), None
        self._outbox, self._unsettled = [], set()  # uncommitted: those inputs come again
        self._stop.wait(backoff_s)
        if not self._stop.is_set():
            self._connect()

    def _run(self) -> None:
        backoff = 0.5
        pending: list[Record] = []
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._connect()
                assert self._consumer is not None
                records = pending or self._consumer.poll(self.poll_timeout_s, self.max_records)
                pending = []
                rebalances = self._consumer.rebalances
                if rebalances and rebalances != self._rebalances:
                    self._rebalanced(rebalances)
                assigned = frozenset(self._consumer.assignment())
                if assigned != self.assigned:
                    self._note_group_offsets(assigned - self.assigned)
                    self.assigned = assigned
                if self.assigned:
                    self.joined = True
                if records:
                    pending = self._handle(records)
                backoff = 0.5
            except BusError as exc:
                log.warning(
                    "%s: bus error, reconnecting in %.1fs: %s", self.spec.name, backoff, exc
                )
                pending = []
                self._reconnect(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # never let one bad batch kill the runner thread
                log.exception("%s: unexpected error in the poll loop", self.spec.name)
                pending = []
                self._reconnect(backoff)
                backoff = min(backoff * 2, 30.0)
        self._close()

    def _rebalanced(self, count: int) -> None:
        """A new assignment. A function with a checkpoint keeps state for the partitions it
        reads; while they were elsewhere another process may have moved that state on (and
        saved it), so the state is built again from the saved checkpoint."""
        if self.spec.checkpoint is not None and not self._state_fresh:
            log.info(
                "%s: partitions reassigned; reloading its state from the last checkpoint",
                self.spec.name,
            )
            self.ctx.state = self.spec.init(self.ctx) if self.spec.init is not None else None
        self._rebalances, self._state_fresh = count, False

    def _note_group_offsets(self, partitions: frozenset[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in partitions:
            offset = self._consumer.committed(tp)
            if offset is not None and offset > self.committed.get(tp, -1):
                self.committed[tp] = offset

    def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("close failed", exc_info=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- one batch ------------------------------------------------------------------------
    def _handle(self, records: list[Record]) -> list[Record]:
        """Process a batch beside the poll loop; returns records polled meanwhile."""
        assert self._consumer is not None and self._producer is not None
        batch = _Batch(records)
        future = self._executor.submit(self._work, batch)
        late: list[Record] = []
        paused: set[TopicPartition] = set()
        while True:
            try:
                future.result(timeout=self.pause_after_s if not paused else 0.2)
                break
            except TimeoutError:
                batch, future = self._check_timeout(batch, future)
                if not paused:
                    paused = self._consumer.assignment()
                    self._consumer.pause(paused)
                late.extend(self._consumer.poll(0, self.max_records))  # keeps the group alive
        if paused:
            self._consumer.resume(paused)
        self._ship()
        if batch.offsets and self.spec.checkpoint is not None:
            self._checkpoint()
        if batch.offsets:
            self._consumer.commit(batch.offsets)
            self.committed.update(batch.offsets)
        for event_id in self._unsettled:
            self._seen.add(event_id)
        self._unsettled = set()
        return late

    def _ship(self) -> None:
        """Send the batch's outputs back to back, then flush: the producer batches them
        well (sent one by one beside the handler, each send woke kafka-python's sender
        thread for a tiny request, and the two threads fought over the GIL)."""
        assert self._producer is not None
        outbox, self._outbox = self._outbox, []
        for topic, value, key, headers in outbox:
            self._producer.send(topic, value, key=key, headers=headers)
        self._producer.flush(self.flush_timeout_s)

    def _checkpoint(self) -> None:
        """The function saves its state; the handlers are idle (the batch is done)."""
        assert self.spec.checkpoint is not None
        try:
            self.spec.checkpoint(self.ctx)
        except StaleWriteError as exc:
            raise BusError(
                f"{self.spec.name}: fenced, another process saved this state after this one "
                f"read it (its partitions moved while this process stalled): nothing of the "
                f"batch is committed, the state is dropped and the group joined again: {exc}"
            ) from exc
        except Exception as exc:
            raise BusError(
                f"{self.spec.name}: checkpoint failed, the batch is not committed and "
                f"will come again: {type(exc).__name__}: {exc}"
            ) from exc

    def _check_timeout(self, batch: _Batch, future: Future[None]) -> tuple[_Batch, Future[None]]:
        if time.monotonic() - batch.started <= self.spec.timeout_s or future.done():
            return batch, future
        record = batch.records[batch.position]
        batch.abandoned = True
        log.error(
            "%s: handler passed its %.0fs timeout on %s[%d]@%d; dead-lettering it",
            self.spec.name,
            self.spec.timeout_s,
            record.topic,
            record.partition,
            record.offset,
        )
        self._dead_letter(
            record, HandlerTimeoutError(f"handler ran past {self.spec.timeout_s}s"), 1
        )
        batch.offsets[record.tp] = record.offset + 1
        rest = _Batch(batch.records[batch.position + 1 :])
        rest.offsets = batch.offsets
        self._executor.shutdown(wait=False)  # the stuck thread is left to finish alone
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"fn-{self.spec.name}")
        return rest, self._executor.submit(self._work, rest)

    def _work(self, batch: _Batch) -> None:
        for i, record in enumerate(batch.records):
            if batch.abandoned:
                return
            batch.position = i
            batch.started = time.monotonic()
            self._process(record, batch)
            if batch.abandoned:
                return
            batch.offsets[record.tp] = record.offset + 1

    def _process(self, record: Record, batch: _Batch) -> None:
        self.stats.consumed += 1
        try:
            envelope = self._decode(record)
            if envelope.type not in self._types:
                raise DecodeError(
                    f"{self.spec.name} does not take {envelope.type} events",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
        except DecodeError as exc:
            log.warning("%s: %s", self.spec.name, exc)
            self._dead_letter(record, exc, 0)
            return
        if type(envelope.data) is not self._types[envelope.type]:  # an equal user type
            envelope = _as_class(envelope, self._types[envelope.type])  # from another file
        if envelope.id in self._seen or envelope.id in self._unsettled:
            self.stats.duplicates += 1
            return
        started = time.perf_counter()
        try:
            attempts, outputs = self._attempt(envelope)
        except _Failed as failed:
            attempts, cause = failed.attempts, failed.cause
            self.stats.observe(time.perf_counter() - started)
            if batch.abandoned:
                return
            log.warning(
                "%s: %s after %d attempt(s): %s",
                self.spec.name,
                type(cause).__name__,
                attempts,
                cause,
            )
            self._dead_letter(
                record, cause, attempts
            )  # not marked seen: `dlq replay` may bring it back
            return
        self.stats.observe(time.perf_counter() - started)
        if batch.abandoned:
            return
        self._send(envelope, outputs)
        self._unsettled.add(envelope.id)
        self.stats.succeeded += 1

    def _decode(self, record: Record) -> Envelope:
        try:
            return self._decode_once(record)
        except DecodeError:
            if not self._learn_writer(record.value):
                raise
        return self._decode_once(record)

    def _decode_once(self, record: Record) -> Envelope:
        return self.codec.decode(
            record.value,
            record.headers,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    def _learn_writer(self, value: bytes) -> bool:
        """An unknown fingerprint may be a version of a user type registered since this
        worker started (a newer producer): read the schema registry, once per fingerprint."""
        fp = bytes(value[2:10])
        if not self._user_inputs or fp in self._tried or fp in self.codec.known_fingerprints():
            return False
        if len(self._tried) > 10_000:
            self._tried.clear()
        self._tried.add(fp)
        codec = self.codec.including(self.spec.event_types, SchemaRegistry(self.bus).versions())
        learnt, self.codec = fp in codec.known_fingerprints(), codec
        return learnt

    def _attempt(self, envelope: Envelope) -> tuple[int, list[Event]]:
        """Call the handler; retry retryable errors with backoff. Raises :class:`_Failed`."""
        try:
            return 1, self._call(envelope)  # the common case stays off tenacity's machinery
        except Exception as exc:
            if not _is_retryable(exc) or self.spec.retry.attempts <= 1:
                raise _Failed(1, exc) from exc
        attempts = 1
        self.stats.retried += 1
        policy = self.spec.retry
        time.sleep(
            min(policy.initial_backoff_s + random.uniform(0, policy.jitter_s), policy.max_backoff_s)
        )
        try:
            for attempt in self._retrying:
                with attempt:
                    attempts += 1
                    return attempts, self._call(envelope)
        except Exception as exc:
            raise _Failed(attempts, exc) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _call(self, envelope: Envelope) -> list[Event]:
        ctx = self.ctx
        ctx.begin(envelope.id, envelope.type, envelope.time, envelope.traceparent)
        result = self.spec.handler(envelope.data, ctx)
        outputs = list(ctx.outputs)
        if result is not None:
            outputs.extend(result if isinstance(result, (list, tuple)) else [result])
        for out in outputs:
            if not isinstance(out, Event) or out.TYPE not in self._emits:
                raise PermanentError(
                    f"{self.spec.name} returned {type(out).__name__}, but declares emits={sorted(self._emits)}"
                )
        return outputs

    def _send(self, envelope: Envelope, outputs: list[Event]) -> None:
        assert self._producer is not None
        for i, out in enumerate(outputs):
            value, headers = self.codec.encode(
                out,
                id=output_id(envelope.id, self.spec.name, i),
                source=self._source,
                traceparent=child_traceparent(envelope.traceparent),
            )
            self._outbox.append((out.TYPE, value, out.partition_key(), headers))

    def _dead_letter(self, record: Record, exc: BaseException, attempts: int) -> None:
        assert self._producer is not None
        headers = [h for h in record.headers if not h[0].startswith("dlq_")]
        headers += [
            ("dlq_error_type", type(exc).__name__.encode()),
            ("dlq_error", str(exc).encode()[:4000]),
            ("dlq_function", self.spec.name.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_retryable", b"true" if _is_retryable(exc) else b"false"),
            ("dlq_time", datetime.now(UTC).isoformat().encode()),
        ]
        self._outbox.append((dlq_topic(record.topic), record.value, record.key, headers))
        self.stats.dead_lettered += 1


def _as_class(envelope: Envelope, cls: type[Event]) -> Envelope:
    """The envelope with its event as ``cls``: the same user type, declared in another file."""
    return replace(envelope, data=cls.model_validate(envelope.data.model_dump()))


class Runner:
    """Hosts a set of functions on one bus, each in its own consumer group.

    :meth:`add` and :meth:`remove` start and stop one function while the runner runs
    (:mod:`driftline.runtime.cluster.placement` moves GPU-preferred work with them).
    """

    def __init__(
        self,
        bus: Bus,
        functions: Sequence[Handler | FunctionSpec],
        *,
        store: Any = None,
        settings: Any = None,
        registry: Any = None,
        capabilities: Any = None,
        codec: Codec | None = None,
        poll_timeout_s: float = 0.5,
        pause_after_s: float = 1.0,
        max_records: int = 500,
        flush_timeout_s: float = 30.0,
    ):
        self.bus = bus
        self.codec = codec or Codec()
        self.specs = [spec_of(f) for f in functions]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise DriftlineError(f"function names must be unique, got {names}")
        self._shared = dict(
            store=store, settings=settings, registry=registry, capabilities=capabilities
        )
        self._opts = dict(
            poll_timeout_s=poll_timeout_s,
            pause_after_s=pause_after_s,
            max_records=max_records,
            flush_timeout_s=flush_timeout_s,
        )
        self.workers: dict[str, FunctionWorker] = {}
        self._retired: dict[str, FunctionStats] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()

    def topics(self) -> list[str]:
        """Every topic the hosted functions read or write, dead-letter topics included."""
        return self._topics_of(self.specs)

    @staticmethod
    def _topics_of(specs: Sequence[FunctionSpec]) -> list[str]:
        names: list[str] = []
        for spec in specs:
            for t in (*spec.subscribes, *(dlq_topic(s) for s in spec.subscribes), *spec.emits):
                if t not in names:
                    names.append(t)
        return names

    def start(self) -> None:
        self.bus.create_topics(self.topics())
        workers = [self._worker(spec) for spec in self.specs]
        with self._lock:
            self._started = True
            self.workers.update((w.spec.name, w) for w in workers)
        for worker in workers:
            worker.start()

    def _worker(self, spec: FunctionSpec) -> FunctionWorker:
        ctx = Context(
            function=spec.name, log=logging.getLogger(f"driftline.fn.{spec.name}"), **self._shared
        )
        users = [t for t in spec.event_types if not is_builtin(t)]
        writers = SchemaRegistry(self.bus).register(users) if users else None
        if spec.init is not None:
            ctx.state = spec.init(ctx)
        with self._lock:  # a user type it reads or writes joins the codec, once
            self.codec = self.codec.including(spec.event_types, writers)
            codec = self.codec
        worker = FunctionWorker(spec, self.bus, codec, ctx, **self._opts)  # type: ignore[arg-type]
        worker.stats = self._retired.pop(spec.name, worker.stats)  # counters survive a move
        return worker

    def add(self, function: Handler | FunctionSpec) -> None:
        """Start hosting one more function (after :meth:`start`); a no-op if it is hosted."""
        spec = spec_of(function)
        with self._lock:
            if spec.name in self.workers or self._stopping:
                return
            if not self._started:
                self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
                return
        self.bus.create_topics(self._topics_of([spec]))
        worker = self._worker(spec)
        with self._lock:
            if spec.name in self.workers or self._stopping:
                return
            self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
            self.workers[spec.name] = worker
        worker.start()

    def remove(self, name: str, timeout_s: float | None = None) -> None:
        """Stop hosting a function: finish the batch in hand, commit, and leave its group.

        The function stays in :attr:`workers` until its worker has stopped.
        """
        with self._lock:
            worker = self.workers.get(name)
        if worker is None:
            return
        worker.stop()
        worker.join(timeout_s)
        with self._lock:
            if self.workers.get(name) is worker:
                del self.workers[name]
                self.specs = [s for s in self.specs if s.name != name]
                self._retired[name] = worker.stats

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batches in hand, flush, commit, and close the clients."""
        with self._lock:
            self._stopping = True
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + timeout_s
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    @property
    def stats(self) -> dict[str, FunctionStats]:
        with self._lock:
            return {name: w.stats for name, w in self.workers.items()}
