"""What every command shares: the common options, the settings they make, the way to a
running gateway, printing rows and publishing one event."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from driftline.runtime.settings import Settings


def settings_of(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v for k, v in (("home", args.home), ("bus", args.bus), ("store", args.store)) if v
    }
    return Settings(**overrides)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        type=Path,
        help="state folder for the embedded bus and store (default ~/.driftline)",
    )
    p.add_argument(
        "--bus",
        help="bus URL: kafka://host:port, confluent://host:port (the [fast] extra) or "
        "sqlite:///path (default: embedded, in --home)",
    )
    p.add_argument(
        "--store", help="store URL: a folder, file:///path or s3://KEY:SECRET@host:port/bucket"
    )


def add_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("DRIFTLINE_URL"),
        help="a running gateway to go through (default: DRIFTLINE_URL, else the one "
        "`driftline up` runs on --home, if any, else the home's own bus and store)",
    )


def gateway_url(args: argparse.Namespace) -> str | None:
    """The gateway this command goes through: --url, else a ``driftline up`` running on
    the same embedded home (whose bus it holds), else None (open the bus directly)."""
    from driftline.runtime.http.gateway import running_gateway

    if args.url:
        return str(args.url).rstrip("/")
    settings = settings_of(args)
    if settings.bus or settings.store:
        return None
    return running_gateway(settings.home_dir)


def token(args: argparse.Namespace) -> str | None:
    token = settings_of(args).api_token
    return token.get_secret_value() if token is not None else None


def print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json or not rows:
        print(json.dumps(rows, indent=2, default=str))
        return
    cols = list(rows[0])
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def publish(bus: Any, event: Any, types: Any = ()) -> str:
    import uuid

    from driftline.events import Codec
    from driftline.events.user import is_builtin

    event_id = str(uuid.uuid4())
    codec = Codec([t for t in types if not is_builtin(t)])
    value, headers = codec.encode(event, id=event_id, source="driftline/cli")
    producer = bus.producer()
    producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
    producer.flush()
    producer.close()
    return event_id
