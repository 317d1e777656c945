"""Runner heartbeats on the control topic, and the view of live runners built from them.

Every runner process sends a :class:`Beat` to :data:`~driftline.events.topics.RUNNERS_TOPIC`
every ``heartbeat_interval_s``: who it is, what it has (:class:`Capabilities`), which
functions it offers, which it serves now, and which it cannot serve and why. A runner that
stops cleanly sends a last beat with ``state="stopped"``; one that dies just goes quiet.

:class:`LiveRunners` reads the topic in a consumer group of its own (each reader sees every
beat) and keeps the newest beat per runner. A runner is live while its last beat is younger
than ``heartbeat_timeout_s``; its age is measured from the beat's send time, so beats read
back from the topic's history after a restart do not look fresh (clocks are assumed to be
NTP-synchronised to well under the timeout).

Beats are JSON, not events: they never reach a function, and they carry a ``v`` field so a
newer runner can add fields without breaking an older reader.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from driftline.events.topics import RUNNERS_TOPIC
from driftline.runtime.bus.base import Bus, Consumer, Producer
from driftline.runtime.cluster.capabilities import Capabilities
from driftline.runtime.errors import BusError

log = logging.getLogger("driftline.heartbeat")

BEAT_TYPE = "driftline.runner.heartbeat"
FORMAT_VERSION = 1


def new_runner_id() -> str:
    """``host-pid-random``: unique per process, readable in ``driftline status``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Beat:
    """One heartbeat: a runner's state at ``sent`` (Unix seconds)."""

    runner: str
    capabilities: Capabilities
    offers: dict[str, str] = field(default_factory=dict)
    """Functions this runner may host, with their ``gpu`` need (none, preferred, required)."""
    serves: tuple[str, ...] = ()
    """Functions whose workers run here now."""
    ready: tuple[str, ...] = ()
    """Served functions whose worker has joined its consumer group (or has been trying for a
    heartbeat timeout): CPU runners hand preferred work back only to those, so a group never
    sees members leave while a newcomer is still joining."""
    unserved: dict[str, str] = field(default_factory=dict)
    """Offered functions not served here, with why (placed on a GPU runner, needs a GPU)."""
    unserveable: tuple[str, ...] = ()
    """Offered functions that no live runner can serve, as this runner sees it."""
    partitions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per served function, the partitions its consumer group gives this runner now, as
    ``topic[partition]`` (how replicas split the work; empty while it waits for a share)."""
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per served function, its counters in this runner (:meth:`FunctionStats.to_wire`):
    ``driftline up`` shows its child processes' in its ``/metrics`` and dashboard."""
    state: Literal["alive", "stopped"] = "alive"
    pid: int = 0
    started: float = 0.0
    sent: float = 0.0
    interval_s: float = 5.0

    def to_json(self) -> bytes:
        data = {
            "v": FORMAT_VERSION,
            "runner": self.runner,
            "state": self.state,
            "pid": self.pid,
            "started": self.started,
            "sent": self.sent,
            "interval_s": self.interval_s,
            "capabilities": self.capabilities.as_dict(),
            "offers": self.offers,
            "serves": list(self.serves),
            "ready": list(self.ready),
            "unserved": self.unserved,
            "unserveable": list(self.unserveable),
            "partitions": {name: list(tps) for name, tps in self.partitions.items()},
            "stats": self.stats,
        }
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Beat:
        data = json.loads(raw)
        return cls(
            runner=str(data["runner"]),
            capabilities=Capabilities.from_dict(data.get("capabilities") or {}),
            offers=dict(data.get("offers") or {}),
            serves=tuple(data.get("serves") or ()),
            ready=tuple(data.get("ready") or ()),
            unserved=dict(data.get("unserved") or {}),
            unserveable=tuple(data.get("unserveable") or ()),
            partitions={str(k): tuple(v) for k, v in (data.get("partitions") or {}).items()},
            stats={str(k): dict(v) for k, v in (data.get("stats") or {}).items()},
            state="stopped" if data.get("state") == "stopped" else "alive",
            pid=int(data.get("pid", 0)),
            started=float(data.get("started", 0.0)),
            sent=float(data.get("sent", 0.0)),
            interval_s=float(data.get("interval_s", 5.0)),
        )

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready summary (``driftline status``, ``GET /v1/runners``)."""
        data: dict[str, Any] = json.loads(self.to_json())
        data.pop("v")
        data["age_s"] = round(max(0.0, (now or time.time()) - self.sent), 3)
        return data


def partitions_of(workers: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``{function: ("topic[p]", ...)}`` from running workers' assignments, sorted."""
    return {
        name: tuple(f"{t}[{p}]" for t, p in sorted((tp.topic, tp.partition) for tp in w.assigned))
        for name, w in sorted(dict(workers).items())
    }


