"""The capture thread on its own: what it hands its publisher, and how often."""

from __future__ import annotations

import time

import numpy as np

from driftline.events import ScoreCompleted
from driftline.runtime.http.capture import LINGER_S, Capture


class _SlowPublisher:
    """Records what it is handed; each publish takes ``seconds``, as a bus transaction does."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.published: list[list[ScoreCompleted]] = []

    def publish_many(self, events: list[tuple[ScoreCompleted, str]]) -> None:
        time.sleep(self.seconds)
        self.published.append([event for event, _ in events])


def test_a_steady_stream_is_published_once_a_linger_not_as_fast_as_it_comes() -> None:
    """Requests that come while a publish is under way wait for the next linger: each
    publish costs a bus transaction whatever its size, so draining until the queue was
    empty published a tail of small batches back to back."""
    publisher = _SlowPublisher(seconds=LINGER_S / 5)
    capture = Capture(publisher)
    capture.start()
    x, y = np.ones((1, 3)), np.zeros(1)
    started = time.monotonic()
    offered = 0
    try:
        while time.monotonic() - started < 20 * LINGER_S:
            capture.offer("m", f"r{offered}", 1, ["a", "b", "c"], x, y, time.time_ns() // 1000)
            offered += 1
            time.sleep(0.001)
    finally:
        capture.stop()
    elapsed = time.monotonic() - started
    ids = [
        rid
        for batch in publisher.published
        for e in batch
        for rid in dict.fromkeys(e.row_ids or ())
    ]
    assert ids == [f"r{i}" for i in range(offered)]  # every request, once, in order
    assert capture.counts == {"queued": offered, "sent": offered, "dropped": 0, "failed": 0}
    # one publish a linger (and the last, on stop); draining until empty made about one
    # per publish time, five times as many
    assert len(publisher.published) <= elapsed / LINGER_S + 2
