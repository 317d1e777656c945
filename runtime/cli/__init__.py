"""The ``driftline`` command. Exit codes: 0 ok, 1 failed, 2 bad usage or input.

One module per command group; each adds its subcommands with ``add_parsers``:

- ``replay``: demo, replay
- ``run``: runner, up
- ``status``: status
- ``models``: models (its create and register are ``lifecycle``'s)
- ``lifecycle``: upload, retrain
- ``score``: score
- ``events``: publish, events
- ``dlq``: dlq
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from driftline.runtime.cli import dlq, events, lifecycle, models, replay, run, score, status
from driftline.runtime.errors import DriftlineError

__all__ = ["build_parser", "main"]

GROUPS = (replay, run, status, models, lifecycle, events, score, dlq)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "models" and args.action != "list" and not args.name:
        parser.error(f"models {args.action} needs a model name")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except DriftlineError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2 if exc.__class__.__name__ in ("ConfigError", "ValidationError") else 1
