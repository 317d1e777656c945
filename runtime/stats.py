"""Per-function counters, read by the metrics endpoint and ``driftline status``."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)


@dataclass
class FunctionStats:
    """Counters of one function in one runner process."""

    consumed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    handler_seconds: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.handler_seconds += seconds
            self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1

    def as_dict(self) -> dict[str, float | int]:
        return {
            "consumed": self.consumed,
            "succeeded": self.succeeded,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "handler_seconds": round(self.handler_seconds, 6),
        }
