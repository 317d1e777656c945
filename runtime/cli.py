"""The ``driftline`` command. Exit codes: 0 ok, 1 failed, 2 bad usage or input."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftline.runtime.errors import ConfigError, DriftlineError
from driftline.runtime.settings import Settings

SAMPLE_DIR = Path(__file__).parent / "replay" / "sample"
REPLICAS_NEED_KAFKA = (
    "--replicas needs a Kafka bus (--bus kafka://host:port or confluent://host:port): the "
    "embedded bus serves one process only"
)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v for k, v in (("home", args.home), ("bus", args.bus), ("store", args.store)) if v
    }
    return Settings(**overrides)


def _common(p: argparse.ArgumentParser) -> None:
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


def _url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("DRIFTLINE_URL"),
        help="a running gateway to go through (default: DRIFTLINE_URL, else the one "
        "`driftline up` runs on --home, if any, else the home's own bus and store)",
    )


def _gateway_url(args: argparse.Namespace) -> str | None:
    """The gateway this command goes through: --url, else a ``driftline up`` running on
    the same embedded home (whose bus it holds), else None (open the bus directly)."""
    from driftline.runtime.http.gateway import running_gateway

    if args.url:
        return str(args.url).rstrip("/")
    settings = _settings(args)
    if settings.bus or settings.store:
        return None
    return running_gateway(settings.home_dir)


def _token(args: argparse.Namespace) -> str | None:
    token = _settings(args).api_token
    return token.get_secret_value() if token is not None else None


def _replay_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("driftline-demo"),
        help="where summary.json and report.html go",
    )
    p.add_argument(
        "--step-hours",
        type=float,
        default=24.0,
        help="event time between two settle points of the loop (default 24)",
    )
    p.add_argument(
        "--label-delay-hours",
        type=float,
        default=24.0,
        help="how long after its hour a row's true value arrives (default 24)",
    )
    p.add_argument(
        "--batch-minutes",
        type=float,
        default=0.0,
        help="rows within this much event time go as one scoring request, at its first "
        "row's time: faster on dense data, but rows lose their own times (default 0: a "
        "request per row)",
    )
    p.add_argument(
        "--days",
        type=float,
        default=None,
        help="replay only the first DAYS of event time (a quicker look; default: all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _cmd_replay(args: argparse.Namespace) -> int:
    from driftline.runtime.replay.run import replay

    data = args.data if args.command == "replay" else SAMPLE_DIR / "bike_sharing_hour.csv"
    spec = args.spec if args.command == "replay" else SAMPLE_DIR / "bike_sharing.toml"
    if args.command == "demo" and not (args.home or args.bus or args.store):
        args.home = _fresh_demo_home(Path(args.out) / "home")
    summary = replay(
        Path(data),
        Path(spec),
        _settings(args),
        out=args.out,
        step_hours=args.step_hours,
        label_delay_hours=args.label_delay_hours,
        progress=not args.quiet,
        days=args.days,
        batch_minutes=args.batch_minutes,
    )
    return 0 if summary["rows"] > 0 else 1


def _fresh_demo_home(home: Path) -> Path:
    """The demo's own state folder, emptied: each ``driftline demo`` starts from nothing, as a
    replay must (pass ``--home`` to keep the state somewhere for later commands)."""
    import shutil

    if home.exists():
        ours = {"bus.db", "bus.db-wal", "bus.db-shm", "bus.db.lock", "store"}
        strangers = sorted(p.name for p in home.iterdir() if p.name not in ours)
        if strangers:
            raise ConfigError(
                f"{home} holds files a demo did not write ({strangers[:3]}); move them "
                f"or pass --home"
            )
        shutil.rmtree(home)
    print(f"driftline demo: state in {home} (fresh)", flush=True)
    return home


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

    settings = _settings(args)
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
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):  # a timed wait lets the signal handler run promptly
        pass


def _cmd_status(args: argparse.Namespace) -> int:
    import time

    from driftline.runtime.cluster.heartbeat import LiveRunners, function_report
    from driftline.runtime.platform import open_bus

    settings = _settings(args)
    expected = _expected_functions(args.expect, settings)
    url = _gateway_url(args)
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
        _print(rows, False)
    print()
    _print(
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


def _cmd_up(args: argparse.Namespace) -> int:
    from driftline.runtime.cluster.replicas import ReplicaSet, parse_replicas
    from driftline.runtime.http.server import serve

    settings = _settings(args)
    selected = _selected(args, settings)
    replicas = None
    if args.replicas:
        if not settings.on_kafka:
            print(REPLICAS_NEED_KAFKA, file=sys.stderr)
            return 2
        counts = parse_replicas(args.replicas, [s.spec.name for s in selected])
        plan = [[name] for name, n in counts.items() for _ in range(n)]
        refs = {s.spec.name: s.ref for s in selected}
        replicas = ReplicaSet(plan, _child_args(args), verbose=args.verbose, refs=refs)
    return serve(
        settings,
        args.host,
        args.port,
        log_level="info" if args.verbose else "warning",
        functions=[s.handler for s in selected],
        replicas=replicas,
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from driftline.runtime.platform import Platform

    if args.action == "promote" and args.version is None:
        print("driftline models promote NAME VERSION: say which version", file=sys.stderr)
        return 2
    url = _gateway_url(args)
    if url is not None:
        return _models_via(url, args)
    platform = Platform.open(_settings(args))
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
            _print(rows, args.json)
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


def _cmd_score(args: argparse.Namespace) -> int:
    """Batch scoring: DATA (CSV or Parquet) in chunks, predictions to --out as Parquet."""
    from driftline.functions.ml.batch import score_file
    from driftline.functions.ml.serving import ModelServer
    from driftline.runtime.platform import Platform

    data, out = Path(args.data), Path(args.out)
    if not data.is_file():
        print(f"driftline: no file {data}", file=sys.stderr)
        return 2
    url = _gateway_url(args)
    if url is not None:
        return _score_via(url, args, data, out)

    def progress(rows: int) -> None:
        if not args.quiet:
            print(f"  {rows:,} rows scored", file=sys.stderr)

    platform = Platform.open(_settings(args))
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

    store = store_for(_settings(args))
    batch_id = uuid.uuid4().hex
    key = f"batches/{args.name}/{batch_id}/input{data.suffix.lower() or '.csv'}"
    store.upload(data, key)
    body = {"key": key, "batch_id": batch_id, "version": args.version}
    body["chunk_rows"] = args.chunk_rows
    try:
        accepted = call(
            url, "POST", f"/v1/models/{args.name}/batches", json.dumps(body).encode(), _token(args)
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
            _print(rows, args.json)
            return 0
        if args.action == "show":
            print(json.dumps(call(url, "GET", f"/v1/models/{args.name}"), indent=2))
            return 0
        action = f"versions/{args.version}/promote" if args.action == "promote" else "rollback"
        done = call(url, "POST", f"/v1/models/{args.name}/{action}", b"", _token(args))
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
    _publish(platform.bus, entry.promote_event(version))
    print(f"{entry.name}: production {entry.production} -> {version} (promote)")
    return 0


def _rollback(platform: Any, entry: Any) -> int:
    event = entry.rollback_event()
    if event is None:
        print(f"{entry.name}: no previous version to roll back to", file=sys.stderr)
        return 1
    _publish(platform.bus, event)
    print(f"{entry.name}: production {entry.production} -> {event.version} (rollback)")
    return 0


def _publish(bus: Any, event: Any, types: Any = ()) -> str:
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


def _cmd_publish(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from driftline.runtime.platform import open_bus

    raw = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
    url = _gateway_url(args)  # it knows the user types of the functions it hosts
    types = _event_types(_settings(args)) if url is None else {}
    model = types.get(args.type)
    if url is None and model is None:
        print(f"unknown event type {args.type!r}; known: {sorted(types)}", file=sys.stderr)
        return 2
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            print(call(url, "POST", f"/v1/events/{args.type}", raw.encode(), _token(args))["id"])
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
    bus = open_bus(_settings(args))
    try:
        bus.create_topics([event.TYPE])
        print(_publish(bus, event, types.values()))
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


def _cmd_dlq(args: argparse.Namespace) -> int:
    from driftline.runtime.dlq import dead_letters, replay_dead_letters
    from driftline.runtime.platform import open_bus

    url = _gateway_url(args)
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            if args.action == "replay":
                done = call(url, "POST", "/v1/dlq/replay", b"", _token(args))
                print(f"replayed {done['replayed']} dead-lettered event(s)")
            else:
                _print(call(url, "GET", "/v1/dlq"), args.json)
        except GatewayError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 2 if exc.status in (400, 401, 422) else 1
        return 0
    bus = open_bus(_settings(args))
    try:
        if args.action == "replay":
            print(f"replayed {replay_dead_letters(bus, args.wait)} dead-lettered event(s)")
        else:
            _print(dead_letters(bus, args.wait), args.json)
    finally:
        bus.close()
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    """``events schemas``: the user event types' schemas registered on the bus."""
    from driftline.runtime.platform import open_bus
    from driftline.runtime.schemas import SchemaRegistry, listing

    url = _gateway_url(args)
    if url is not None:
        from driftline.runtime.http.gateway import GatewayError, call

        try:
            rows = call(url, "GET", "/v1/schemas")
        except GatewayError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
    else:
        bus = open_bus(_settings(args))
        try:
            rows = listing(SchemaRegistry(bus).versions(probe=False))
        finally:
            bus.close()
    if not args.json:
        rows = [{**r, "fields": ", ".join(r["fields"])} for r in rows]
    _print(rows, args.json)
    return 0


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json or not rows:
        print(json.dumps(rows, indent=2, default=str))
        return
    cols = list(rows[0])
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the closed loop on the bundled bike sharing data (embedded default)",
        description="Replay the bundled bike sharing data through the loop. Without "
        "--home, --bus or --store, state goes to OUT/home, emptied first, so every "
        "demo starts from nothing.",
    )
    _replay_args(demo)
    demo.set_defaults(func=_cmd_replay)

    rp = sub.add_parser("replay", help="the closed loop on any data set and spec")
    rp.add_argument("data", type=Path, help="CSV or Parquet file")
    rp.add_argument("--spec", type=Path, required=True, help="model spec (TOML)")
    _replay_args(rp)
    rp.set_defaults(func=_cmd_replay)

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
    _common(run)
    run.set_defaults(func=_cmd_runner)

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
    _common(st)
    _url(st)
    st.set_defaults(func=_cmd_status)

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
        "split its partitions; one that dies is started again; needs a Kafka bus",
    )
    _common(up)
    up.set_defaults(func=_cmd_up)

    models = sub.add_parser("models", help="the registry: list, show, rollback, promote")
    models.add_argument("action", choices=["list", "show", "rollback", "promote"])
    models.add_argument("name", nargs="?", help="model name (show, rollback, promote)")
    models.add_argument("version", nargs="?", type=int, help="version (promote)")
    models.add_argument("--json", action="store_true")
    _common(models)
    _url(models)
    models.set_defaults(func=_cmd_models)

    pub = sub.add_parser("publish", help="publish one event")
    pub.add_argument(
        "type",
        help="event type, e.g. score.requested; a user type through a running up that "
        "hosts its functions, or one of DRIFTLINE_FUNCTIONS' functions",
    )
    pub.add_argument("--data", required=True, help="the event as JSON, or @file")
    _common(pub)
    _url(pub)
    pub.set_defaults(func=_cmd_publish)

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
    _common(sc)
    _url(sc)
    sc.set_defaults(func=_cmd_score)

    ev = sub.add_parser(
        "events",
        help="users' event types: the schemas registered on the bus",
        description="List every version of every user event type registered on the bus "
        "(by the runners that host functions reading or writing them).",
    )
    ev.add_argument("action", choices=["schemas"])
    ev.add_argument("--json", action="store_true")
    _common(ev)
    _url(ev)
    ev.set_defaults(func=_cmd_events)

    dlq = sub.add_parser(
        "dlq", help="dead-lettered events: list them with their errors, or replay them"
    )
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--wait", type=float, default=2.0, help="seconds to read for (default 2)")
    dlq.add_argument("--json", action="store_true")
    _common(dlq)
    _url(dlq)
    dlq.set_defaults(func=_cmd_dlq)
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


if __name__ == "__main__":
    sys.exit(main())
