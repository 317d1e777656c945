"""Placement: which of the functions a runner offers it serves, decided from heartbeats.

Every runner decides for itself from the same view of live runners (no coordinator, so
nothing to elect or lose), with one rule per ``gpu`` need:

- ``none``: served by every runner that offers it;
- ``required``: served only by runners with a GPU; where no live runner offering it has
  one, it is *unserveable*: logged, and listed in the beats (``driftline status``), while
  its events wait in its consumer group;
- ``preferred``: served by runners with a GPU; a runner without one serves it only while
  no live GPU runner serves it. When the last GPU runner dies, CPU runners take over once
  its beats are ``heartbeat_timeout_s`` old; when a GPU runner serves it again, they hand
  it back. They hand back only once the GPU runner's worker has joined the consumer group
  (``ready`` in its beats), so the function is never left without a consumer and members
  never leave a group in the middle of a join; stopping drains the batch in hand and
  commits.

Moving a function moves its consumer group membership: Kafka rebalances the partitions,
committed offsets stay with the group, so nothing is lost; records a killed runner had
not committed are delivered again, with the same derived output ids (deduplicated
downstream).

Starting and stopping a function (its init hook, draining a long training batch) runs in
a thread of its own, so heartbeats never stop while work moves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from driftline.events.topics import RUNNERS_TOPIC
from driftline.runtime.bus.base import Bus
from driftline.runtime.cluster.capabilities import Capabilities
from driftline.runtime.cluster.heartbeat import (
    Beat,
    HeartbeatSender,
    LiveRunners,
    new_runner_id,
    partitions_of,
    serveable,
)
from driftline.runtime.errors import BusError
from driftline.runtime.function import FunctionSpec, Handler, spec_of
from driftline.runtime.runner import Runner

log = logging.getLogger("driftline.placement")
_RETRY_S = 10.0


@dataclass(frozen=True)
class Plan:
    """What one runner should serve, and why it leaves the rest."""

    serve: frozenset[str]
    unserved: dict[str, str]
    unserveable: frozenset[str]


def plan(
    me: str,
    caps: Capabilities,
    offers: dict[str, str],
    live: Sequence[Beat],
    *,
    settled: bool = True,
) -> Plan:
    """The placement rule (see the module docstring) for runner ``me``.

    ``settled`` is False until the runner has listened long enough to have heard its peers:
    until then a CPU runner holds off ``preferred`` functions rather than take them and
    hand them back a moment later.
    """
    peers = [b for b in live if b.runner != me]
    serve: set[str] = set()
    unserved: dict[str, str] = {}
    unserveable: set[str] = set()
    for name, need in offers.items():
        if need == "none" or caps.has_gpu:
            serve.add(name)
        elif need == "required":
            unserved[name] = "needs a GPU; this runner has none"
            if not serveable(need, peers, name):
                unserveable.add(name)
        else:
            gpu_peers = [b.runner for b in peers if b.capabilities.has_gpu and name in b.ready]
            if gpu_peers:
                unserved[name] = f"prefers a GPU: served by {', '.join(sorted(gpu_peers))}"
            elif not settled:
                unserved[name] = "prefers a GPU: listening for GPU runners first"
            else:
                serve.add(name)
    return Plan(frozenset(serve), unserved, frozenset(unserveable))


class Placement:
    """Runs a :class:`Runner` whose functions follow :func:`plan`, and sends its heartbeats."""

    def __init__(
        self,
        runner: Runner,
        functions: Sequence[Handler | FunctionSpec],
        caps: Capabilities,
        *,
        interval_s: float = 5.0,
        timeout_s: float = 15.0,
        warmup_s: float | None = None,
        settle_s: float | None = None,
        topic: str = RUNNERS_TOPIC,
        runner_id: str | None = None,
    ):
        self.runner = runner
        self.bus: Bus = runner.bus
        self.specs = {s.name: s for s in map(spec_of, functions)}
        self.caps = caps
        self.interval_s = interval_s
        self.warmup_s = interval_s if warmup_s is None else warmup_s
        # A worker that never gets partitions (more members than partitions) is ready anyway
        # after this long, so CPU runners do not keep work a GPU runner could take.
        self.settle_s = max(2 * timeout_s, 30.0) if settle_s is None else settle_s
        self.id = runner_id or new_runner_id()
        self.view = LiveRunners(self.bus, timeout_s=timeout_s, topic=topic)
        self.sender = HeartbeatSender(self.bus, topic=topic)
        self.started = time.time()
        self.last = Plan(frozenset(), {}, frozenset())
        self._moving: dict[str, threading.Thread] = {}
        self._applied = False
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._moved = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="placement", daemon=True)

    @classmethod
    def on_platform(cls, platform: Any, functions: Sequence[Handler | FunctionSpec]) -> Placement:
        """A placement (not started) for ``functions`` on an open
        :class:`~driftline.runtime.platform.Platform`, with this machine's capabilities and
        the platform's heartbeat settings. On the embedded bus this process is the only one:
        nothing to listen for before placing."""
        from driftline.runtime.cluster.capabilities import detect

        settings = platform.settings
        caps = detect(settings)
        runner = Runner(
            platform.bus,
            [],
            store=platform.store,
            settings=settings,
            registry=platform.registry,
            capabilities=caps,
        )
        embedded = not settings.on_kafka
        return cls(
            runner,
            functions,
            caps,
            interval_s=settings.heartbeat_interval_s,
            timeout_s=settings.heartbeat_timeout_s,
            warmup_s=0.0 if embedded else None,
        )

    @property
    def offers(self) -> dict[str, str]:
        return {name: spec.gpu for name, spec in self.specs.items()}

    def start(self) -> None:
        self.runner.start()
        self._thread.start()

    def wait_placed(self, timeout_s: float = 30.0) -> bool:
        """Wait until the first plan is applied and its functions have started (False: timed
        out). On Kafka, ``preferred`` functions of a CPU runner start only after the warm-up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                done = self._applied and not any(t.is_alive() for t in self._moving.values())
            if done:
                return True
            self._stop.wait(0.05)
        return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain and commit every function, then say goodbye on the control topic."""
        self._stop.set()
        self._thread.join(timeout_s)
        for mover in list(self._moving.values()):
            mover.join(timeout_s)
        self.runner.stop(timeout_s)
        self.sender.send(self.beat(state="stopped"))
        self.sender.close()
        self.view.close()

    def beat(self, state: str = "alive") -> Beat:
        now = time.monotonic()
        with self._lock:
            workers = dict(self.runner.workers)
            last = self.last
        serves = tuple(sorted(workers))
        ready = tuple(
            n for n in serves if workers[n].joined or now - workers[n].started_at >= self.settle_s
        )
        return Beat(
            runner=self.id,
            capabilities=self.caps,
            offers=self.offers,
            serves=serves,
            ready=ready,
            unserved=last.unserved,
            unserveable=tuple(sorted(last.unserveable)),
            partitions=partitions_of(workers),
            stats={n: workers[n].stats.to_wire() for n in serves},
            state="stopped" if state == "stopped" else "alive",
            pid=os.getpid(),
            started=self.started,
            sent=time.time(),
            interval_s=self.interval_s,
        )

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        next_beat = 0.0
        tick = min(0.5, self.interval_s / 2)
        while not self._stop.is_set():
            try:
                self.view.poll(tick)
                changed = self._apply(
                    plan(
                        self.id,
                        self.caps,
                        self.offers,
                        self.view.runners(),
                        settled=self.view.listening_for() >= self.warmup_s,
                    )
                )
            except BusError as exc:
                log.warning("placement: %s", exc)
                self._stop.wait(tick)
                continue
            except Exception:  # a bug here must not stop the heartbeats: peers would take over
                log.exception("placement: unexpected error; trying again")
                self._stop.wait(tick)
                continue
            if self._moved.is_set():
                self._moved.clear()
                changed = True
            if changed or time.monotonic() >= next_beat:
                self.sender.send(self.beat())
                next_beat = time.monotonic() + self.interval_s

    def _apply(self, new: Plan) -> bool:
        """Start and stop functions toward ``new``; True when what is served or reported changed."""
        with self._lock:
            old, self.last = self.last, new
            self._moving = {n: t for n, t in self._moving.items() if t.is_alive()}
            running = set(self.runner.workers)
            now = time.monotonic()
            idle = [
                n for n in self.specs if n not in self._moving and self._retry_at.get(n, 0.0) <= now
            ]
            moves = [(n, True) for n in sorted(new.serve - running) if n in idle]
            moves += [(n, False) for n in sorted(running - new.serve) if n in idle]
            for name, start in moves:
                mover = threading.Thread(
                    target=self._move, args=(name, start), name=f"move-{name}", daemon=True
                )
                self._moving[name] = mover
                mover.start()
            self._applied = True
        self._report(old, new)
        return bool(moves) or old.unserveable != new.unserveable

    def _move(self, name: str, start: bool) -> None:
        try:
            if start:
                log.info("%s: serving %s (%s)", self.id, name, self._why(name))
                self.runner.add(self.specs[name])
            else:
                log.info(
                    "%s: handing %s back (%s)", self.id, name, self.last.unserved.get(name, "")
                )
                self.runner.remove(name)
        except Exception:  # a failing init hook must not kill placement; it is tried again later
            log.exception(
                "%s: could not %s %s; trying again in %.0fs",
                self.id,
                "start" if start else "stop",
                name,
                _RETRY_S,
            )
            self._retry_at[name] = time.monotonic() + _RETRY_S
        self._moved.set()  # the loop announces the change at its next tick

    def _why(self, name: str) -> str:
        need = self.specs[name].gpu
        if need == "preferred" and not self.caps.has_gpu:
            return "prefers a GPU, but no live GPU runner serves it"
        return f"gpu={need}"

    def _report(self, old: Plan, new: Plan) -> None:
        for name in sorted(new.unserveable - old.unserveable):
            log.warning(
                "function %s needs a GPU and no live runner offering it has one: its events wait in "
                "group %s until a GPU runner starts",
                name,
                self.specs[name].group,
            )
        for name in sorted(old.unserveable - new.unserveable):
            log.warning("function %s can be served again (a GPU runner offers it)", name)
