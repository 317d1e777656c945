"""Offline replay of the closed loop, to choose and check the drift policy (no bus, no store).

It drives the same code the functions use: ``validate_frame``, ``train`` (with its ONNX
check), ``load_session``/``predict``, ``DriftMonitor`` (with Evidently) and ``gate``.
v1 is trained on the first ``--initial-days``; the rest streams in time order, one
request per event time, as scoring traffic; each row's true value arrives as a label
``--label-delay-hours`` later. A ``drift.detected`` retrains on the trailing training
window of everything labeled so far; the gate compares candidate and champion on the
candidate's holdout (the most recent labeled rows) and deploys or rejects.

    python tests/bench/policy_replay.py                      # the bundled bike data
    python tests/bench/policy_replay.py --weekly             # ... and weekly retraining
    python tests/bench/policy_replay.py --synthetic all      # stationary and shifted streams
    python tests/bench/policy_replay.py --set drift.consecutive=3 --set gate.tolerance=0

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.functions.ml.monitor import DriftMonitor, WindowResult
from driftline.functions.ml.spec import TIME, ModelSpec, validate_frame
from driftline.functions.ml.training import gate, load_session, metric, predict, train

ROOT = Path(__file__).resolve().parents[2]
BIKE_DATA = ROOT / "runtime" / "replay" / "sample" / "bike_sharing_hour.csv"
BIKE_SPEC = ROOT / "runtime" / "replay" / "sample" / "bike_sharing.toml"

SYNTHETIC_SPEC = """
name = "synthetic"
task = "regression"
target = "y"
features = ["hour", "x1", "x2", "x3", "x4", "x5"]
[time]
column = "ts"
[estimator]
class = "sklearn.ensemble.HistGradientBoostingRegressor"
params = { max_iter = 200, random_state = 0 }
"""
SCENARIOS = ("stationary", "feature-shift", "concept-shift")


@dataclass
class Loop:
    """What the replay keeps between events."""

    spec: ModelSpec
    data: pd.DataFrame
    label_delay: pd.Timedelta
    monitor: DriftMonitor
    session: Any
    version: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)
    windows: list[WindowResult] = field(default_factory=list)
    promotions: int = 0
    rejections: int = 0
    train_s: float = 0.0
    since_drift: bool = False


def replay(
    spec: ModelSpec,
    data: pd.DataFrame,
    *,
    initial_days: float = 28,
    label_delay_hours: float = 24,
    progress: bool = True,
    since_drift: bool = False,
) -> dict[str, Any]:
    """Run the loop over a validated frame; returns the summary."""
    started = time.perf_counter()
    df = data.sort_values(TIME, kind="stable").reset_index(drop=True)
    cut = df[TIME].iloc[0] + pd.Timedelta(days=initial_days)
    first = train(spec, df[df[TIME] < cut])
    loop = Loop(
        spec,
        df,
        pd.Timedelta(hours=label_delay_hours),
        DriftMonitor(spec),
        load_session(first.onnx, spec),
        since_drift=since_drift,
    )
    loop.monitor.deployed(
        1,
        at=first.train_end,
        validation_metric=first.metrics[spec.metric_name],
        reference=first.reference,
    )
    stream = df[df[TIME] >= cut]
    served = np.empty(len(stream))
    pending: deque[tuple[pd.Timestamp, str, list[float]]] = deque()
    for (a, b), t, rows in _requests(stream):
        while pending and pending[0][0] + loop.label_delay <= t:
            _, rid, ys = pending.popleft()
            _handle(loop, loop.monitor.label(rid, ys), t)
        served[a:b] = preds = predict(loop.session, spec, rows)
        rid = f"r{a}"
        x = rows[spec.feature_names].to_numpy().tolist()
        _handle(
            loop, loop.monitor.observe(rid, loop.version, t.to_pydatetime(), x, preds.tolist()), t
        )
        pending.append((t, rid, rows[spec.target].tolist()))
        if progress and a // 2000 != b // 2000:
            print(
                f"  {t:%Y-%m-%d}  row {b:>6}/{len(stream)}  serving v{loop.version}  "
                f"retrains {len(loop.events)}",
                flush=True,
            )
    y = stream[spec.target].to_numpy()
    static = predict(load_session(first.onnx, spec), spec, stream)
    return {
        "metric": spec.metric_name,
        "static": metric(spec, y, static),
        "served": metric(spec, y, served),
        "retrains": len(loop.events),
        "drift_events": len(loop.events),
        "promotions": loop.promotions,
        "rejections": loop.rejections,
        "windows": len(loop.windows),
        "drifted_windows": sum(w.drifted for w in loop.windows),
        "rows": len(stream),
        "train_s": round(loop.train_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "events": loop.events,
    }


def _requests(stream: pd.DataFrame) -> Iterator[tuple[tuple[int, int], pd.Timestamp, pd.DataFrame]]:
    """One scoring request per distinct event time."""
    times = stream[TIME].to_numpy()
    bounds = np.flatnonzero(np.r_[True, times[1:] != times[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        rows = stream.iloc[a:b]
        yield (int(a), int(b)), rows[TIME].iloc[0], rows


def _handle(loop: Loop, results: list[WindowResult], now: pd.Timestamp) -> None:
    for res in results:
        loop.windows.append(res)
        if res.detect:
            _retrain(loop, res, now)


def _retrain(loop: Loop, res: WindowResult, now: pd.Timestamp) -> None:
    """drift.detected -> retrain -> gate -> deploy or reject, all at event time ``now``."""
    spec, started = loop.spec, time.perf_counter()
    labeled = loop.data[loop.data[TIME] <= now - loop.label_delay]
    since = res.drift_start if loop.since_drift and res.cause == "performance" else None
    cand = train(spec, labeled, now=now.to_pydatetime(), since=since)
    hold = cand.holdout
    decision = gate(
        spec,
        hold[spec.target],
        predict(load_session(cand.onnx, spec), spec, hold),
        predict(loop.session, spec, hold),
    )
    if decision.passed:
        loop.version += 1
        loop.promotions += 1
        loop.session = load_session(cand.onnx, spec)
        loop.monitor.deployed(
            loop.version,
            at=now.to_pydatetime(),
            validation_metric=cand.metrics[spec.metric_name],
            reference=cand.reference,
        )
    else:
        loop.rejections += 1
        loop.monitor.rejected()
    loop.train_s += time.perf_counter() - started
    loop.events.append(
        {
            "at": f"{now:%Y-%m-%d %H:%M}",
            "window": res.window[:10],
            "cause": res.cause,
            "drift_share": _round(res.drift_share),
            "metric": _round(res.metric_value),
            "baseline": _round(res.baseline_metric),
            "promoted": decision.passed,
            "candidate": _round(decision.candidate),
            "champion": _round(decision.champion),
        }
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def weekly(
    spec: ModelSpec,
    data: pd.DataFrame,
    *,
    initial_days: float = 28,
    every_days: float = 7,
    label_delay_hours: float = 24,
) -> dict[str, Any]:
    """The brute-force baseline: retrain on a fixed schedule, always deploy."""
    df = data.sort_values(TIME, kind="stable").reset_index(drop=True)
    cut = df[TIME].iloc[0] + pd.Timedelta(days=initial_days)
    stream, served, retrains = df[df[TIME] >= cut], [], 0
    edges = pd.date_range(
        cut, df[TIME].iloc[-1] + pd.Timedelta(days=every_days), freq=f"{every_days}D"
    )
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        known = df[df[TIME] <= lo - pd.Timedelta(hours=label_delay_hours)]
        session = load_session(train(spec, known, now=lo.to_pydatetime()).onnx, spec)
        retrains += 1
        part = stream[(stream[TIME] >= lo) & (stream[TIME] < hi)]
        served.append(predict(session, spec, part))
    return {
        "served": metric(spec, stream[spec.target], np.concatenate(served)),
        "retrains": retrains,
    }


def synthetic(
    scenario: str, *, days: int = 168, shift_day: int = 84, rows_per_hour: int = 1, seed: int = 0
) -> pd.DataFrame:
    """A regression stream with a daily cycle: stationary, or with a shift at ``shift_day``.

    feature-shift: four of the six features move by one standard deviation (the relation
    to the target stays). concept-shift: features unchanged, the target's dependence on x1
    and x2 flips sign, visible only through labels.
    """
    rng = np.random.default_rng(seed)
    n = days * 24 * rows_per_hour
    ts = pd.Timestamp("2021-01-01", tz="UTC") + pd.to_timedelta(
        np.arange(n) // rows_per_hour, unit="h"
    )
    after = np.arange(n) >= shift_day * 24 * rows_per_hour
    hour = ts.hour.to_numpy().astype(float)
    x = rng.normal(size=(n, 5))
    if scenario == "feature-shift":
        x[after, :4] += 1.0
    sign = np.where(after & (scenario == "concept-shift"), -1.0, 1.0)
    y = (
        10 * np.sin(2 * np.pi * hour / 24)
        + sign * (3 * x[:, 0] + 2 * x[:, 1])
        - 2 * x[:, 2]
        + x[:, 3] * x[:, 4]
        + rng.normal(scale=1.0, size=n)
    )
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3", "x4", "x5"])
    frame.insert(0, "hour", hour)
    frame["ts"], frame["y"] = ts.strftime("%Y-%m-%dT%H:%M:%S"), y
    return frame


def _detection_lag(summary: dict[str, Any], shift: pd.Timestamp) -> float | None:
    after = [
        pd.Timestamp(e["at"], tz="UTC")
        for e in summary["events"]
        if pd.Timestamp(e["at"], tz="UTC") >= shift
    ]
    return None if not after else round((after[0] - shift) / pd.Timedelta(days=1), 1)


def _spec(source: str | Path, overrides: list[str]) -> ModelSpec:
    text = Path(source).read_text() if isinstance(source, Path) else source
    data = tomllib.loads(text)
    for item in overrides:
        dotted, _, raw = item.partition("=")
        *path, key = dotted.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[key] = tomllib.loads(f"v = {raw}")["v"]
    return ModelSpec.from_dict(data, source=str(source)[:40])


def _print(name: str, s: dict[str, Any]) -> None:
    print(
        f"{name:<22} {s['metric']} static {s['static']:8.2f}  served {s['served']:8.2f}  "
        f"retrains {s['retrains']:>3}  promotions {s['promotions']:>3}  rejections "
        f"{s['rejections']:>3}  drifted windows {s['drifted_windows']:>3}/{s['windows']:<3} "
        f"wall {s['wall_s']:6.1f}s (training {s['train_s']}s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=BIKE_DATA)
    parser.add_argument("--spec", type=Path, default=BIKE_SPEC)
    parser.add_argument("--synthetic", choices=[*SCENARIOS, "all"])
    parser.add_argument("--seeds", type=int, default=1, help="synthetic streams per scenario")
    parser.add_argument("--rows-per-hour", type=int, default=1)
    parser.add_argument("--initial-days", type=float, default=28)
    parser.add_argument("--label-delay-hours", type=float, default=24)
    parser.add_argument("--weekly", action="store_true", help="also run weekly retraining")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    parser.add_argument("--events", action="store_true", help="print every drift event")
    parser.add_argument(
        "--since-drift",
        action="store_true",
        help="after performance drift, train only on rows since the drift began",
    )
    args = parser.parse_args()
    opts = {
        "initial_days": args.initial_days,
        "label_delay_hours": args.label_delay_hours,
        "since_drift": args.since_drift,
    }
    if args.synthetic:
        spec = _spec(SYNTHETIC_SPEC, args.overrides)
        out: dict[str, Any] = {}
        for scenario in SCENARIOS if args.synthetic == "all" else (args.synthetic,):
            for seed in range(args.seeds):
                frame = synthetic(scenario, seed=seed, rows_per_hour=args.rows_per_hour)
                good, _ = validate_frame(spec, frame)
                s = replay(spec, good, progress=False, **opts)
                s["detection_lag_days"] = _detection_lag(
                    s, good[TIME].iloc[0] + pd.Timedelta(days=84)
                )
                _print(f"{scenario} seed {seed}", s)
                print(
                    f"{'':<22} first detection {s['detection_lag_days']} days after the shift (day 84); "
                    f"events at {[e['at'][:10] for e in s['events']]}"
                )
                out[f"{scenario}/{seed}"] = {k: v for k, v in s.items() if k != "events"}
        print(json.dumps(out))
        return
    spec = _spec(args.spec, args.overrides)
    good, bad = validate_frame(spec, pd.read_csv(args.data))
    print(
        f"{args.data.name}: {len(good)} rows ({len(bad)} refused), policy {spec.drift}, gate {spec.gate}"
    )
    summary = replay(spec, good, **opts)
    if args.events:
        for e in summary["events"]:
            print("  ", e)
    _print(spec.name, summary)
    result = {k: v for k, v in summary.items() if k != "events"}
    if args.weekly:
        started = time.perf_counter()
        result["weekly"] = weekly(
            spec, good, initial_days=args.initial_days, label_delay_hours=args.label_delay_hours
        )
        result["weekly"]["wall_s"] = round(time.perf_counter() - started, 1)
        print(
            f"weekly retraining: served {result['weekly']['served']:.2f} with "
            f"{result['weekly']['retrains']} retrains"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
