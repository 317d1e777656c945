"""``driftline up``: the gateway, the five functions and the upload triggers in one process.

On the embedded default everything lives under ``--home``; with ``--bus``/``--store`` URLs
the same process joins Kafka and S3 (and more processes can share the work). Models
already in the registry are loaded before the first request is taken. SIGTERM or SIGINT
stops the HTTP server gracefully (requests in flight are answered), then the watchers,
then the runner (batches in hand are finished and committed).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from driftline.runtime.settings import Settings

log = logging.getLogger("driftline.server")


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    watch_interval_s: float = 2.0,
    log_level: str = "warning",
    announce: Callable[[str], None] = print,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (1 if the server could not start)."""
    from driftline.runtime.gateway import create_app
    from driftline.runtime.platform import Platform

    platform = Platform.open(settings)
    stoppers: list[Callable[[], Any]] = [platform.close]
    try:
        runner = _background(platform, watch_interval_s, stoppers)
        from driftline.runtime.heartbeat import LiveRunners

        view = LiveRunners(platform.bus, timeout_s=settings.heartbeat_timeout_s)
        view.start()
        stoppers.append(view.close)
        stoppers.append(_announce(platform.bus, runner, settings))
        app = create_app(platform, runner.workers["score"].ctx.state, runner, runners=view)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
        names = ", ".join(s.name for s in runner.specs)
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
    import threading
    import time

    from driftline.runtime.capabilities import detect
    from driftline.runtime.heartbeat import Beat, HeartbeatSender, new_runner_id

    sender, stop = HeartbeatSender(bus), threading.Event()
    caps, runner_id, started = detect(settings), new_runner_id(), time.time()
    names = tuple(s.name for s in runner.specs)
    offers = {s.name: s.gpu for s in runner.specs}

    def beat(state: str) -> Beat:
        return Beat(runner=runner_id, capabilities=caps, offers=offers, serves=names, ready=names,
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


def _background(platform: Any, watch_interval_s: float, stoppers: list[Callable[[], Any]]) -> Any:
    """Start the functions and the upload triggers; their stops go on ``stoppers``."""
    from driftline.functions import FUNCTIONS
    from driftline.runtime.edge import Publisher
    from driftline.runtime.runner import Runner
    from driftline.runtime.s3events import NotificationConsumer
    from driftline.runtime.triggers import UploadWatcher

    settings = platform.settings
    runner = Runner(
        platform.bus, FUNCTIONS, store=platform.store, settings=settings, registry=platform.registry
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
