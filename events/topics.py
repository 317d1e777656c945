"""Topic names. Each event type travels on the topic of the same name."""

from __future__ import annotations

from driftline.events.models import EVENT_MODELS

EVENT_TOPICS: tuple[str, ...] = tuple(m.TYPE for m in EVENT_MODELS)
DLQ_SUFFIX = ".dlq"
RUNNERS_TOPIC = "driftline.runners"
"""Control topic: runner heartbeats and capabilities."""


def dlq_topic(topic: str) -> str:
    """The dead-letter topic for a topic: ``<topic>.dlq``."""
    return topic + DLQ_SUFFIX
