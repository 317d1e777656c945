"""The model registry, event-sourced: its state is a fold over the registry topics.

``model.registered`` adds a version, ``model.deployed`` moves the ``production`` alias
(the version it replaces becomes ``previous``), ``model.rejected`` is kept as history.
Every process that reads the same topics from the start builds the same state, and as
each model's events share one partition (keyed by model name) they are read in one order
everywhere: the production alias is a single pointer, so there is never more than one
production version, whatever order concurrent promotions were sent in.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from driftline.events.codec import Codec
from driftline.events.models import Event, ModelDeployed, ModelRegistered, ModelRejected
from driftline.runtime.bus.base import Bus, Consumer, partitions_of
from driftline.runtime.errors import DecodeError

log = logging.getLogger("driftline.registry")

REGISTRY_TOPICS: tuple[str, ...] = (ModelRegistered.TYPE, ModelDeployed.TYPE, ModelRejected.TYPE)


@dataclass
class ModelEntry:
    """One model's versions, aliases and history."""

    name: str
    versions: dict[int, ModelRegistered] = field(default_factory=dict)
    production: int | None = None
    previous: int | None = None
    deployments: list[ModelDeployed] = field(default_factory=list)
    rejections: list[ModelRejected] = field(default_factory=list)

    def rollback_event(self) -> ModelDeployed | None:
        """The ``model.deployed`` that moves production back to ``previous`` (None: no previous)."""
        target = self.versions.get(self.previous) if self.previous is not None else None
        if target is None:
            return None
        return ModelDeployed(
            model=self.name,
            version=target.version,
            artifact_key=target.artifact_key,
            sha256=target.sha256,
            previous_version=self.production,
            reason="rollback",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": {"production": self.production, "previous": self.previous},
            "versions": [v.model_dump(mode="json") for _, v in sorted(self.versions.items())],
            "deployments": [d.model_dump(mode="json") for d in self.deployments],
            "rejections": [r.model_dump(mode="json") for r in self.rejections],
        }


class Registry:
    """In-memory registry state; thread-safe; ``apply`` is idempotent per event id."""

    def __init__(self) -> None:
        self._models: dict[str, ModelEntry] = {}
        self._applied: set[str] = set()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    def apply(self, event: Event, event_id: str | None = None) -> None:
        with self._lock:
            if event_id is not None:
                if event_id in self._applied:
                    return
                self._applied.add(event_id)
            entry = self._models.setdefault(event.model, ModelEntry(event.model))
            if isinstance(event, ModelRegistered):
                entry.versions.setdefault(event.version, event)
            elif isinstance(event, ModelDeployed):
                if entry.production != event.version:
                    entry.previous = entry.production
                    entry.production = event.version
                entry.deployments.append(event)
            elif isinstance(event, ModelRejected):
                entry.rejections.append(event)
            self._changed.notify_all()

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def entry(self, model: str) -> ModelEntry | None:
        with self._lock:
            return self._models.get(model)

    def production(self, model: str) -> ModelRegistered | None:
        """The version the ``production`` alias points at, if any."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None or entry.production is None:
                return None
            return entry.versions.get(entry.production)

    def version(self, model: str, version: int) -> ModelRegistered | None:
        with self._lock:
            entry = self._models.get(model)
            return None if entry is None else entry.versions.get(version)

    def next_version(self, model: str) -> int:
        with self._lock:
            entry = self._models.get(model)
            return 1 + max(entry.versions, default=0) if entry else 1

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        """Block until ``predicate(self)`` holds (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True


class RegistryFollower:
    """Keeps a :class:`Registry` current by reading the registry topics from the start.

    It uses a fresh consumer group and never commits: every process rebuilds the whole
    state on start (the topics are small: a few events per model version).
    """

    def __init__(self, bus: Bus, registry: Registry | None = None, codec: Codec | None = None):
        self.bus = bus
        self.registry = registry or Registry()
        self.codec = codec or Codec()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)
        self._consumer: Consumer | None = None

    def start(self) -> Registry:
        self.bus.create_topics(list(REGISTRY_TOPICS))
        self._consumer = self.bus.consumer(
            f"driftline.registry.{uuid.uuid4().hex}", list(REGISTRY_TOPICS)
        )
        self.catch_up(idle_s=0.3)
        self._thread.start()
        return self.registry

    def catch_up(self, idle_s: float = 0.3, limit_s: float = 30.0) -> None:
        """Read until the topics stay quiet for ``idle_s`` (end offsets are unreliable on some brokers)."""
        deadline = time.monotonic() + limit_s
        assert self._consumer is not None
        need = partitions_of(self.bus, REGISTRY_TOPICS)
        while not need <= self._consumer.assignment() and time.monotonic() < deadline:
            self._poll(0.2)  # a Kafka group join takes a moment; nothing is read before it
        while time.monotonic() < deadline:
            if not self._poll(idle_s):
                return

    def _poll(self, timeout_s: float) -> int:
        assert self._consumer is not None
        records = self._consumer.poll(timeout_s)
        for r in records:
            try:
                env = self.codec.decode(
                    r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset
                )
            except DecodeError as exc:  # not ours to dead-letter: the registry just skips it
                log.warning("registry: skipping an undecodable record: %s", exc)
                continue
            self.registry.apply(env.data, env.id)
        return len(records)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll(0.5)
            except Exception:  # a bus hiccup: keep following
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()
