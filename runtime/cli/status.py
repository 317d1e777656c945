"""``driftline status``: the live runners and whether every expected function is served."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    print_rows,
    settings_of,
)
from driftline.runtime.settings import Settings


def add_parsers(sub: Any) -> None:
    """The ``status`` commands."""
    st = sub.add_parser(
        "status",
        help="live runners, their capabilities and functions; exit 1 if a "
        "function cannot be served",
        description="List the runners whose heartbeats are live on the control topic, "
        "with their CPUs, GPUs, onnxruntime providers and the functions each serves (with how "
        "many partitions it holds of each: how replicas split the work), and "
        "the functions no live runner can serve. Exit 0 when every expected function "
        "can be served, 1 otherwise.",
    )
    st.add_argument(
        "--expect",
        help="the functions that should be served, named as --functions names them "
        "(default: DRIFTLINE_FUNCTIONS, else the built-ins; '' for none)",
    )
    st.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="longest wait for the heartbeats, in seconds (default 10)",
    )
    st.add_argument("--json", action="store_true")
    add_common(st)
    add_url(st)
    st.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    import time

    from driftline.runtime.cluster.heartbeat import LiveRunners, function_report
    from driftline.runtime.platform import open_bus

    settings = settings_of(args)
    expected = _expected_functions(args.expect, settings)
    url = gateway_url(args)
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            answer = call(url, "GET", "/v1/runners")
        except GatewayError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
        report = [f for f in answer["functions"] if f["function"] in expected]
        print(json.dumps({"runners": answer["runners"], "functions": report}, indent=2))
        return 0 if all(row["serveable"] for row in report) else 1
    bus = open_bus(settings)
    view = LiveRunners(bus, timeout_s=settings.heartbeat_timeout_s)
    try:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:  # until the history of beats is read
            if view.poll(0.5) == 0 and view.listening_for() > 0:
                break
        runners = view.runners()
        report = function_report(runners, expected)
    finally:
        view.close()
        bus.close()
    if args.json:
        print(
            json.dumps({"runners": [r.as_dict() for r in runners], "functions": report}, indent=2)
        )
    else:
        _print_status(runners, report)
    return 0 if all(row["serveable"] for row in report) else 1


def _expected_functions(text: str | None, settings: Settings) -> dict[str, str]:
    """What should be served, by name, with its GPU need: ``--expect`` (a selection, as
    ``--functions`` takes; '' for none), else ``DRIFTLINE_FUNCTIONS``, else the built-ins."""
    from driftline.runtime.loader import ALL, load_functions

    if text is None:
        text = settings.functions or ALL
    return {s.spec.name: s.spec.gpu for s in load_functions(text)}


def _print_status(runners: list[Any], report: list[dict[str, Any]]) -> None:
    rows = []
    for r in runners:
        caps = r.capabilities
        gpus = ", ".join(
            f"{g.name} {g.memory_mb // 1024}GiB" if g.memory_mb else g.name for g in caps.gpus
        )
        rows.append(
            {
                "runner": r.runner,
                "gpus": gpus or "-",
                "cores": caps.cpu_cores,
                "memory": f"{caps.memory_mb // 1024}GiB",
                "gpu trainer": caps.gpu_trainer or "-",
                "onnx": ",".join(p.removesuffix("ExecutionProvider") for p in caps.onnx_providers),
                "serves": ",".join(f"{n}({len(r.partitions.get(n, ()))})" for n in r.serves) or "-",
            }
        )
    print(f"{len(rows)} live runner(s)")
    if rows:
        print_rows(rows, False)
    print()
    print_rows(
        [
            {
                "function": f["function"],
                "gpu": f["gpu"],
                "replicas": len(f["served_by"]),
                "problem": f["problem"] or "-",
            }
            for f in report
        ],
        False,
    )
