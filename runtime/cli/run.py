"""``driftline runner`` and ``driftline up``: run functions (and the gateway) until a signal."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    settings_of,
)
from driftline.runtime.errors import ConfigError
from driftline.runtime.settings import Settings

REPLICAS_NEED_KAFKA = (
    "driftline runner --replicas needs a Kafka bus (--bus kafka://host:port or "
    "confluent://host:port); on the embedded bus, driftline up --replicas NAME=1 runs a "
    "function in a process of its own"
)
# the function `up` runs in a process of its own (DRIFTLINE_MONITOR_PROCESS)
MONITOR = "drift-check"
ONE_PROCESS_EACH = (
    "--replicas {name}={n}: on the embedded bus a function runs in one process (its consumer "
    "group cannot span processes there): write {name}=1, or use a Kafka bus "
    "(--bus kafka://host:port) for more"
)


def add_parsers(sub: Any) -> None:
    """The ``run`` commands."""
    run = sub.add_parser(
        "runner",
        help="run functions until SIGTERM",
        description="Run functions, placed by their GPU needs among the live runners "
        "(see `driftline status`), until SIGTERM; each drains and commits before exiting.",
    )
    run.add_argument(
        "--functions",
        metavar="ITEM,...",
        help="what to run: all (the built-ins), a built-in name, ./file.py[:name] or "
        "package.module[:name] for your own @functions (default: DRIFTLINE_FUNCTIONS, "
        "else all)",
    )
    run.add_argument(
        "--replicas",
        metavar="NAME=N,...",
        help="run N processes of each named function (the rest in one more process), "
        "e.g. score=3,drift-check=2; needs a Kafka bus",
    )
    add_common(run)
    run.set_defaults(func=_cmd_runner)

    up = sub.add_parser(
        "up",
        help="the HTTP gateway, the functions (the built-ins by default) and the upload watcher, until SIGTERM",
        description="Serve the gateway (events, hooks, S3 notifications, /v2 inference, "
        "/metrics) and run the functions in one process (GPU placement decides, with "
        "other runners on the bus, which it serves); models already registered "
        "under --home (or on --bus) are served at once. Exit 0 after a clean stop.",
    )
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    up.add_argument(
        "--functions",
        metavar="ITEM,...",
        help="the functions to run in this process: all (the built-ins), a built-in name, "
        "./file.py[:name] or package.module[:name] (default: DRIFTLINE_FUNCTIONS, else "
        "all; 'none' for the gateway alone, beside separate runners); they follow GPU "
        "placement like driftline runner's",
    )
    up.add_argument(
        "--replicas",
        metavar="NAME=N,...",
        help="run the named functions in N runner processes each instead of in this one, "
        "e.g. score=3,drift-check=2: the processes join the function's consumer group and "
        "split its partitions; one that dies is started again; on the embedded bus N is 1 "
        "(drift-check=1: monitoring off the serving process)",
    )
    add_common(up)
    up.set_defaults(func=_cmd_up)


def _selected(args: argparse.Namespace, settings: Settings) -> list[Any]:
    """The functions ``--functions`` (else ``DRIFTLINE_FUNCTIONS``, else all built-ins)
    names; ``none`` (and, for ``up``, '') is none."""
    from driftline.runtime.loader import ALL, load_functions

    text = args.functions if args.functions is not None else settings.functions
    if text is None or (text == "" and args.command == "runner"):
        text = ALL
    return [] if text.strip() in ("", "none") else load_functions(text)


def _cmd_runner(args: argparse.Namespace) -> int:
    from driftline.runtime.cluster.placement import Placement
    from driftline.runtime.platform import Platform
    from driftline.runtime.schemas import register_functions

    settings = settings_of(args)
    selected = _selected(args, settings)
    wanted = [s.spec.name for s in selected]
    embedded = not settings.on_kafka
    if args.replicas:
        return _run_replicas(args, selected, embedded)
    platform = Platform.open(settings)
    try:
        register_functions(platform.bus, [s.spec for s in selected])
    except ConfigError:
        platform.close()
        raise
    placement = Placement.on_platform(platform, [s.handler for s in selected])
    placement.start()
    gpus = ", ".join(g.name for g in placement.caps.gpus) or "none"
    print(
        f"driftline runner {placement.id}: offers {', '.join(wanted)}; GPUs: {gpus}; "
        f"on {settings.bus or 'the embedded bus'}",
        flush=True,
    )
    _wait_for_signal()
    placement.stop()
    platform.close()
    return 0


def _run_replicas(args: argparse.Namespace, selected: list[Any], embedded: bool) -> int:
    from driftline.runtime.cluster.replicas import ReplicaSet, parse_replicas, process_plan

    if embedded:
        print(REPLICAS_NEED_KAFKA, file=sys.stderr)
        return 2
    wanted = [s.spec.name for s in selected]
    plan = process_plan(wanted, parse_replicas(args.replicas, wanted))
    refs = {s.spec.name: s.ref for s in selected}
    replicas = ReplicaSet(plan, _child_args(args), verbose=args.verbose, refs=refs)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: replicas.stop())
    print(
        f"driftline runner: {len(plan)} processes: " + "; ".join(",".join(p) for p in plan),
        flush=True,
    )
    return replicas.run()


def _child_args(args: argparse.Namespace) -> list[str]:
    """The bus/store/home options a child runner process needs to join this one's work."""
    return [
        f"--{k}={v}"
        for k, v in (("home", args.home), ("bus", args.bus), ("store", args.store))
        if v
    ]


def _wait_for_signal() -> None:
    """Until SIGTERM or SIGINT, or, for a child of ``up`` or ``runner --replicas``, until
    its parent is gone (SIGKILLed, say): a child must not outlive it, above all one holding
    the parent's embedded bus."""
    import os
    import threading

    from driftline.runtime.cluster.replicas import PARENT_PID_ENV

    parent = os.environ.get(PARENT_PID_ENV)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):  # a timed wait lets the signal handler run promptly
        if parent and str(os.getppid()) != parent:
            print("driftline runner: the parent process is gone; stopping", flush=True)
            break


def _cmd_up(args: argparse.Namespace) -> int:
    from driftline.runtime.cluster.replicas import ReplicaSet, parse_replicas
    from driftline.runtime.http.server import serve

    settings = settings_of(args)
    selected = _selected(args, settings)
    names = [s.spec.name for s in selected]
    counts = parse_replicas(args.replicas, names) if args.replicas else {}
    crowded = {name: n for name, n in counts.items() if n > 1}
    if crowded and not settings.on_kafka:
        name, n = next(iter(crowded.items()))
        print(ONE_PROCESS_EACH.format(name=name, n=n), file=sys.stderr)
        return 2
    if settings.monitor_process and MONITOR in names:
        counts.setdefault(MONITOR, 1)
    replicas = None
    if counts:
        plan = [[name] for name, n in counts.items() for _ in range(n)]
        refs = {s.spec.name: s.ref for s in selected}
        # monitoring yields the CPU to serving (settings.monitor_nice)
        nice = {MONITOR: settings.monitor_nice}
        replicas = ReplicaSet(plan, _child_args(args), verbose=args.verbose, refs=refs, nice=nice)
    return serve(
        settings,
        args.host,
        args.port,
        log_level="info" if args.verbose else "warning",
        functions=[s.handler for s in selected],
        replicas=replicas,
    )
