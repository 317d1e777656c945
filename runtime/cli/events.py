"""``driftline publish`` and ``driftline events``: events and their types."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    print_rows,
    publish,
    settings_of,
    token,
)
from driftline.runtime.settings import Settings


def add_parsers(sub: Any) -> None:
    """The ``events`` commands."""
    pub = sub.add_parser("publish", help="publish one event")
    pub.add_argument(
        "type",
        help="event type, e.g. score.requested; a user type through a running up that "
        "hosts its functions, or one of DRIFTLINE_FUNCTIONS' functions",
    )
    pub.add_argument("--data", required=True, help="the event as JSON, or @file")
    add_common(pub)
    add_url(pub)
    pub.set_defaults(func=_cmd_publish)

    ev = sub.add_parser(
        "events",
        help="events: tail them as they pass (decoded), or list users' event schemas",
        description="tail [TYPE...]: print events as they pass, decoded, one JSON object a "
        "line, until Ctrl-C (or --max / --seconds). schemas: list every version of every user "
        "event type registered on the bus (by the runners that host functions reading or "
        "writing them).",
    )
    ev.add_argument("action", choices=["schemas", "tail"])
    ev.add_argument("types", nargs="*", metavar="TYPE", help="tail: the types (default: all)")
    ev.add_argument("--max", type=int, default=None, help="tail: stop after N events")
    ev.add_argument("--seconds", type=float, default=None, help="tail: stop after S seconds")
    ev.add_argument(
        "--from-beginning", action="store_true", help="tail: from each topic's first event"
    )
    ev.add_argument("--json", action="store_true")
    add_common(ev)
    add_url(ev)
    ev.set_defaults(func=_cmd_events)


def _cmd_publish(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from driftline.runtime.platform import open_bus

    raw = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
    url = gateway_url(args)  # it knows the user types of the functions it hosts
    types = _event_types(settings_of(args)) if url is None else {}
    model = types.get(args.type)
    if url is None and model is None:
        print(f"unknown event type {args.type!r}; known: {sorted(types)}", file=sys.stderr)
        return 2
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            print(call(url, "POST", f"/v1/events/{args.type}", raw.encode(), token(args))["id"])
        except GatewayError as exc:
            print(f"{args.type}: {exc}", file=sys.stderr)
            return 2 if exc.status in (400, 401, 413, 422) else 1
        return 0
    assert model is not None
    try:
        event = model.model_validate_json(raw)
    except ValidationError as exc:
        print(f"{args.type}: {exc}", file=sys.stderr)
        return 2
    bus = open_bus(settings_of(args))
    try:
        bus.create_topics([event.TYPE])
        print(publish(bus, event, types.values()))
    finally:
        bus.close()
    return 0


def _event_types(settings: Settings) -> dict[str, Any]:
    """The built-in event types, then the user types of ``DRIFTLINE_FUNCTIONS``' functions."""
    from driftline.events import BY_TYPE
    from driftline.runtime.loader import load_functions

    types: dict[str, Any] = dict(BY_TYPE)
    text = settings.functions or ""
    for selected in load_functions("" if text.strip() == "none" else text):
        for model in selected.spec.event_types:
            types.setdefault(model.TYPE, model)
    return types


def _cmd_tail(args: argparse.Namespace) -> int:
    """``events tail``: JSON lines until Ctrl-C (exit 0), --max or --seconds."""
    from driftline.runtime.platform import open_bus
    from driftline.runtime.tail import as_line, tail

    if args.max is not None and args.max < 1:
        print("driftline events tail: --max must be at least 1", file=sys.stderr)
        return 2
    url = gateway_url(args)
    try:
        if url is not None:
            return _tail_via(url, args)
        bus = open_bus(settings_of(args))
        try:
            for event in tail(
                bus,
                args.types,
                from_beginning=args.from_beginning,
                max_events=args.max,
                seconds=args.seconds,
            ):
                if event is not None:
                    print(as_line(event), flush=True)
        finally:
            bus.close()
    except KeyboardInterrupt:
        pass
    return 0


def _tail_via(url: str, args: argparse.Namespace) -> int:
    import httpx

    params: dict[str, Any] = {"type": args.types, "from_beginning": args.from_beginning}
    params.update({k: v for k, v in (("max", args.max), ("seconds", args.seconds)) if v})
    with httpx.stream("GET", f"{url}/v1/events/tail", params=params, timeout=None) as answer:
        if answer.is_error:
            print(f"{url}: {answer.status_code}: {answer.read().decode()}", file=sys.stderr)
            return 2 if answer.status_code in (400, 422) else 1
        for line in answer.iter_lines():
            if line.strip():
                print(line, flush=True)
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    """``events schemas``: the user event types' schemas registered on the bus; ``events
    tail``: events as they pass."""
    if args.action == "tail":
        return _cmd_tail(args)
    from driftline.runtime.platform import open_bus
    from driftline.runtime.schemas import SchemaRegistry, listing

    url = gateway_url(args)
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            rows = call(url, "GET", "/v1/schemas")
        except GatewayError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
    else:
        bus = open_bus(settings_of(args))
        try:
            rows = listing(SchemaRegistry(bus).versions(probe=False))
        finally:
            bus.close()
    if not args.json:
        rows = [{**r, "fields": ", ".join(r["fields"])} for r in rows]
    print_rows(rows, args.json)
    return 0
