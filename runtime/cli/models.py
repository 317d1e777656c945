"""``driftline models``: the registry (list, show, promote, rollback) and the lifecycle's
``create`` and ``register`` (:mod:`driftline.runtime.cli.lifecycle`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from driftline.runtime.cli import lifecycle
from driftline.runtime.cli.lifecycle import add_models_options
from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    print_rows,
    publish,
    settings_of,
    token,
)


def add_parsers(sub: Any) -> None:
    """The ``models`` commands."""
    models = sub.add_parser(
        "models",
        help="the registry: list, show, rollback, promote; create SPEC.toml; register NAME "
        "model.onnx",
    )
    models.add_argument(
        "action", choices=["list", "show", "rollback", "promote", "create", "register"]
    )
    models.add_argument(
        "name", nargs="?", help="model name (show, rollback, promote, register); create: SPEC.toml"
    )
    models.add_argument(
        "target", nargs="?", metavar="VERSION|FILE", help="promote: version; register: model.onnx"
    )
    models.add_argument("--json", action="store_true")
    add_models_options(models)
    add_common(models)
    add_url(models)
    models.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from driftline.runtime.platform import Platform

    if args.action == "create":
        return lifecycle.create(args)
    if args.action == "register":
        if args.target is None:
            print("driftline models register NAME model.onnx: say which file", file=sys.stderr)
            return 2
        return lifecycle.register(args)
    args.version = None
    if args.action == "promote":
        if args.target is None or not args.target.isdigit():
            print("driftline models promote NAME VERSION: say which version", file=sys.stderr)
            return 2
        args.version = int(args.target)
    url = gateway_url(args)
    if url is not None:
        return _models_via(url, args)
    platform = Platform.open(settings_of(args))
    try:
        registry = platform.registry
        if args.action == "list":
            rows = []
            for name in registry.models():
                entry = registry.entry(name)
                assert entry is not None
                rows.append(
                    {
                        "model": name,
                        "versions": len(entry.versions),
                        "production": entry.production,
                        "previous": entry.previous,
                        "rejections": len(entry.rejections),
                    }
                )
            print_rows(rows, args.json)
            return 0
        entry = registry.entry(args.name)
        if entry is None:
            print(f"no model named {args.name!r}; known: {registry.models()}", file=sys.stderr)
            return 2
        if args.action == "show":
            print(json.dumps(entry.as_dict(), indent=2, default=str))
            return 0
        if args.action == "promote":
            return _promote(platform, entry, args.version)
        return _rollback(platform, entry)
    finally:
        platform.close()


def _models_via(url: str, args: argparse.Namespace) -> int:
    """``models`` through a running gateway's HTTP API."""
    from driftline.runtime.http.gateway import GatewayError, call

    try:
        if args.action == "list":
            rows = [
                {
                    "model": m["model"],
                    "versions": len(m["versions"]),
                    "production": m["production"],
                    "previous": m["previous"],
                    "rejections": m["rejections"],
                }
                for m in call(url, "GET", "/v1/models")
            ]
            print_rows(rows, args.json)
            return 0
        if args.action == "show":
            print(json.dumps(call(url, "GET", f"/v1/models/{args.name}"), indent=2))
            return 0
        action = f"versions/{args.version}/promote" if args.action == "promote" else "rollback"
        done = call(url, "POST", f"/v1/models/{args.name}/{action}", b"", token(args))
    except GatewayError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 2 if exc.status in (400, 401, 404, 422) else 1
    print(
        f"{args.name}: production {done['previous_version']} -> {done['version']} ({args.action})"
    )
    return 0


def _promote(platform: Any, entry: Any, version: int | None) -> int:
    if version is None or version not in entry.versions:
        print(
            f"{entry.name}: no version {version}; registered: {sorted(entry.versions)}",
            file=sys.stderr,
        )
        return 2
    if version == entry.production:
        print(f"{entry.name}: v{version} is production already", file=sys.stderr)
        return 1
    publish(platform.bus, entry.promote_event(version))
    print(f"{entry.name}: production {entry.production} -> {version} (promote)")
    return 0


def _rollback(platform: Any, entry: Any) -> int:
    event = entry.rollback_event()
    if event is None:
        print(f"{entry.name}: no previous version to roll back to", file=sys.stderr)
        return 1
    publish(platform.bus, event)
    print(f"{entry.name}: production {entry.production} -> {event.version} (rollback)")
    return 0
