"""Dead-lettered events: list them with why, and send them back to their topics.

Used by ``driftline dlq`` and by the gateway (``GET /v1/dlq``, ``POST /v1/dlq/replay``), so
the CLI can go through a running ``driftline up`` that holds the embedded bus.
"""

from __future__ import annotations

import time
from typing import Any

from driftline.events import DLQ_SUFFIX, EVENT_TOPICS, dlq_topic
from driftline.runtime.bus.base import Bus

REPLAY_GROUP = "driftline.dlq-replay"
"""A committed group: each dead letter is sent back once, whoever replays it."""
MAX_ROWS = 10_000


def dlq_topics(bus: Bus) -> list[str]:
    """The built-in types' dead-letter topics (created if need be) and every other one on
    the bus: those of users' own event types."""
    topics = [dlq_topic(t) for t in EVENT_TOPICS]
    bus.create_topics(topics)
    return sorted({*topics, *(t for t in bus.topics() if t.endswith(DLQ_SUFFIX))})


def dead_letters(bus: Bus, wait_s: float = 2.0) -> list[dict[str, Any]]:
    """Every dead-lettered event (up to :data:`MAX_ROWS`): topic, offset and the ``dlq_*``
    headers (the original topic, the error, attempts...), read for ``wait_s`` (end offsets
    are not trusted: some brokers under-report them)."""
    topics = dlq_topics(bus)
    reader = bus.reader(topics)
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    try:
        while len(rows) < MAX_ROWS and time.monotonic() < deadline:
            rows += [
                {
                    "topic": r.topic,
                    "offset": r.offset,
                    **{
                        k[4:]: v.decode(errors="replace")
                        for k, v in r.headers
                        if k.startswith("dlq_")
                    },
                }
                for r in reader.poll(0.2, 1000)
            ]
    finally:
        reader.close()
    return rows[:MAX_ROWS]


def replay_dead_letters(bus: Bus, wait_s: float = 2.0) -> int:
    """Send dead-lettered events back to their topics; returns how many. A committed
    group replays each once."""
    topics = dlq_topics(bus)
    consumer = bus.consumer(REPLAY_GROUP, topics)
    producer = bus.producer()
    replayed, deadline = 0, time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            records = consumer.poll(0.2, 1000)
            for r in records:
                origin = r.header("dlq_topic")
                if origin is None:
                    continue
                headers = [(k, v) for k, v in r.headers if not k.startswith("dlq_")]
                producer.send(origin.decode(), r.value, key=r.key, headers=headers)
                replayed += 1
            if records:
                producer.flush()
                consumer.commit({r.tp: r.offset + 1 for r in records})
    finally:
        producer.close()
        consumer.close()
    return replayed
