"""Replay: the whole closed loop on a data set, in event-time order, with delayed labels.

1. save the spec, upload the first training window as a CSV and publish
   ``dataset.uploaded``: ingest → retrain → register gives version 1;
2. replay every later row as scoring traffic: the rows of ``batch_minutes`` of event time
   (a day by default; at most :data:`MAX_REQUEST_ROWS`, never across a step) as one
   ``score.requested`` that carries each row's own time (``row_times``), so drift-check
   files every row in the window of its time and the results are those of a request per
   row (``batch_minutes=0``), about 2.5-3 times as fast on dense data; and the rows' true
   values as one ``labels.received`` once ``label_delay_hours`` of event time passed (a
   request's rows are labeled in the same step too);
3. after each ``step_hours`` of event time, let the loop settle (every function caught up),
   so a retrain triggered by drift is deployed before the next step is scored, as it would
   be in production where real hours pass between the data's hours;
4. compare the served predictions with those of version 1 never retrained, and write
   ``summary.json`` (with every detection and deploy), ``predictions.parquet`` (one row per
   replayed row: ``time``, ``y``, ``served``, ``version``, ``static``) and ``report.html``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.events import (
    Codec,
    DatasetUploaded,
    DriftChecked,
    DriftDetected,
    Event,
    LabelsReceived,
    Matrix,
    ModelDeployed,
    ModelRejected,
    ModelTrained,
    RowTimes,
    ScoreCompleted,
    ScoreRequested,
)
from driftline.functions import FUNCTIONS
from driftline.functions.ml.layout import read_upload, spec_key
from driftline.functions.ml.spec import TIME, ModelSpec, validate_frame
from driftline.functions.ml.training import load_session, metric, predict
from driftline.runtime.errors import ConfigError
from driftline.runtime.platform import Platform
from driftline.runtime.replay.report import write_report
from driftline.runtime.replay.settle import TopicWatch, settle
from driftline.runtime.runner import Runner
from driftline.runtime.settings import Settings

WATCHED = [
    e.TYPE
    for e in (
        ScoreRequested,
        LabelsReceived,
        ScoreCompleted,
        DriftChecked,
        DriftDetected,
        ModelTrained,
        ModelDeployed,
        ModelRejected,
    )
] + ["dataset.uploaded", "dataset.ingested"]


@dataclass
class _Publisher:
    bus: Any
    codec: Codec

    def __post_init__(self) -> None:
        self.producer = self.bus.producer()

    def send(self, event: Event) -> None:
        value, headers = self.codec.encode(event, id=str(uuid.uuid4()), source="driftline/replay")
        self.producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)

    def flush(self) -> None:
        self.producer.flush()


def replay(
    data: Path,
    spec_path: Path,
    settings: Settings,
    *,
    out: Path,
    step_hours: float = 24.0,
    label_delay_hours: float = 24.0,
    progress: bool = True,
    days: float | None = None,
    batch_minutes: float = 1440.0,
) -> dict[str, Any]:
    """Run the loop over ``data`` (its first ``days`` of event time when given); returns the
    summary (also written to ``out``)."""
    started = time.monotonic()
    run_started = datetime.now(UTC)
    spec = ModelSpec.from_toml(spec_path)
    raw = read_upload(data.read_bytes(), data.name)
    rows, refused = validate_frame(spec, raw, source=str(data))
    rows = rows.sort_values(TIME, kind="stable")
    first = rows[TIME].iloc[0]
    initial_end = first + pd.Timedelta(days=spec.training.days)
    if days is not None:
        if days <= spec.training.days:
            raise ConfigError(
                f"--days {days:g}: the first {spec.training.days:g} days (training.days) train "
                f"v1, so a replay needs more than that"
            )
        rows = rows[rows[TIME] < first + pd.Timedelta(days=days)]
    is_initial = rows[TIME] < initial_end

    platform = Platform.open(settings)
    existing = platform.registry.entry(spec.name)
    if existing is not None and existing.versions:
        platform.close()
        raise ConfigError(
            f"model {spec.name!r} already has version(s) {sorted(existing.versions)} on this bus "
            f"({settings.bus or settings.home_dir}): a replay starts from an untrained model; use a new "
            f"--home (or bus), or another model name in the spec"
        )
    runner = Runner(
        platform.bus,
        FUNCTIONS,
        store=platform.store,
        settings=settings,
        registry=platform.registry,
        poll_timeout_s=0.2,
    )
    runner.start()
    watch = TopicWatch(platform.bus, WATCHED)
    # the embedded bus shows a flushed record at once; a Kafka fetch can take up to fetch_max_wait
    quiet_s = 0.01 if (settings.bus or "sqlite").startswith("sqlite") else 0.6
    say = print if progress else (lambda *a, **k: None)
    try:
        pub = _Publisher(platform.bus, runner.codec)
        platform.store.put(spec_key(spec.name), spec_path.read_bytes(), "application/toml")
        key = f"uploads/{spec.name}/initial-{run_started:%Y%m%dT%H%M%S}.csv"
        info = platform.store.put(
            key, raw.loc[rows.index[is_initial]].to_csv(index=False).encode(), "text/csv"
        )
        pub.send(DatasetUploaded(model=spec.name, key=key, size=info.size, etag=info.etag))
        pub.flush()
        settle(runner, watch, quiet_s=quiet_s)
        v1 = platform.registry.production(spec.name)
        if v1 is None:
            raise RuntimeError(
                "no version was deployed from the initial window; see `driftline dlq list`"
            )
        say(
            f"driftline: v{v1.version} trained on {int(is_initial.sum())} rows "
            f"({first:%Y-%m-%d} .. {initial_end:%Y-%m-%d}); replaying {int((~is_initial).sum())} rows"
        )
        stream = rows[~is_initial]
        steps = _Steps(step_hours, label_delay_hours, batch_minutes)
        request_ids = _replay_stream(
            spec, stream, pub, runner, watch, platform, quiet_s, steps, say
        )
        summary = _summarize(
            spec,
            platform,
            stream,
            request_ids,
            v1,
            run_started,
            time.monotonic() - started,
            refused=len(refused),
        )
        summary["summary"]["dead_lettered"] = sum(s.dead_lettered for s in runner.stats.values())
    finally:
        watch.close()
        runner.stop()
        platform.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary["summary"], indent=2) + "\n")
    predictions_frame(summary).to_parquet(out / "predictions.parquet", index=False)
    write_report(out / "report.html", summary, settings)
    _print_table(summary["summary"], say)
    say(f"wrote {out / 'summary.json'}, {out / 'predictions.parquet'} and {out / 'report.html'}")
    return summary["summary"]


@dataclass(frozen=True)
class _Steps:
    """How the replay walks through event time."""

    step_hours: float
    """Event time between two settle points."""
    label_delay_hours: float
    batch_minutes: float
    """Rows within this much event time of a request's first row, scored and labeled in the
    same steps, join that request with their own times (0: a request per row)."""


def _since_epoch(times: list[Any], unit: str) -> np.ndarray:
    """Times as int64 counts of ``unit`` (``ns``, ``us``) since the Unix epoch."""
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy(dtype=f"datetime64[{unit}]").astype(np.int64)


MAX_REQUEST_ROWS = 1000
"""Rows in one scoring request at most (1,000 rows of 20 features: 160 kB, well under a
Kafka broker's default 1 MB message limit)."""


def _requests(
    times: list[Any],
    minutes: float,
    *,
    step: timedelta | None = None,
    delay: timedelta = timedelta(0),
    max_rows: int = MAX_REQUEST_ROWS,
) -> list[tuple[int, int]]:
    """``(start, end)`` row ranges of the scoring requests: consecutive rows within
    ``minutes`` of the first row of theirs (0: one row each), ``max_rows`` at most and, with
    ``step``, scored in the same step and labeled (``delay`` later) in the same step, so that
    every row and its label go out in the step they would with a request per row."""
    if not times:
        return []
    ns = _since_epoch(times, "ns")
    since = ns - ns[0]
    width = max(int(minutes * 60e9), 1)
    # rows split where they are scored or labeled in another step than the row before
    apart = np.zeros(len(ns), dtype=bool)
    if step is not None:
        size = max(int(step.total_seconds() * 1e9), 1)
        scored, labeled = since // size, (since + int(delay.total_seconds() * 1e9)) // size
        apart[1:] = (scored[1:] != scored[:-1]) | (labeled[1:] != labeled[:-1])
    at, split = since.tolist(), apart.tolist()
    out, start = [], 0
    for k in range(1, len(at)):
        if split[k] or at[k] - at[start] >= width or k - start >= max_rows:
            out.append((start, k))
            start = k
    out.append((start, len(at)))
    return out


def _replay_stream(
    spec: ModelSpec,
    stream: pd.DataFrame,
    pub: _Publisher,
    runner: Runner,
    watch: TopicWatch,
    platform: Platform,
    quiet_s: float,
    steps: _Steps,
    say: Any,
) -> list[tuple[str, int]]:
    """Publish the stream step by step, settling after each; returns each row's request id
    and position in that request."""
    run = uuid.uuid4().hex[:8]
    times = stream[TIME].to_list()
    step, delay = timedelta(hours=steps.step_hours), timedelta(hours=steps.label_delay_hours)
    requests = _requests(times, steps.batch_minutes, step=step, delay=delay)
    ids = [f"{run}-{n}" for n in range(len(requests))]
    x = stream[spec.feature_names].to_numpy(dtype=np.float64)
    y = stream[spec.target].to_numpy(dtype=np.float64)
    micros = _since_epoch(times, "us") if steps.batch_minutes > 0 else None
    next_label, i, clock = 0, 0, times[0] + step
    last_print = times[0]
    while i < len(ids) or next_label < len(ids):
        while i < len(ids) and times[requests[i][0]] < clock:
            a, b = requests[i]
            pub.send(
                ScoreRequested(
                    model=spec.name,
                    request_id=ids[i],
                    columns=spec.feature_names,
                    rows=Matrix(x[a:b]),
                    event_time=times[a],
                    row_times=None if micros is None else RowTimes(micros[a:b]),
                )
            )
            i += 1
        while (
            next_label < i
            and times[requests[next_label][0]] + delay < clock
            or (i == len(ids) and next_label < i)
        ):
            a, b = requests[next_label]
            pub.send(
                LabelsReceived(
                    model=spec.name,
                    request_id=ids[next_label],
                    labels=[float(v) for v in y[a:b]],
                    event_time=times[a] + delay,
                )
            )
            next_label += 1
        pub.flush()
        settle(runner, watch, quiet_s=quiet_s)
        if clock - last_print >= timedelta(days=30) or i == len(ids):
            prod = platform.registry.production(spec.name)
            say(
                f"  {clock:%Y-%m-%d}  scored {requests[i - 1][1] if i else 0:>6}  "
                f"production v{prod.version if prod else '-'}  "
                f"drift events {watch.counts.get('drift.detected', 0)}  "
                f"deploys {watch.counts.get('model.deployed', 0)}"
            )
            last_print = clock
        clock += step
    return [(ids[n], k - a) for n, (a, b) in enumerate(requests) for k in range(a, b)]


def _read_events(platform: Platform, topics: list[str], since: datetime) -> list[Any]:
    codec = Codec()
    consumer = platform.bus.reader(topics)
    out, idle = [], 0
    records = consumer.poll(0.3, 5000)
    while idle < 3:  # read until three polls in a row find nothing
        for r in records:
            env = codec.decode(
                r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset
            )
            if env.time >= since:
                out.append(env)
        records = consumer.poll(0.3, 5000)
        idle = 0 if records else idle + 1
    consumer.close()
    return out


def _summarize(
    spec: ModelSpec,
    platform: Platform,
    stream: pd.DataFrame,
    ids: list[tuple[str, int]],
    v1: Any,
    run_started: datetime,
    wall_s: float,
    refused: int,
) -> dict[str, Any]:
    events = _read_events(
        platform,
        [
            "score.completed",
            "drift.checked",
            "drift.detected",
            "model.trained",
            "model.deployed",
            "model.rejected",
        ],
        run_started,
    )

    def of(kind):
        return [e.data for e in events if isinstance(e.data, kind) and e.data.model == spec.name]

    served_by_id = {e.request_id: (e.predictions, e.version) for e in of(ScoreCompleted)}
    missing = [r for r, _ in ids if r not in served_by_id]
    y = stream[spec.target].to_numpy(dtype=np.float64)
    served = np.array(
        [served_by_id[r][0][k] if r in served_by_id else np.nan for r, k in ids], dtype=np.float64
    )
    versions = [served_by_id[r][1] if r in served_by_id else 0 for r, _ in ids]
    static_session = load_session(platform.store.get(v1.artifact_key), spec)
    static = predict(static_session, spec, stream).astype(np.float64)
    ok = ~np.isnan(served)
    name = spec.metric_name
    trained = of(ModelTrained)
    deployed = of(ModelDeployed)
    detected = of(DriftDetected)
    summary = {
        "metric": name,
        "static": round(metric(spec, y, static, name), 4),
        "served": round(metric(spec, y[ok], served[ok], name), 4) if ok.any() else None,
        "retrains": sum(1 for t in trained if t.trigger != "initial"),
        "drift_events": sum(1 for d in detected if d.detector != "schedule"),
        "challenges": sum(1 for d in detected if d.detector == "schedule"),
        "promotions": len(
            [d for d in deployed if d.reason == "promotion" and d.version != v1.version]
        ),
        "rejections": len(of(ModelRejected)),
        "rows": int(ok.sum()),
        "rows_not_scored": len(missing),
        "rows_refused": refused,
        "windows_checked": len(of(DriftChecked)),
        "versions_served": sorted({v for v in versions if v}),
        "wall_s": round(wall_s, 1),
        "model": spec.name,
        "detections": _detections(detected),
        "deploys": _deploys(deployed, platform.registry.entry(spec.name)),
    }
    return {
        "summary": summary,
        "spec": spec,
        "times": stream[TIME].to_list(),
        "y": y,
        "served": served,
        "versions": versions,
        "static": static,
        "checked": of(DriftChecked),
        "detected": list({d.idempotency_key: d for d in detected}.values()),
        "deployed": deployed,
        "rejected": of(ModelRejected),
        "store": platform.store,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()


def _detections(detected: list[DriftDetected]) -> list[dict[str, Any]]:
    """Each ``drift.detected`` once (a redelivered one carries the same idempotency key)."""
    unique = {d.idempotency_key or f"{d.version}/{d.window}": d for d in detected}
    out = []
    for d in sorted(unique.values(), key=lambda d: (d.window_end, d.version)):
        row = {"window_end": _iso(d.window_end), "cause": str(d.cause), "version": d.version}
        for extra in ("detector", "change_point"):  # where the event carries them
            if hasattr(d, extra):
                value = getattr(d, extra)
                row[extra] = _iso(value) if isinstance(value, datetime) else value
        out.append(row)
    return out


def _deploys(deployed: list[ModelDeployed], entry: Any) -> list[dict[str, Any]]:
    """Every deploy in bus order; ``redeploy``: an earlier version served again (the deploy
    says so, or the version had been deployed before)."""
    out, seen = [], set()
    for d in deployed:
        registered = entry.versions.get(d.version) if entry is not None else None
        out.append(
            {
                "version": d.version,
                "effective_time": _iso(d.effective_time),
                "reason": d.reason,
                "trigger": registered.trigger if registered is not None else None,
                "previous_version": d.previous_version,
                "redeploy": d.reason == "redeploy" or d.version in seen,
            }
        )
        seen.add(d.version)
    return out


def predictions_frame(r: dict[str, Any]) -> pd.DataFrame:
    """One row per replayed row, in event-time order: what was served, by which version, and
    what v1 never retrained would have said (NaN and <NA> for a row that was not scored)."""
    versions = pd.array([v or None for v in r["versions"]], dtype="Int64")
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(r["times"]).tz_convert("UTC"),
            "y": np.asarray(r["y"], dtype=np.float64),
            "served": np.asarray(r["served"], dtype=np.float64),
            "version": versions,
            "static": np.asarray(r["static"], dtype=np.float64),
        }
    )


def _decimals(*values: Any) -> int:
    """Four significant digits for the largest value, at least one decimal, at most four."""
    finite = [abs(v) for v in values if isinstance(v, float) and np.isfinite(v) and v]
    magnitude = int(np.floor(np.log10(max(finite)))) if finite else 0
    return min(4, max(1, 3 - magnitude))


def _number(value: Any, decimals: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{decimals}f}" if np.isfinite(value) else str(value)


def _print_table(s: dict[str, Any], say: Any) -> None:
    digits = _decimals(s["static"], s["served"])
    rows = [
        ("model", s["model"]),
        (f"{s['metric']}, never retrained (v1)", _number(s["static"], digits)),
        (f"{s['metric']}, served by the loop", _number(s["served"], digits)),
        *(
            (k, _number(s[k], 0))
            for k in ("retrains", "drift_events", "challenges", "promotions", "rejections")
        ),
        ("rows", _number(s["rows"], 0)),
        ("wall seconds", _number(s["wall_s"], 1)),
    ]
    left = max(len(label) for label, _ in rows)
    right = max(len(value) for _, value in rows)
    say("")
    for label, value in rows:
        say(f"  {label:<{left}}  {value:>{right}}")