class HeartbeatSender:
    """Sends beats for one runner on the control topic."""

    def __init__(self, bus: Bus, *, topic: str = RUNNERS_TOPIC):
        self.bus = bus
        self.topic = topic
        self._producer: Producer | None = None

    def send(self, beat: Beat) -> None:
        """Send one beat and wait for it; a bus failure is logged, never raised."""
        try:
            if self._producer is None:
                self._producer = self.bus.producer()
            self._producer.send(
                self.topic,
                beat.to_json(),
                key=beat.runner.encode(),
                headers=[("ce_type", BEAT_TYPE.encode())],
            )
            self._producer.flush(timeout_s=5.0)
        except BusError as exc:
            log.warning("heartbeat of %s not sent: %s", beat.runner, exc)
            self._reset()

    def close(self) -> None:
        self._reset()

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()


class LiveRunners:
    """The live runners, as their heartbeats tell; call :meth:`poll` or :meth:`start` it."""

    def __init__(
        self,
        bus: Bus,
        *,
        timeout_s: float = 15.0,
        topic: str = RUNNERS_TOPIC,
        clock: Callable[[], float] = time.time,
    ):
        self.bus = bus
        self.timeout_s = timeout_s
        self.topic = topic
        self.clock = clock
        self._beats: dict[str, Beat] = {}
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._assigned_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ----------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what arrived on the control topic; returns how many beats were read."""
        if self._consumer is None:
            self.bus.create_topics([self.topic], partitions=1)
            self._consumer = self.bus.consumer(
                f"driftline.runners.view.{uuid.uuid4().hex}", [self.topic]
            )
        records = self._consumer.poll(timeout_s, 1000)
        if self._assigned_at is None and self._consumer.assignment():
            self._assigned_at = time.monotonic()
        for record in records:
            try:
                self.observe(Beat.from_json(record.value))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring a bad beat at %s@%d: %s", record.topic, record.offset, exc)
        return len(records)

    def observe(self, beat: Beat) -> None:
        """Take one beat into the view (beats older than the newest one known are ignored)."""
        with self._lock:
            known = self._beats.get(beat.runner)
            if known is None or beat.sent >= known.sent:
                self._beats[beat.runner] = beat

    def listening_for(self) -> float:
        """Seconds since the view's consumer got its partition (0 before that)."""
        return 0.0 if self._assigned_at is None else time.monotonic() - self._assigned_at

    def start(self, poll_s: float = 0.5) -> None:
        """Read in a background thread until :meth:`close`."""
        self._thread = threading.Thread(
            target=self._run, args=(poll_s,), name="live-runners", daemon=True
        )
        self._thread.start()

    def _run(self, poll_s: float) -> None:
        while not self._stop.is_set():
            try:
                self.poll(poll_s)
            except BusError as exc:
                log.warning("runner view: %s", exc)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- the view -----------------------------------------------------------------------
    def runners(self) -> list[Beat]:
        """Live runners: last beat younger than the timeout and not a goodbye; by id."""
        now = self.clock()
        with self._lock:
            beats = list(self._beats.values())
        return sorted(
            (b for b in beats if b.state == "alive" and now - b.sent < self.timeout_s),
            key=lambda b: b.runner,
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Live runners as JSON-ready dicts (what ``GET /v1/runners`` answers)."""
        now = self.clock()
        return [b.as_dict(now) for b in self.runners()]


def serveable(need: str, runners: Iterable[Beat], name: str) -> bool:
    """Whether some live runner that offers ``name`` can host it."""
    return any(name in r.offers and (need != "required" or r.capabilities.has_gpu) for r in runners)


def function_report(
    runners: list[Beat], known: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Per function: its GPU need, who serves it, and a problem when no live runner can.

    ``known`` adds functions (name → gpu need) that no live runner may offer, such as the
    built-in ones: those are reported as offered by nobody.
    """
    needs = dict(known or {})
    for r in runners:
        needs.update(r.offers)
    rows = []
    for name in sorted(needs):
        need = needs[name]
        served_by = [r.runner for r in runners if name in r.serves]
        problem = ""
        if not any(name in r.offers for r in runners):
            problem = "no live runner offers it"
        elif not serveable(need, runners, name):
            problem = "needs a GPU and no live runner offering it has one"
        elif not served_by:
            problem = "not served right now (placement is moving it)"
        rows.append(
            {
                "function": name,
                "gpu": need,
                "served_by": served_by,
                "serveable": not problem.startswith(("no live", "needs")),
                "problem": problem,
            }
        )
    return rows
