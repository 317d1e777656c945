"""Per-function counters, read by the metrics endpoint and ``driftline status``."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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

    def to_wire(self) -> dict[str, Any]:
        """The counters and the latency histogram as JSON (a runner's heartbeat)."""
        with self._lock:
            return {**self.as_dict(), "latency_buckets": list(self.latency_buckets)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> FunctionStats:
        buckets = [int(n) for n in data.get("latency_buckets") or ()]
        if len(buckets) != len(LATENCY_BUCKETS_S) + 1:
            buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # another version's buckets: not ours
        return cls(
            consumed=int(data.get("consumed", 0)),
            succeeded=int(data.get("succeeded", 0)),
            retried=int(data.get("retried", 0)),
            dead_lettered=int(data.get("dead_lettered", 0)),
            duplicates=int(data.get("duplicates", 0)),
            handler_seconds=float(data.get("handler_seconds", 0.0)),
            latency_buckets=buckets,
        )

    def add(self, other: FunctionStats) -> FunctionStats:
        """The sum of two processes' counters (a new object)."""
        return FunctionStats(
            **{k: getattr(self, k) + getattr(other, k) for k in _COUNTERS},
            handler_seconds=self.handler_seconds + other.handler_seconds,
            latency_buckets=[
                a + b for a, b in zip(self.latency_buckets, other.latency_buckets, strict=False)
            ],
        )


_COUNTERS = ("consumed", "succeeded", "retried", "dead_lettered", "duplicates")


class ProcessStats:
    """The function counters ``driftline up`` shows (``/metrics``, the dashboard): its own
    runner's, plus those its child runner processes (``--replicas``, drift-check in a
    process of its own) send in their heartbeats, a heartbeat interval behind."""

    def __init__(
        self,
        runner: Any,
        beats: Callable[[], Iterable[Any]],
        children: Callable[[], Collection[int]],
    ):
        """``runner``: this process's (or None); ``beats``: the live runners' latest beats;
        ``children``: the pids of this process's child runners."""
        self.runner = runner
        self.beats = beats
        self.children = children

    @property
    def stats(self) -> dict[str, FunctionStats]:
        out = dict(self.runner.stats) if self.runner is not None else {}
        pids = set(self.children())
        for beat in self.beats():
            if beat.pid in pids:
                for name, wire in beat.stats.items():
                    theirs = FunctionStats.from_wire(wire)
                    out[name] = out[name].add(theirs) if name in out else theirs
        return out
