"""``driftline demo`` and ``driftline replay``: the closed loop on a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from driftline.runtime.cli.shared import (
    add_common,
    settings_of,
)
from driftline.runtime.errors import ConfigError

SAMPLE_DIR = Path(__file__).parent.parent / "replay" / "sample"


def add_parsers(sub: Any) -> None:
    """The ``replay`` commands."""
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


def _replay_args(p: argparse.ArgumentParser) -> None:
    add_common(p)
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
        default=1440.0,
        help="rows within this much event time (and in one step) go as one scoring request "
        "of at most 1,000 rows, each row with its own time, so results match a request per "
        "row; about 2.5-3 times as fast on dense data (default 1440: a day, the default "
        "step; 0: a request per row)",
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
        settings_of(args),
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
