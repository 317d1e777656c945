"""``driftline score``: batch scoring of a stored file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    add_url,
    gateway_url,
    settings_of,
    token,
)


def add_parsers(sub: Any) -> None:
    """The ``score`` commands."""
    sc = sub.add_parser(
        "score", help="batch scoring: a CSV or Parquet file, in chunks, predictions as Parquet"
    )
    sc.add_argument("name", help="model name")
    sc.add_argument("data", help="the file to score (CSV or Parquet)")
    sc.add_argument("--out", required=True, help="where the predictions go (Parquet)")
    sc.add_argument("--version", type=int, default=None, help="version (default: production)")
    sc.add_argument("--chunk-rows", type=int, default=50_000, help="rows at a time (50,000)")
    sc.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait through a gateway (600)"
    )
    sc.add_argument("--quiet", action="store_true", help="no progress lines")
    add_common(sc)
    add_url(sc)
    sc.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    """Batch scoring: DATA (CSV or Parquet) in chunks, predictions to --out as Parquet."""
    from driftline.functions.ml.batch import score_file
    from driftline.functions.ml.serving import ModelServer
    from driftline.runtime.platform import Platform

    data, out = Path(args.data), Path(args.out)
    if not data.is_file():
        print(f"driftline: no file {data}", file=sys.stderr)
        return 2
    url = gateway_url(args)
    if url is not None:
        return _score_via(url, args, data, out)

    def progress(rows: int) -> None:
        if not args.quiet:
            print(f"  {rows:,} rows scored", file=sys.stderr)

    platform = Platform.open(settings_of(args))
    try:
        server = ModelServer(platform.store, platform.registry)
        outcome = score_file(
            server,
            args.name,
            data,
            out,
            version=args.version,
            chunk_rows=args.chunk_rows,
            progress=progress,
        )
    finally:
        platform.close()
    figures = {k: v for k, v in vars(outcome).items() if k != "errors"}
    print(json.dumps({"model": args.name, **figures, "output": str(out)}))
    for error in outcome.errors:
        print(f"refused: {error}", file=sys.stderr)
    return 0


def _score_via(url: str, args: argparse.Namespace, data: Path, out: Path) -> int:
    """``score`` while ``driftline up`` holds the home: the file goes into the store, the
    gateway publishes batch.requested, the batch function scores it; wait for its summary."""
    import time
    import uuid

    from driftline.runtime.http.gateway import GatewayError, call
    from driftline.runtime.platform import store_for

    store = store_for(settings_of(args))
    batch_id = uuid.uuid4().hex
    key = f"batches/{args.name}/{batch_id}/input{data.suffix.lower() or '.csv'}"
    store.upload(data, key)
    body = {"key": key, "batch_id": batch_id, "version": args.version}
    body["chunk_rows"] = args.chunk_rows
    try:
        accepted = call(
            url, "POST", f"/v1/models/{args.name}/batches", json.dumps(body).encode(), token(args)
        )
    except GatewayError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2 if exc.status in (404, 422) else 1
    deadline = time.monotonic() + args.timeout
    while not store.exists(accepted["summary_key"]):
        if time.monotonic() > deadline:
            print(f"driftline: batch {batch_id} not done after {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    summary = json.loads(store.get(accepted["summary_key"]))
    if summary["status"] != "succeeded":
        print(f"driftline: batch failed: {'; '.join(summary['errors'])}", file=sys.stderr)
        return 2
    store.download(summary["output_key"], out)
    print(json.dumps({**summary, "output": str(out)}))
    return 0
