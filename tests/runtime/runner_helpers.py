"""Small functions and helpers shared by the runner tests on both buses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from driftline.events import Codec, LabelsReceived, ScoreCompleted, ScoreRequested
from driftline.runtime.bus.base import Bus, Record
from driftline.runtime.context import Context
from driftline.runtime.errors import PermanentError, RetryableError
from driftline.runtime.function import RetryPolicy, function

codec = Codec()
FAST_RETRY = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01)


def _attempts(ctx: Context) -> dict[str, int]:
    return {}


@function(subscribes="score.requested", emits="score.completed", retry=FAST_RETRY, init=_attempts)
def echo(event: ScoreRequested, ctx: Context) -> ScoreCompleted | None:
    """Scores every row as the sum of its values; ``poison`` requests fail for good."""
    if event.request_id.startswith("poison"):
        raise PermanentError(f"cannot score {event.request_id}")
    if event.request_id.startswith("flaky") and ctx.state.setdefault(event.request_id, 0) < 2:
        ctx.state[event.request_id] += 1
        raise RetryableError("store hiccup")
    if event.request_id.startswith("skip"):
        return None
    return ScoreCompleted(
        model=event.model,
        request_id=event.request_id,
        version=1,
        predictions=[sum(r) for r in event.rows],
    )


def request(request_id: str, model: str = "m") -> ScoreRequested:
    return ScoreRequested(model=model, request_id=request_id, columns=["a", "b"], rows=[[1.0, 2.0]])


def publish(
    bus: Bus, events: Iterable[ScoreRequested | LabelsReceived], ids: Iterable[str] | None = None
) -> list[str]:
    producer = bus.producer()
    sent = []
    id_iter = iter(ids) if ids is not None else None
    for event in events:
        event_id = next(id_iter) if id_iter else str(uuid.uuid4())
        value, headers = codec.encode(event, id=event_id)
        producer.send(event.TYPE, value, key=event.model.encode(), headers=headers)
        sent.append(event_id)
    producer.flush()
    producer.close()
    return sent


def read_all(bus: Bus, topic: str, want: int, timeout_s: float = 20.0) -> list[Record]:
    consumer = bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(0.3))
    extra_deadline = time.monotonic() + 0.5
    while time.monotonic() < extra_deadline:  # anything beyond what we wanted is a bug
        got.extend(consumer.poll(0.1))
    consumer.close()
    return got


def read_keyed(
    bus: Bus, topic: str, key: bytes, want: int, timeout_s: float = 30.0
) -> list[Record]:
    """The records of ``topic`` with ``key``, read from the start until ``want`` are found (or
    the timeout): on the session's shared broker a topic holds other tests' records too."""
    reader, got = bus.reader([topic]), []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(r for r in reader.poll(0.3, 2000) if r.key == key)
    extra = time.monotonic() + 0.5
    while time.monotonic() < extra:  # anything beyond what we wanted is a bug
        got.extend(r for r in reader.poll(0.1, 2000) if r.key == key)
    reader.close()
    return got


def read_requests(bus: Bus, want: int, timeout_s: float = 20.0) -> list[ScoreCompleted]:
    """``score.completed`` taken apart into one event per request (captured /v2 traffic
    carries many requests per event: ``row_ids``), until ``want`` requests or the timeout."""
    consumer = bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", ["score.completed"])
    got: list[ScoreCompleted] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for r in consumer.poll(0.3):
            got.extend(Codec().decode(r.value, r.headers).data.requests())
    extra_deadline = time.monotonic() + 0.5
    while time.monotonic() < extra_deadline:  # anything beyond what we wanted is a bug
        for r in consumer.poll(0.1):
            got.extend(Codec().decode(r.value, r.headers).data.requests())
    consumer.close()
    return got
