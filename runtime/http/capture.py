"""Data capture: requests served over HTTP become ``score.completed`` events, off the request path.

Real-time traffic is the traffic most users have; captured, it reaches drift-check like
bus traffic: data drift on its features, performance drift once labels arrive
(``labels.received`` with the request's id). A request hands its features, predictions
and version to :meth:`Capture.offer`, which only puts a tuple on a bounded queue; one
thread looks every :data:`LINGER_S` and publishes what has gathered as one
``score.completed`` per model and version, the rows of every request in it each with its
request's id and time (``row_ids``, ``row_times``), in one flush. When the
queue is full the capture is dropped and counted; the request is never slowed or failed.
``rate`` samples: 1.0 captures every request.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from typing import Any, NamedTuple

import numpy as np

from driftline.events import Matrix, RowTimes, ScoreCompleted
from driftline.runtime.errors import DriftlineError

log = logging.getLogger("driftline.capture")

_BATCH = 1_000
LINGER_S = 0.05
"""How often the capture thread publishes what has gathered (as one batch)."""
SOURCE = b"driftline/capture"
"""``ce_source`` of the events published here (the history skips them: no handler seconds)."""


class Capture:
    """A bounded queue of served requests and the thread that publishes them.

    :meth:`offer` is called on the request path, so it does the least it can: a length
    check and a ``deque.append`` (atomic under the interpreter lock: no lock of its own to
    take, no thread to wake). The thread looks every :data:`LINGER_S` and publishes what
    has gathered.
    """

    def __init__(self, publisher: Any, *, rate: float = 1.0, size: int = 10_000):
        self.publisher = publisher
        self.rate = rate
        self.size = size
        self.counts = {"queued": 0, "sent": 0, "dropped": 0, "failed": 0}
        """Each written by one side only (queued and dropped by :meth:`offer`'s thread, the
        event loop; sent and failed by the capture thread), so no lock guards them."""
        self._items: deque[_Served] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(
        self,
        model: str,
        request_id: str,
        version: int,
        columns: list[str],
        x: np.ndarray,
        y: np.ndarray,
        event_time: int,
    ) -> None:
        """Capture one served request, unless sampled out or the queue is full (counted).
        ``event_time`` is in microseconds since the epoch."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        if len(self._items) >= self.size:
            self.counts["dropped"] += 1
            return
        self._items.append(_Served(model, request_id, version, columns, x, y, event_time))
        self.counts["queued"] += 1

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="capture", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued, then stop."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout_s)

    def _run(self, stop: threading.Event) -> None:
        # linger, as a Kafka producer does: one publish for the requests of the moment,
        # not one each. Every publish wakes the bus's readers, and drift-check saves its
        # journal once per batch it reads: a publish per request cost the process more CPU
        # than serving the request did
        while True:
            stopping = stop.wait(LINGER_S)
            # what gathered by now, not what comes while it is published: each publish
            # costs a bus transaction whatever its size, and draining until the queue was
            # empty made a tail of small ones (60 requests a publish on average under
            # load, against the 200-odd a linger gathers)
            pending = len(self._items)
            while pending > 0 or (stopping and self._items):
                take = min(_BATCH, len(self._items))
                batch = [self._items.popleft() for _ in range(take)]
                pending -= take
                self._publish(batch)
            if stopping:
                return

    def _publish(self, batch: list[_Served]) -> None:
        if not batch:
            return
        # one event per model and version for the batch: the rows of every request in it,
        # each with its request's id and time (row_ids, row_times); drift-check takes them
        # apart again. An event per request cost the bus, the runner and drift-check more
        # than serving the request did.
        groups: dict[tuple[str, int, tuple[str, ...]], list[_Served]] = {}
        for served in batch:
            key = (served.model, served.version, tuple(served.columns))
            groups.setdefault(key, []).append(served)
        events = [_event(items) for items in groups.values()]
        try:
            self.publisher.publish_many([(e, f"capture:{e.model}:{e.request_id}") for e in events])
        except DriftlineError as exc:
            self.counts["failed"] += len(batch)
            log.warning("could not publish %d captured requests: %s", len(batch), exc)
        else:
            self.counts["sent"] += len(batch)


class _Served(NamedTuple):
    """One served request, as the request thread hands it over."""

    model: str
    request_id: str
    version: int
    columns: list[str]
    x: np.ndarray
    y: np.ndarray
    event_time: int
    """Microseconds since the epoch: a datetime per request cost the capture thread about
    a microsecond each to convert."""


def _event(items: list[_Served]) -> ScoreCompleted:
    """One ``score.completed`` for requests served by one model version: every request's
    rows and predictions concatenated once (not converted one by one), each row with its
    request's id and time."""
    sizes = [len(s.x) for s in items]
    first = items[0]
    micros = np.fromiter((s.event_time for s in items), dtype=np.int64, count=len(items))
    return ScoreCompleted(
        model=first.model,
        request_id=first.request_id,
        version=first.version,
        predictions=np.concatenate([np.ravel(s.y) for s in items]).astype(np.float64).tolist(),
        columns=list(first.columns),
        rows=Matrix(np.concatenate([s.x for s in items]).astype(np.float64, copy=False)),
        event_time=RowTimes(micros[:1]).datetimes()[0],
        row_times=RowTimes(np.repeat(micros, sizes)),
        row_ids=[s.request_id for s, n in zip(items, sizes, strict=True) for _ in range(n)],
    )
