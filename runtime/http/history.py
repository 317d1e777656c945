"""What the gateway keeps of each model's recent events, for ``/metrics`` and the dashboard.

:class:`History` reads ``drift.checked``, ``drift.detected`` and ``model.trained`` from the
start of their topics, in a consumer group of its own, and keeps per model the newest
:data:`KEEP` of each, and the latest ``drift.checked`` on its own (the drift gauges). Of
``score.completed`` it keeps only sums per model (:class:`Scoring`: the dashboard's cost
per 1,000 predictions), not the events.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TypeVar

from driftline.events.codec import Codec
from driftline.events.models import (
    DriftChecked,
    DriftDetected,
    Event,
    ModelTrained,
    ScoreCompleted,
)
from driftline.runtime.bus.base import Bus
from driftline.runtime.errors import DecodeError
from driftline.runtime.http.capture import SOURCE as CAPTURED

log = logging.getLogger("driftline.history")

KEEP = 2_000
"""Events of each followed type kept per model (the newest)."""
FOLLOWED: tuple[type[Event], ...] = (DriftChecked, DriftDetected, ModelTrained)
SUMMED: tuple[type[Event], ...] = (ScoreCompleted,)
"""Types read but only summed (:class:`Scoring`)."""
E = TypeVar("E", bound=Event)


@dataclass
class Scoring:
    """What the score function's requests of one model cost: the ``score.completed`` events
    that carry their handler's seconds (events of the ``/v2`` endpoints carry none)."""

    requests: int = 0
    predictions: int = 0
    seconds: float = 0.0
    """Handler seconds (aligning columns and predicting), summed."""


class History:
    """Per model, the newest :data:`KEEP` events of each :data:`FOLLOWED` type."""

    def __init__(self, bus: Bus, codec: Codec | None = None):
        self.bus = bus
        self.codec = codec or Codec()
        self.latest: dict[str, DriftChecked] = {}
        self.scoring: dict[str, Scoring] = {}
        self._kept: dict[tuple[type[Event], str], deque[Event]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Follow from the start of the topics (again after a stop)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.bus.create_topics([kind.TYPE for kind in FOLLOWED + SUMMED])
        with self._lock:  # read again from the start
            self._kept.clear()
            self.scoring.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="history", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        topics = [kind.TYPE for kind in FOLLOWED + SUMMED]
        consumer = self.bus.consumer(f"driftline.history.{uuid.uuid4().hex}", topics)
        try:
            while not stop.is_set():
                try:
                    records = consumer.poll(0.2)
                except Exception:  # a bus hiccup: the gauges and charts go stale for a while
                    log.warning("history: poll failed", exc_info=True)
                    stop.wait(1.0)
                    continue
                for r in records:
                    if r.topic == ScoreCompleted.TYPE and r.header("ce_source") == CAPTURED:
                        continue  # a /v2 request: carries no handler seconds to sum
                    try:
                        self.keep(self.codec.decode(r.value, r.headers, topic=r.topic).data)
                    except DecodeError:
                        continue
        finally:
            consumer.close()

    def keep(self, event: Event) -> None:
        """Keep ``event`` if it is of a followed type; add a summed one to its sums."""
        if isinstance(event, ScoreCompleted):
            self._sum(event)
        if not isinstance(event, FOLLOWED):
            return
        with self._lock:
            if isinstance(event, DriftChecked):
                self.latest[event.model] = event
            key = (type(event), event.model)
            self._kept.setdefault(key, deque(maxlen=KEEP)).append(event)

    def _sum(self, event: ScoreCompleted) -> None:
        if event.seconds <= 0:  # not measured: a /v2 request, or an older runner
            return
        with self._lock:
            s = self.scoring.setdefault(event.model, Scoring())
            s.requests += 1
            s.predictions += len(event.predictions)
            s.seconds += event.seconds

    def of(self, kind: type[E], model: str) -> list[E]:
        """The model's kept events of ``kind``, in the order they were read."""
        with self._lock:
            return list(self._kept.get((kind, model), ()))  # type: ignore[arg-type]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
