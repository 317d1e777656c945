"""``driftline up``: the gateway, the functions and the upload triggers in one process.

On the embedded default everything lives under ``--home``; with ``--bus``/``--store`` URLs
the same process joins Kafka and S3 (and more processes can share the work). With
``--replicas score=3,drift-check=2`` the named functions run in that many child runner
processes instead of here (:mod:`driftline.runtime.cluster.replicas`; one each on the
embedded bus, which this process then shares with them: ``drift-check=1`` keeps
monitoring's work off the interpreter that serves ``/v2``); the gateway
then scores HTTP requests with its own sessions, kept on the production versions. Models
already in the registry are loaded before the first request is taken. SIGTERM or SIGINT
stops the HTTP server gracefully (requests in flight are answered), then the watchers,
then the runner (batches in hand are finished and committed), then the replicas.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn

from driftline.runtime.settings import Settings

if TYPE_CHECKING:
    from driftline.runtime.cluster.replicas import ReplicaSet
    from driftline.runtime.function import Handler

log = logging.getLogger("driftline.server")


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    watch_interval_s: float = 2.0,
    log_level: str = "warning",
    announce: Callable[[str], None] = print,
    functions: Sequence[Handler] | None = None,
    replicas: ReplicaSet | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (1 if the server could not start).

    ``functions``: the functions to host here, built-in or the user's (None: the
    built-ins), under the same GPU placement as ``driftline runner``; ``replicas``: child
    runner processes for some functions, which then do not run here.
    """
    from driftline.runtime.bus.embedded import EmbeddedBus
    from driftline.runtime.cluster.heartbeat import LiveRunners
    from driftline.runtime.function import spec_of
    from driftline.runtime.http.app import create_app
    from driftline.runtime.http.gateway import remove_address, write_address
    from driftline.runtime.platform import Platform
    from driftline.runtime.schemas import register_functions
    from driftline.runtime.stats import ProcessStats

    platform = Platform.open(settings)
    stoppers: list[Callable[[], Any]] = [platform.close]
    try:
        register_functions(platform.bus, [spec_of(f) for f in functions or ()])
        elsewhere = (
            {f for child in replicas.children for f in child.functions} if replicas else set()
        )
        if replicas is not None:
            if isinstance(platform.bus, EmbeddedBus):  # the children open our bus file too
                replicas.share(*platform.bus.share())
            stoppers.append(_start_replicas(replicas))
        placement = _host(platform, functions, elsewhere, stoppers)
        runner = placement.runner
        _start_triggers(platform, watch_interval_s, stoppers)
        view = LiveRunners(platform.bus, timeout_s=settings.heartbeat_timeout_s)
        view.start()
        stoppers.append(view.close)
        app = create_app(
            platform,
            _gateway_sessions(platform, placement),
            # the function counters: this process's and its children's (in their beats)
            ProcessStats(runner, view.runners, replicas.pids) if replicas else runner,
            runners=view,
            functions=functions,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            loop="uvloop",  # uvicorn[standard]'s fast stack, asked for by name: no quiet fallback
            http="httptools",
        )
        names = ", ".join(sorted(runner.workers)) or "no functions"
        waiting = sorted(set(placement.specs) - set(runner.workers))
        if waiting:
            names += "; placed elsewhere or not yet: " + ", ".join(waiting)
        if replicas is not None:
            counts = {
                f: sum(f in c.functions for c in replicas.children) for f in sorted(elsewhere)
            }
            names += "; in replica processes: " + ", ".join(f"{f} ({n})" for f, n in counts.items())

        def started() -> None:
            # what start-up made (modules, models, functions) lives as long as the process;
            # frozen, the collector's full passes no longer walk it while holding every
            # thread up (the tail of /v2 latency under load, tests/bench/inference_http.py)
            gc.collect()
            gc.freeze()
            # a request waits for the interpreter up to a switch interval whenever a
            # function's thread runs Python (drift-check on captured /v2 traffic): shorter
            # than Python's 5 ms, it keeps that wait out of /v2's p99
            sys.setswitchinterval(settings.gil_switch_ms / 1000)
            # other commands on this home find the gateway here (the embedded bus is ours)
            write_address(settings.home_dir, host, port)
            stoppers.append(lambda: remove_address(settings.home_dir))
            announce(
                f"driftline up: http://{host}:{port} ({names}; bus {settings.bus or 'embedded'}, "
                f"store {platform.store!r}, models {platform.registry.models()})"
            )

        server = _Server(config, started)

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


def _host(
    platform: Any,
    functions: Sequence[Handler] | None,
    elsewhere: Collection[str],
    stoppers: list[Callable[[], Any]],
) -> Any:
    """A runner for this process's functions under GPU placement (heartbeats included), with
    the first placement applied; its stop goes on ``stoppers``."""
    from driftline.functions import FUNCTIONS
    from driftline.runtime.cluster.placement import Placement
    from driftline.runtime.function import spec_of

    chosen = FUNCTIONS if functions is None else functions
    here = [f for f in chosen if spec_of(f).name not in elsewhere]
    placement = Placement.on_platform(platform, here)
    placement.start()
    stoppers.append(placement.stop)
    placement.wait_placed(timeout_s=30.0)
    return placement


def _start_replicas(replicas: ReplicaSet) -> Callable[[], Any]:
    """Run the child processes beside the server; returns the stopper (SIGTERM, drain, wait)."""
    thread = threading.Thread(target=replicas.run, name="replicas", daemon=True)
    thread.start()

    def stop() -> None:
        replicas.stop()
        thread.join()

    return stop


def _gateway_sessions(platform: Any, placement: Any) -> Any:
    """The score function's serving core when it runs here now; else the gateway's own, on
    the same execution providers (the gateway keeps it on the production versions)."""
    from driftline.functions.ml.serving import shared
    from driftline.runtime.cluster.capabilities import scoring_providers

    worker = placement.runner.workers.get("score")
    if worker is not None:
        return worker.ctx.state
    return shared(platform.store, platform.registry, providers=scoring_providers(placement.caps))


def _start_triggers(
    platform: Any, watch_interval_s: float, stoppers: list[Callable[[], Any]]
) -> None:
    """Start the upload watcher, the batch schedules and the S3 notification consumer; their
    stops go on ``stoppers``."""
    from driftline.runtime.http.shared import Publisher
    from driftline.runtime.triggers.notifications import NotificationConsumer
    from driftline.runtime.triggers.schedule import BatchScheduler
    from driftline.runtime.triggers.uploads import UploadWatcher

    settings = platform.settings
    watcher = UploadWatcher(platform.store, platform.bus)
    watcher.start(watch_interval_s)
    stoppers.append(watcher.stop)
    scheduler = BatchScheduler(platform.store, platform.bus)
    scheduler.start(watch_interval_s)
    stoppers.append(scheduler.stop)
    if settings.s3_notification_topic:
        publisher = Publisher(platform.bus, source="driftline/s3-notifications")
        stoppers.append(publisher.close)
        bucket = getattr(platform.store, "bucket", None)
        consumer = NotificationConsumer(
            platform.bus, settings.s3_notification_topic, publisher, bucket=bucket
        )
        consumer.start()
        stoppers.append(consumer.stop)


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]):
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()
