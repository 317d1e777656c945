"""The model registry, event-sourced: its state is a fold over the registry topics.

``model.registered`` adds a version, ``model.deployed`` moves the ``production`` alias
(the version it replaces becomes ``previous``), ``model.rejected`` is kept as history.
Every process that reads the same topics from the start builds the same state, and as
each model's events share one partition (keyed by model name) they are read in one order
everywhere: the production alias is a single pointer, so there is never more than one
production version, whatever order concurrent promotions were sent in.

So that start-up does not grow with history, a follower given the object store writes a
*snapshot* (``registry/snapshot.json``: the state, and per partition the offset it reflects
and the id of the last event it applied) every ``snapshot_every`` events it applies, and
starts from the newest one: it checks that the event before each saved offset is still
the one the snapshot applied (a reset broker, or a store shared with another bus, fails
that check: the follower then reads from the start), and reads only what came after.
Each model keeps its last ``KEEP_HISTORY`` deployments and rejections (the topics keep
all of them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from driftline.events.codec import Codec
from driftline.events.models import Event, ModelDeployed, ModelRegistered, ModelRejected
from driftline.runtime.bus.base import Bus, Consumer, TopicPartition
from driftline.runtime.errors import DecodeError
from driftline.runtime.store import ObjectStore

log = logging.getLogger("driftline.registry")

REGISTRY_TOPICS: tuple[str, ...] = (ModelRegistered.TYPE, ModelDeployed.TYPE, ModelRejected.TYPE)
SNAPSHOT_KEY = "registry/snapshot.json"
KEEP_HISTORY = 200
"""Deployments and rejections kept per model (the newest)."""
_KEEP_IDS = 100_000
_SNAPSHOT_IDS = 1_000


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

    def promote_event(self, version: int) -> ModelDeployed:
        """The ``model.deployed`` that makes ``version`` (a registered one) production."""
        target = self.versions[version]
        return ModelDeployed(
            model=self.name,
            version=target.version,
            artifact_key=target.artifact_key,
            sha256=target.sha256,
            previous_version=self.production,
            reason="promotion",
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
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    def apply(self, event: Event, event_id: str | None = None) -> None:
        with self._lock:
            if event_id is not None:
                if event_id in self._applied:
                    return
                self._applied[event_id] = None
                if len(self._applied) > _KEEP_IDS:
                    self._applied.popitem(last=False)
            entry = self._models.setdefault(event.model, ModelEntry(event.model))
            if isinstance(event, ModelRegistered):
                entry.versions.setdefault(event.version, event)
            elif isinstance(event, ModelDeployed):
                if entry.production != event.version:
                    entry.previous = entry.production
                    entry.production = event.version
                entry.deployments = [*entry.deployments, event][-KEEP_HISTORY:]
            elif isinstance(event, ModelRejected):
                entry.rejections = [*entry.rejections, event][-KEEP_HISTORY:]
            self._changed.notify_all()

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data (see :meth:`restore`)."""
        with self._lock:
            return {
                "models": [
                    {
                        "name": e.name,
                        "production": e.production,
                        "previous": e.previous,
                        "versions": [v.model_dump(mode="json") for v in e.versions.values()],
                        "deployments": [d.model_dump(mode="json") for d in e.deployments],
                        "rejections": [r.model_dump(mode="json") for r in e.rejections],
                    }
                    for e in self._models.values()
                ],
                "applied": list(self._applied)[-_SNAPSHOT_IDS:],
            }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot`."""
        models = {}
        for m in data["models"]:
            versions = [ModelRegistered.model_validate(v) for v in m["versions"]]
            models[m["name"]] = ModelEntry(
                m["name"],
                {v.version: v for v in versions},
                m["production"],
                m["previous"],
                [ModelDeployed.model_validate(d) for d in m["deployments"]],
                [ModelRejected.model_validate(r) for r in m["rejections"]],
            )
        with self._lock:
            self._models = models
            self._applied = OrderedDict.fromkeys(data.get("applied", []))
            self._changed.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._models, self._applied = {}, OrderedDict()

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
    """Keeps a :class:`Registry` current by reading the registry topics.

    It reads with a group-less reader (no join to wait for) and never commits. Without a store every process
    rebuilds the whole state from the start of the topics; with one it starts from the
    newest snapshot there (checked, see the module) and writes a new one every
    ``snapshot_every`` events it applies.
    """

    def __init__(
        self,
        bus: Bus,
        registry: Registry | None = None,
        codec: Codec | None = None,
        store: ObjectStore | None = None,
        snapshot_every: int = 1000,
    ):
        self.bus = bus
        self.registry = registry or Registry()
        self.codec = codec or Codec()
        self.store = store
        self.snapshot_every = snapshot_every
        self.offsets: dict[TopicPartition, int] = {}
        """Next offset to apply per partition (what the registry reflects)."""
        self.last_ids: dict[TopicPartition, str] = {}
        """Id of the last event applied per partition (checked against a snapshot)."""
        self.applied_since_snapshot = 0
        self.from_snapshot = False
        self._check: dict[TopicPartition, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)
        self._consumer: Consumer | None = None

    def start(self) -> Registry:
        self.bus.create_topics(list(REGISTRY_TOPICS))
        self._consumer = self.bus.reader(list(REGISTRY_TOPICS))
        self._load_snapshot()
        self.catch_up(idle_s=0.3)
        if self.applied_since_snapshot >= self.snapshot_every:
            self.save_snapshot()
        self._thread.start()
        return self.registry

    def catch_up(self, idle_s: float = 0.3, limit_s: float = 30.0) -> None:
        """Read until the topics stay quiet for ``idle_s`` (end offsets are unreliable on some brokers)."""
        deadline = time.monotonic() + limit_s
        self._seek_to_snapshot()
        while time.monotonic() < deadline:
            if self._poll(idle_s):
                continue
            if not self._check:
                return
            # the event before a saved offset never came: the partition is shorter than
            # the snapshot says, so the snapshot is of another history
            self._discard_snapshot(
                f"no event before the saved offsets of {sorted(self._check, key=str)}"
            )

    # -- snapshots ------------------------------------------------------------------------

    def _load_snapshot(self) -> None:
        if self.store is None or not self.store.exists(SNAPSHOT_KEY):
            return
        try:
            data = json.loads(self.store.get(SNAPSHOT_KEY))
            self.registry.restore(data)
        except (ValueError, KeyError, TypeError) as exc:  # unreadable: read from the start
            log.warning("registry: ignoring the snapshot %s: %s", SNAPSHOT_KEY, exc)
            self.registry.clear()
            return
        for item in data.get("offsets", []):
            tp = TopicPartition(item["topic"], item["partition"])
            self.offsets[tp], self.last_ids[tp] = item["offset"], item["last_id"]
        self.from_snapshot = True

    def _seek_to_snapshot(self) -> None:
        """Go back one event before each saved offset: that event must be the one the
        snapshot applied last (:meth:`_poll` checks)."""
        assert self._consumer is not None
        if not self.from_snapshot:
            return
        for tp in self._consumer.assignment():
            offset = self.offsets.get(tp, 0)
            if offset > 0:
                self._check[tp] = self.last_ids[tp]
            self._consumer.seek(tp, max(offset - 1, 0))

    def _discard_snapshot(self, why: str) -> None:
        assert self._consumer is not None
        log.warning(
            "registry: the snapshot does not match the bus (%s); reading from the start", why
        )
        self.registry.clear()
        self.offsets, self.last_ids, self._check = {}, {}, {}
        self.from_snapshot = False
        for tp in self._consumer.assignment():
            self._consumer.seek(tp, 0)

    def save_snapshot(self) -> None:
        """Write the state and the offsets it reflects to the store (any process may: every
        snapshot is a consistent prefix of the same topics)."""
        if self.store is None:
            return
        offsets = [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "offset": off,
                "last_id": self.last_ids[tp],
            }
            for tp, off in sorted(self.offsets.items(), key=lambda i: (i[0].topic, i[0].partition))
            if tp in self.last_ids
        ]
        data = {"format": 1, "offsets": offsets, **self.registry.snapshot()}
        self.store.put(SNAPSHOT_KEY, json.dumps(data).encode(), "application/json")
        self.applied_since_snapshot = 0

    # -- reading --------------------------------------------------------------------------

    def _poll(self, timeout_s: float) -> int:
        assert self._consumer is not None
        records = self._consumer.poll(timeout_s)
        for r in records:
            if r.tp in self._check:  # the first event read of a partition after the seek
                expected = self._check.pop(r.tp)
                if r.offset != self.offsets[r.tp] - 1 or r.header("ce_id") != expected.encode():
                    self._discard_snapshot(f"{r.topic}/{r.partition} at offset {r.offset}")
                    return len(records)
                continue
            try:
                env = self.codec.decode(
                    r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset
                )
            except DecodeError as exc:  # not ours to dead-letter: the registry just skips it
                log.warning("registry: skipping an undecodable record: %s", exc)
            else:
                self.registry.apply(env.data, env.id)
            self.offsets[r.tp] = r.offset + 1
            self.last_ids[r.tp] = (r.header("ce_id") or b"").decode()
            self.applied_since_snapshot += 1
        return len(records)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll(0.5)
                if self.applied_since_snapshot >= self.snapshot_every:
                    self.save_snapshot()
            except Exception:  # a bus or store hiccup: keep following
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()
