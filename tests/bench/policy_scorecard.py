"""The drift policy's scorecard: the real loop (``driftline replay``) over streams with known changes.

Every stream of :mod:`tests.bench.streams` (140 days, a row every 10 minutes, change at day
70, 20,160 rows) goes through :func:`driftline.runtime.replay.run.replay` with the default
policy (the spec has no ``[drift]`` section), each run in its own process and ``--home``.
Everything is computed from the run's ``summary.json`` (detections, deploys) and
``predictions.parquet`` (served and never-retrained v1 predictions per row)::

    .venv/bin/python -m tests.bench.policy_scorecard                      # 3 seeds, every stream
    .venv/bin/python -m tests.bench.policy_scorecard --seeds 1 --streams sea-abrupt,sea-stationary
    .venv/bin/python -m tests.bench.policy_scorecard --bike --jobs 2 --out /tmp/scorecard
    .venv/bin/python -m tests.bench.policy_scorecard --bike --from /tmp/scorecard   # rescore, no replay
    .venv/bin/python -m tests.bench.policy_scorecard --batch-minutes 0   # a scoring request per row

Per run: false alarms (detections on a stationary stream, or in windows ending at or before
the onset; a ``drift.detected`` with cause ``refresh`` retrains on a change already found
and counts as no detection), detection delay (first detection's window end after the onset, minus the onset,
in 7-day windows; a detection in the first window after the onset is 1.0), the served metric
before the change (v1's training end to the onset) and over the last four weeks, v1 never
retrained over the last four weeks and after the onset, served vs v1 over the whole replay,
retrains (deploys of new versions after v1), redeploys and rollbacks, wall seconds.
Accuracy for classification, MAE for regression.

Targets, per stream over its seeds (a stationary stream's "onset" is day 70 too, for the
before/after comparison):

- no false alarm on any seed (stationary: no detection at all);
- abrupt changes (kinds ``abrupt`` and ``recurring``): median delay at most 1 window, none
  over 2 (never detected counts as over);
- recovery: served over the last four weeks within 5 accuracy points, or 15% MAE, of the
  served level before the change, on every seed;
- a stream with a change: served after the onset beats v1 never retrained on every seed;
  for ``benign`` (inputs move inside the trained support) "not worse than v1 by over 2%".

``--bike`` adds the bundled bike data (served MAE at most 42 with at most 20 retrains).
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.bench.streams import STREAMS, Shape, Stream, make

ROOT = Path(__file__).resolve().parents[2]
BIKE_DATA = ROOT / "runtime" / "replay" / "sample" / "bike_sharing_hour.csv"
BIKE_SPEC = ROOT / "runtime" / "replay" / "sample" / "bike_sharing.toml"

WINDOW = pd.Timedelta(days=7)
"""The drift window the delays are counted in (the default policy's)."""
LAST = pd.Timedelta(days=28)
"""Recovery is judged over the last four weeks."""
ACCURACY_POINTS, MAE_RELATIVE, BENIGN_SLACK = 5.0, 0.15, 0.02
BIKE_MAE, BIKE_RETRAINS = 42.0, 20
ABRUPT = ("abrupt", "recurring")


# --- one run -----------------------------------------------------------------------------


def _replay(
    data: Path, spec: Path, folder: Path, batch_minutes: float | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    from driftline.runtime.replay.run import replay
    from driftline.runtime.settings import Settings

    batching = {} if batch_minutes is None else {"batch_minutes": batch_minutes}
    summary = replay(
        data, spec, Settings(home=folder / "home"), out=folder / "out", progress=False, **batching
    )
    return summary, pd.read_parquet(folder / "out" / "predictions.parquet")


def _keep(folder: Path, keep: Path | None, name: str) -> None:
    if keep is not None:
        shutil.copytree(folder / "out", keep / name, dirs_exist_ok=True)


def run_stream(
    name: str, seed: int, keep: Path | None = None, batch_minutes: float | None = None
) -> dict[str, Any]:
    """Generate, replay and score one stream; runs in a worker process."""
    stream = make(name, seed)
    with tempfile.TemporaryDirectory(prefix=f"scorecard-{name}-{seed}-") as tmp:
        folder = Path(tmp)
        data, spec = stream.write(folder)
        summary, table = _replay(data, spec, folder, batch_minutes)
        _keep(folder, keep, f"{name}-s{seed}")
    return stream_row(stream, seed, summary, table)


def stream_row(
    stream: Stream, seed: int, summary: dict[str, Any], table: pd.DataFrame
) -> dict[str, Any]:
    """One stream run's row of the scorecard, from its summary.json and predictions.parquet."""
    onset = stream.onset if stream.onset is not None else stream.shape.at(stream.shape.onset_day)
    row = score_run(table, summary, task=stream.task, onset=onset, changed=stream.onset is not None)
    return {
        "stream": stream.name,
        "seed": seed,
        "kind": stream.kind,
        "wall_s": summary["wall_s"],
        **row,
    }


def run_bike(keep: Path | None = None, batch_minutes: float | None = None) -> dict[str, Any]:
    """The bundled bike data through the same replay; runs in a worker process."""
    with tempfile.TemporaryDirectory(prefix="scorecard-bike-") as tmp:
        summary, table = _replay(BIKE_DATA, BIKE_SPEC, Path(tmp), batch_minutes)
        _keep(Path(tmp), keep, "bike")
    return bike_row(summary, table)


def bike_row(summary: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    counts = _deploy_counts(summary["deploys"])
    served = _metric("regression", table["y"], table["served"])
    return {
        "served_mae": round(served, 2),
        "v1_mae": round(_metric("regression", table["y"], table["static"]), 2),
        "detections": len(summary["detections"]),
        **counts,
        "wall_s": summary["wall_s"],
        "pass": bool(served <= BIKE_MAE and counts["retrains"] <= BIKE_RETRAINS),
    }


def rescore(
    folder: Path, names: list[str], seeds: Iterable[int], with_bike: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The scorecard again from the outputs a run kept with ``--out`` (no replay)."""

    def read(run: Path) -> tuple[dict[str, Any], pd.DataFrame]:
        summary = json.loads((run / "summary.json").read_text())
        return summary, pd.read_parquet(run / "predictions.parquet")

    runs = []
    print(_header(RUN_COLUMNS), flush=True)
    for name in names:
        for seed in seeds:
            run = folder / f"{name}-s{seed}"
            if (run / "summary.json").exists():
                runs.append(stream_row(make(name, seed), seed, *read(run)))
                print_run(runs[-1])
    bike = bike_row(*read(folder / "bike")) if with_bike and (folder / "bike").exists() else None
    return runs, bike


# --- scoring -----------------------------------------------------------------------------


def _metric(task: str, y: Any, p: Any) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(p)
    if not ok.any():
        return math.nan
    if task == "classification":
        return float(np.mean(y[ok] == p[ok]))
    return float(np.mean(np.abs(y[ok] - p[ok])))


def _deploy_counts(deploys: list[dict[str, Any]]) -> dict[str, int]:
    rollbacks = sum(1 for d in deploys if d["reason"] == "rollback")
    redeploys = sum(1 for d in deploys if d["redeploy"] and d["reason"] != "rollback")
    new = [d for d in deploys if not d["redeploy"] and d["reason"] != "rollback"]
    return {"retrains": max(0, len(new) - 1), "redeploys": redeploys, "rollbacks": rollbacks}


def score_run(
    table: pd.DataFrame, summary: dict[str, Any], *, task: str, onset: pd.Timestamp, changed: bool
) -> dict[str, Any]:
    """The scorecard's figures of one replay (``table``: its predictions.parquet)."""
    # a "refresh" retrains on a change already detected, as its new concept grows
    found = [d for d in summary["detections"] if d["cause"] != "refresh"]
    ends = [pd.Timestamp(d["window_end"]) for d in found]
    after = [e for e in ends if changed and e > onset]
    t, y = table["time"], table["y"]
    pre, post = t < onset, t >= onset
    last = t > t.max() - LAST

    def m(column: str, rows: pd.Series) -> float:
        return round(_metric(task, y[rows], table.loc[rows, column]), 4)

    return {
        "task": task,
        "false_alarms": len(ends) - len(after),
        "detections": len(ends),
        "refreshes": len(summary["detections"]) - len(found),
        "delay": round((min(after) - onset) / WINDOW, 2) if after else None,
        "pre": m("served", pre),
        "last4w": m("served", last),
        "v1_last4w": m("static", last),
        "v1_post": m("static", post),
        "served_post": m("served", post),
        "served_all": m("served", t.notna()),
        "v1_all": m("static", t.notna()),
        **_deploy_counts(summary["deploys"]),
        "rows": int(len(table)),
        "rows_not_scored": int(table["served"].isna().sum()),
    }


def recovery(task: str, pre: float, last: float) -> float:
    """Last four weeks vs before the change: accuracy points, or MAE change in % (+ is worse)."""
    return (
        round((last - pre) * 100, 2)
        if task == "classification"
        else round((last / pre - 1) * 100, 1)
    )


def _better(task: str, served: float, v1: float, slack: float = 0.0) -> bool:
    if task == "classification":
        return served > v1 - slack if slack else served > v1
    return served < v1 * (1 + slack) if slack else served < v1


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One stream's runs (its seeds) against the targets."""
    kind, task = runs[0]["kind"], runs[0]["task"]
    delays = [r["delay"] if r["delay"] is not None else math.inf for r in runs]
    rec = [recovery(task, r["pre"], r["last4w"]) for r in runs]
    worst = min(rec) if task == "classification" else max(rec)
    slack = BENIGN_SLACK if kind == "benign" else 0.0
    beats = [_better(task, r["served_post"], r["v1_post"], slack) for r in runs]
    checks: dict[str, bool] = {"no_false_alarms": sum(r["false_alarms"] for r in runs) == 0}
    if kind in ABRUPT:
        checks["delay"] = statistics.median(delays) <= 1 and max(delays) <= 2
    checks["recovery"] = (
        worst >= -ACCURACY_POINTS if task == "classification" else worst <= MAE_RELATIVE * 100
    )
    if kind != "stationary":
        checks["beats_v1" if kind != "benign" else "not_worse_than_v1"] = all(beats)
    finite = [d for d in delays if d != math.inf]
    return {
        "kind": kind,
        "task": task,
        "metric": "accuracy" if task == "classification" else "mae",
        "seeds": len(runs),
        "false_alarms": sum(r["false_alarms"] for r in runs),
        "detected": f"{len(finite)}/{len(runs)}" if kind != "stationary" else None,
        "median_delay": _json_number(statistics.median(delays)) if kind != "stationary" else None,
        "max_delay": _json_number(max(delays)) if kind != "stationary" else None,
        "recovery_worst": worst,
        "recovery_unit": "accuracy points" if task == "classification" else "% MAE",
        "served_post": [r["served_post"] for r in runs],
        "v1_post": [r["v1_post"] for r in runs],
        "retrains": [r["retrains"] for r in runs],
        "redeploys": sum(r["redeploys"] for r in runs),
        "rollbacks": sum(r["rollbacks"] for r in runs),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "checks": checks,
        "pass": all(checks.values()),
    }


def _json_number(value: float) -> float | str:
    return "never" if value == math.inf else round(value, 2)


# --- output ------------------------------------------------------------------------------

RUN_COLUMNS = (
    ("stream", 19), ("seed", 4), ("FA", 3), ("delay", 6), ("pre", 7), ("last4w", 7),
    ("v1 last4w", 9), ("v1 post", 7), ("served post", 11), ("served all", 10), ("v1 all", 7),
    ("retrains", 8), ("redeploys", 9), ("rollbacks", 9), ("wall s", 7),
)  # fmt: skip
AGG_COLUMNS = (
    ("stream", 19), ("kind", 10), ("metric", 8), ("detected", 8), ("median delay", 12),
    ("max delay", 9), ("FA", 3), ("recovery", 14), ("beats v1", 8), ("retrains", 10),
    ("wall s", 7), ("verdict", 30),
)  # fmt: skip


def _line(columns: Iterable[tuple[str, int]], values: Iterable[Any]) -> str:
    cells = []
    for (title, width), value in zip(columns, values, strict=True):
        text = "-" if value is None else str(value)
        cells.append(
            text.ljust(width)
            if title in ("stream", "kind", "metric", "verdict")
            else text.rjust(width)
        )
    return "  ".join(cells).rstrip()


def print_run(r: dict[str, Any]) -> None:
    digits = 4 if r["task"] == "classification" else 3
    metrics = [
        f"{r[k]:.{digits}f}"
        for k in ("pre", "last4w", "v1_last4w", "v1_post", "served_post", "served_all", "v1_all")
    ]
    values = (
        r["stream"], r["seed"], r["false_alarms"], r["delay"], *metrics,
        r["retrains"], r["redeploys"], r["rollbacks"], r["wall_s"],
    )  # fmt: skip
    print(_line(RUN_COLUMNS, values), flush=True)


def print_aggregate(name: str, a: dict[str, Any]) -> None:
    unit = "pt" if a["task"] == "classification" else "%"
    beats = sum(
        _better(a["task"], s, v, BENIGN_SLACK if a["kind"] == "benign" else 0.0)
        for s, v in zip(a["served_post"], a["v1_post"], strict=True)
    )
    beats_text = f"{beats}/{a['seeds']}" if a["kind"] != "stationary" else None
    failed = [k for k, ok in a["checks"].items() if not ok]
    values = (
        name, a["kind"], a["metric"], a["detected"], a["median_delay"], a["max_delay"],
        a["false_alarms"], f"{a['recovery_worst']:+g} {unit}", beats_text,
        "/".join(str(n) for n in a["retrains"]), a["wall_s_median"],
        "pass" if a["pass"] else "FAIL " + ",".join(failed),
    )  # fmt: skip
    print(_line(AGG_COLUMNS, values), flush=True)


def _header(columns: Iterable[tuple[str, int]]) -> str:
    return _line(columns, [title for title, _ in columns])


def functions_version() -> dict[str, Any]:
    """Which drift policy ran: where ``driftline.functions`` came from, and its commit."""
    import driftline.functions

    path = Path(driftline.functions.__file__).resolve().parent
    info: dict[str, Any] = {"path": str(path)}
    if path == ROOT / "functions":
        git = ["git", "-C", str(ROOT)]
        info["commit"] = subprocess.run(
            [*git, "log", "-1", "--format=%h", "--", "functions/"], capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "functions/"], capture_output=True, text=True
        )
        info["uncommitted_changes"] = bool(status.stdout.strip())
    return info


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per stream (1, 2, ...)")
    parser.add_argument("--streams", default=",".join(STREAMS), help="comma-separated names")
    parser.add_argument("--jobs", type=int, default=2, help="replays at once, one process each")
    parser.add_argument("--bike", action="store_true", help="also replay the bundled bike data")
    parser.add_argument("--out", type=Path, help="keep every run's summary, predictions, report")
    parser.add_argument("--label", default="", help="a note for the JSON line (e.g. the policy)")
    parser.add_argument(
        "--batch-minutes",
        type=float,
        default=None,
        help="the replays' --batch-minutes (default: the replay's; 0: a request per row)",
    )
    parser.add_argument(
        "--from", dest="source", type=Path, help="score the outputs an --out run kept, no replay"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.streams.split(",") if n.strip()]
    unknown = [n for n in names if n not in STREAMS]
    if unknown:
        parser.error(f"unknown stream(s) {unknown}; known: {', '.join(STREAMS)}")
    # the replays share the cores: one OpenMP thread per job and core
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    started = time.monotonic()
    seeds = range(1, args.seeds + 1)
    if args.source is not None:
        runs, bike = rescore(args.source, names, seeds, args.bike)
    else:
        runs, bike = _run_all(names, seeds, args.jobs, args.bike, args.out, args.batch_minutes)
    print()
    print(_header(AGG_COLUMNS))
    streams = {}
    for name in names:
        if not any(r["stream"] == name for r in runs):
            continue
        streams[name] = aggregate(
            sorted((r for r in runs if r["stream"] == name), key=lambda r: r["seed"])
        )
        print_aggregate(name, streams[name])
    if bike is not None:
        print(
            f"\nbike: served MAE {bike['served_mae']} (v1 {bike['v1_mae']}), retrains "
            f"{bike['retrains']}, redeploys {bike['redeploys']}, rollbacks {bike['rollbacks']}, "
            f"detections {bike['detections']}, {bike['wall_s']} s: {'pass' if bike['pass'] else 'FAIL'} "
            f"(target MAE <= {BIKE_MAE:g} with <= {BIKE_RETRAINS} retrains)"
        )
    verdicts = [s["pass"] for s in streams.values()] + ([bike["pass"]] if bike else [])
    result = {
        "label": args.label,
        "functions": functions_version() if args.source is None else {"from": str(args.source)},
        "shape": Shape().__dict__,
        "seeds": args.seeds,
        "batch_minutes": args.batch_minutes,
        "streams": streams,
        "bike": bike,
        "passed": sum(verdicts),
        "failed": len(verdicts) - sum(verdicts),
        "pass": all(verdicts),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 0


def _run_all(
    names: list[str],
    seeds: Iterable[int],
    jobs: int,
    with_bike: bool,
    keep: Path | None,
    batch_minutes: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    runs: list[dict[str, Any]] = []
    bike = None
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        # the bike replay is the longest: start it first
        bike_future = pool.submit(run_bike, keep, batch_minutes) if with_bike else None
        futures = [pool.submit(run_stream, n, s, keep, batch_minutes) for n in names for s in seeds]
        print(_header(RUN_COLUMNS), flush=True)
        for future in as_completed(futures):
            runs.append(future.result())
            print_run(runs[-1])
        if bike_future is not None:
            bike = bike_future.result()
    return runs, bike


if __name__ == "__main__":
    raise SystemExit(main())
