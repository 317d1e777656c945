"""``driftline up``: the gateway, the five functions and the upload triggers in one process.

On the embedded default everything lives under ``--home``; with ``--bus``/``--store`` URLs
the same process joins Kafka and S3 (and more processes can share the work). With
``--replicas score=3,drift-check=2`` (Kafka only) the named functions run in that many
child runner processes instead of here (:mod:`driftline.runtime.replicas`); the gateway
then scores HTTP requests with its own sessions, kept on the production versions. Models
already in the registry are loaded before the first request is taken. SIGTERM or SIGINT
stops the HTTP server gracefully (requests in flight are answered), then the watchers,
then the runner (batches in hand are finished and committed), then the replicas.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import uvicorn

from driftline.runtime.settings import Settings

if TYPE_CHECKING:
    from driftline.runtime.replicas import ReplicaSet

log = logging.getLogger("driftline.server")


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    watch_interval_s: float = 2.0,
    log_level: str = "warning",
    announce: Callable[[str], None] = print,
    replicas: ReplicaSet | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (1 if the server could not start).

    ``replicas``: child runner processes for some functions, which then do not run here.
    """
    from driftline.runtime.gateway import create_app
    from driftline.runtime.heartbeat import LiveRunners
    from driftline.runtime.platform import Platform

    platform = Platform.open(settings)
    stoppers: list[Callable[[], Any]] = [platform.close]
    try:
        elsewhere = {f for child in replicas.children for f in child.functions} if replicas else set()
        if replicas is not None:
            stoppers.append(_start_replicas(replicas))
        runner = _background(platform, watch_interval_s, stoppers, skip=elsewhere)
        view = LiveRunners(platform.bus, timeout_s=settings.heartbeat_timeout_s)
        view.start()
        stoppers.append(view.close)
        stoppers.append(_announce(platform.bus, runner, settings))
        app = create_app(platform, _gateway_sessions(platform, runner), runner, runners=view)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
        names = ", ".join(s.name for s in runner.specs) or "no functions"
        if replicas is not None:
            counts = {f: sum(f in c.functions for c in replicas.children) for f in sorted(elsewhere)}
            names += "; in replica processes: " + ", ".join(f"{f} ({n})" for f, n in counts.items())
        server = _Server(
            config,
            lambda: announce(
                f"driftline up: http://{host}:{port} ({names}; bus {settings.bus or 'embedded'}, "
                f"store {platform.store!r}, models {platform.registry.models()})"
            ),
        )

        def stop(signum: int, _: Any) -> None:  # uvicorn re-raises it after its own shutdown
            server.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
            print(
                f"driftline up: the HTTP server could not start on {host}:{port}", file=sys.stderr
            )
            return 1
        return 0
    finally:
        for stopper in reversed(stoppers):
            try:
                stopper()
            except Exception:  # stop the rest whatever one of them does
                log.exception("stopping %s failed", stopper)


def _announce(bus: Any, runner: Any, settings: Settings) -> Callable[[], None]:
    """Heartbeats for this process (it serves every function), so ``GET /v1/runners`` and
    ``driftline status`` on Kafka see it; returns the stopper, which says goodbye."""
    import os
    import time

    from driftline.runtime.capabilities import detect
    from driftline.runtime.heartbeat import Beat, HeartbeatSender, new_runner_id, partitions_of

    sender, stop = HeartbeatSender(bus), threading.Event()
    caps, runner_id, started = detect(settings), new_runner_id(), time.time()
    names = tuple(s.name for s in runner.specs)
    offers = {s.name: s.gpu for s in runner.specs}

    def beat(state: str) -> Beat:
        return Beat(runner=runner_id, capabilities=caps, offers=offers, serves=names, ready=names,
                    partitions=partitions_of(runner.workers),
                    state=state, pid=os.getpid(), started=started,  # type: ignore[arg-type]
                    sent=time.time(), interval_s=settings.heartbeat_interval_s)

    def loop() -> None:
        while not stop.is_set():
            sender.send(beat("alive"))
            stop.wait(settings.heartbeat_interval_s)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        sender.send(beat("stopped"))
        sender.close()

    return close


def _start_replicas(replicas: ReplicaSet) -> Callable[[], Any]:
    """Run the child processes beside the server; returns the stopper (SIGTERM, drain, wait)."""
    thread = threading.Thread(target=replicas.run, name="replicas", daemon=True)
    thread.start()

    def stop() -> None:
        replicas.stop()
        thread.join()

    return stop


def _gateway_sessions(platform: Any, runner: Any) -> Any:
    """The score function's sessions when it runs here; else the gateway's own, on the same
    execution providers (the gateway keeps them on the production versions)."""
    from driftline.functions.score import Sessions
    from driftline.runtime.capabilities import detect, scoring_providers

    if "score" in runner.workers:
        return runner.workers["score"].ctx.state
    providers = scoring_providers(detect(platform.settings))
    return Sessions(platform.store, platform.registry, providers=providers)


def _background(platform: Any, watch_interval_s: float, stoppers: list[Callable[[], Any]], *,
                skip: Collection[str] = ()) -> Any:
    """Start the functions (but those in ``skip``) and the upload triggers; their stops go on
    ``stoppers``."""
    from driftline.functions import FUNCTIONS
    from driftline.runtime.edge import Publisher
    from driftline.runtime.runner import Runner
    from driftline.runtime.s3events import NotificationConsumer
    from driftline.runtime.triggers import UploadWatcher

    settings = platform.settings
    here = [f for f in FUNCTIONS if f.spec.name not in skip]  # type: ignore[attr-defined]
    runner = Runner(
        platform.bus, here, store=platform.store, settings=settings, registry=platform.registry
    )
    runner.start()
    stoppers.append(runner.stop)
    watcher = UploadWatcher(platform.store, platform.bus)
    watcher.start(watch_interval_s)
    stoppers.append(watcher.stop)
    if settings.s3_notification_topic:
        publisher = Publisher(platform.bus, source="driftline/s3-notifications")
        stoppers.append(publisher.close)
        bucket = getattr(platform.store, "bucket", None)
        consumer = NotificationConsumer(
            platform.bus, settings.s3_notification_topic, publisher, bucket=bucket
        )
        consumer.start()
        stoppers.append(consumer.stop)
    return runner


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]):
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()
