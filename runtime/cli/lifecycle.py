"""The model lifecycle: ``models create``, ``models register``, ``upload``, ``retrain``.

Through a running gateway (``driftline up`` on the same home, ``--url`` or ``DRIFTLINE_URL``)
each goes over HTTP with :class:`~driftline.runtime.client.Client`; with nothing running it
opens the home's store and bus itself, and the functions act when they next run. The checks
are :mod:`driftline.runtime.lifecycle`'s on both paths; bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    publish,
    settings_of,
    token,
)
from driftline.runtime.errors import (
    ConfigError,
    InvalidKeyError,
    UnknownModelError,
    ValidationError,
)

BAD_INPUT = (ConfigError, ValidationError, UnknownModelError, InvalidKeyError)
BAD_STATUS = (400, 401, 404, 409, 413, 422)


def add_parsers(sub: Any) -> None:
    """The ``upload`` and ``retrain`` commands (``models create|register`` are ``models``')."""
    up = sub.add_parser(
        "upload",
        help="a CSV or Parquet file into the store's uploads/: ingest, and for a new model "
        "the first training, follow",
    )
    up.add_argument("file", type=Path, help="the data file (CSV or Parquet)")
    up.add_argument("--model", required=True, help="the model it is for (created first)")
    up.add_argument(
        "--kind",
        choices=["training", "feedback"],
        default="training",
        help="training (default): labeled rows to learn from; feedback: labeled "
        "production rows, the gate's most recent labeled data",
    )
    add_common(up)
    add_url(up)
    up.set_defaults(func=_cmd_upload)

    rt = sub.add_parser("retrain", help="ask for a retrain now (trigger=manual)")
    rt.add_argument("name", help="model name")
    rt.add_argument("--reason", default="", help="why, kept with the request")
    add_common(rt)
    add_url(rt)
    rt.set_defaults(func=_cmd_retrain)


def add_models_options(models: argparse.ArgumentParser) -> None:
    """``models register``'s options."""
    models.add_argument(
        "--metrics", help='register: the model\'s own figures as JSON, e.g. {"mae": 3.1}'
    )
    models.add_argument(
        "--promote", action="store_true", help="register: deploy it if it passes the gate"
    )
    models.add_argument(
        "--force", action="store_true", help="register: skip the gate (the checks still run)"
    )
    models.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="register through a gateway: seconds to wait for the gate's decision (120; 0: "
        "do not wait)",
    )


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (a spec, a file, a model name) and a 4xx from the gateway exit 2."""
    from driftline.runtime.client import ClientError

    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except BAD_INPUT as exc:
            print(f"driftline: {exc}", file=sys.stderr)
            return 2
        except ClientError as exc:
            print(f"driftline: {exc}", file=sys.stderr)
            return 2 if exc.status in BAD_STATUS else 1

    return command


def _client(url: str, args: argparse.Namespace) -> Any:
    from driftline.runtime.client import Client

    return Client(url, token(args) or "")


def _readable(path: Path) -> None:
    if not path.is_file():
        raise ValidationError(f"no file {path}")


@guarded
def create(args: argparse.Namespace) -> int:
    """``models create SPEC.toml``."""
    from driftline.runtime.lifecycle import save_spec
    from driftline.runtime.platform import store_for

    path = Path(args.name)
    _readable(path)
    url = gateway_url(args)
    if url is not None:
        with _client(url, args) as client:
            saved = client.create_model(path)
    else:
        found = save_spec(store_for(settings_of(args)), path.read_text())
        saved = {"model": found.model, "spec_version": found.version, "changed": found.changed}
        saved["key"] = found.key
    print(json.dumps(saved))
    return 0


@guarded
def _cmd_upload(args: argparse.Namespace) -> int:
    from driftline.runtime.lifecycle import upload_key
    from driftline.runtime.platform import store_for

    _readable(args.file)
    url = gateway_url(args)
    if url is not None:
        with _client(url, args) as client:
            done = client.upload(args.file, args.model, args.kind)
    else:
        store = store_for(settings_of(args))
        key = upload_key(store, args.model, args.file.name, args.kind)
        store.upload(args.file, key)
        done = {"model": args.model, "key": key, "kind": args.kind}
        done["size"] = args.file.stat().st_size
    print(json.dumps(done))
    return 0


@guarded
def _cmd_retrain(args: argparse.Namespace) -> int:
    from driftline.runtime.lifecycle import retrain_request
    from driftline.runtime.platform import open_bus, store_for

    url = gateway_url(args)
    if url is not None:
        with _client(url, args) as client:
            done = client.retrain(args.name, args.reason)
    else:
        settings = settings_of(args)
        event = retrain_request(store_for(settings), args.name, args.reason, "cli")
        bus = open_bus(settings)
        try:
            bus.create_topics([event.TYPE])
            done = {"id": publish(bus, event), "model": args.name}
        finally:
            bus.close()
    print(json.dumps(done))
    return 0


@guarded
def register(args: argparse.Namespace) -> int:
    """``models register NAME model.onnx``: exit 0 registered, 1 rejected by the gate."""
    path = Path(args.target)
    from driftline.runtime.lifecycle import metrics_of

    _readable(path)
    metrics = metrics_of(args.metrics, "--metrics")
    url = gateway_url(args)
    if url is None:
        return _register_here(args, path, metrics)
    with _client(url, args) as client:
        accepted = client.register(
            args.name, path, metrics=metrics, promote=args.promote, force=args.force
        )
        print(json.dumps(accepted))
        if args.wait <= 0:
            return 0
        try:
            outcome = client.wait_for_run(args.name, accepted["run_id"], args.wait)
        except TimeoutError as exc:
            print(f"driftline: {exc}", file=sys.stderr)
            return 1
    if "version" in outcome:
        print(f"{args.name}: registered as v{outcome['version']} ({outcome.get('gate', '')})")
        return 0
    print(f"{args.name}: rejected: {outcome['reason']}", file=sys.stderr)
    return 1


def _register_here(args: argparse.Namespace, path: Path, metrics: dict[str, float]) -> int:
    from driftline.runtime.lifecycle import external_candidate
    from driftline.runtime.platform import Platform

    platform = Platform.open(settings_of(args))
    try:
        event = external_candidate(
            platform.store,
            platform.registry,
            args.name,
            path.read_bytes(),
            metrics,
            promote=args.promote,
            force=args.force,
        )
        platform.bus.create_topics([event.TYPE])
        event_id = publish(platform.bus, event)
    finally:
        platform.close()
    print(json.dumps({"id": event_id, "model": args.name, "run_id": event.run_id}))
    print(
        f"{args.name}: candidate {event.run_id} published; the register function gates it "
        "when the functions run (driftline up)",
        file=sys.stderr,
    )
    return 0
