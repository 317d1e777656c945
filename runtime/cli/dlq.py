"""``driftline dlq``: dead-lettered events, listed or replayed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    print_rows,
    settings_of,
    token,
)


def add_parsers(sub: Any) -> None:
    """The ``dlq`` commands."""
    dlq = sub.add_parser(
        "dlq", help="dead-lettered events: list them with their errors, or replay them"
    )
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--wait", type=float, default=2.0, help="seconds to read for (default 2)")
    dlq.add_argument("--json", action="store_true")
    add_common(dlq)
    add_url(dlq)
    dlq.set_defaults(func=_cmd_dlq)


def _cmd_dlq(args: argparse.Namespace) -> int:
    from driftline.runtime.dlq import dead_letters, replay_dead_letters
    from driftline.runtime.platform import open_bus

    url = gateway_url(args)
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            if args.action == "replay":
                done = call(url, "POST", "/v1/dlq/replay", b"", token(args))
                print(f"replayed {done['replayed']} dead-lettered event(s)")
            else:
                print_rows(call(url, "GET", "/v1/dlq"), args.json)
        except GatewayError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 2 if exc.status in (400, 401, 422) else 1
        return 0
    bus = open_bus(settings_of(args))
    try:
        if args.action == "replay":
            print(f"replayed {replay_dead_letters(bus, args.wait)} dead-lettered event(s)")
        else:
            print_rows(dead_letters(bus, args.wait), args.json)
    finally:
        bus.close()
    return 0
