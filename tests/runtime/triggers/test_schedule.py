"""Batch schedules: one job per period and schedule, across restarts; bad specs are skipped;
a scheduled job scores the file as it is when its period comes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from driftline.events import BatchRequested, Codec
from driftline.functions.batch import batch
from driftline.functions.ml.layout import spec_key
from driftline.functions.ml.serving import ModelServer
from driftline.functions.ml.spec import ModelSpec
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.errors import ConfigError
from driftline.runtime.store import LocalStore
from driftline.runtime.triggers.schedule import BatchScheduler, batch_id
from tests.functions.synthetic import SPEC_TOML, context, frame, with_production
from tests.runtime.runner_helpers import read_all

SCHEDULES = """
[[batch]]
key = "incoming/daily.csv"
every_hours = 24

[[batch]]
name = "hourly"
key = "incoming/hourly.parquet"
every_hours = 1
chunk_rows = 500
"""
DAY = datetime(2026, 12, 5, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bus(tmp_path: Path) -> EmbeddedBus:
    b = EmbeddedBus(tmp_path / "bus.db")
    b.create_topics(["batch.requested"])
    return b


def _asked(scheduler: BatchScheduler) -> list[tuple[str, str, str, int]]:
    return [(e.model, e.batch_id, e.key, e.chunk_rows) for e in scheduler.poll_once()]


def test_each_schedule_asks_once_per_period_and_a_restart_does_not_ask_again(
    tmp_path: Path, bus: EmbeddedBus
) -> None:
    store = LocalStore(tmp_path / "store")
    store.put(spec_key("synth"), (SPEC_TOML + SCHEDULES).encode())
    store.put(spec_key("plain"), SPEC_TOML.replace('"synth"', '"plain"').encode())
    clock = Clock(DAY + 3 * 3600 + 60)  # 03:01 UTC
    first = BatchScheduler(store, bus, clock=clock)
    assert sorted(_asked(first)) == [
        ("synth", "hourly-20261205T030000Z", "incoming/hourly.parquet", 500),
        ("synth", "scheduled-20261205T000000Z", "incoming/daily.csv", 50_000),
    ]
    assert _asked(first) == []  # the same periods
    clock.now += 3600  # 04:01: a new hour, the same day
    assert _asked(first) == [("synth", "hourly-20261205T040000Z", "incoming/hourly.parquet", 500)]
    first.stop()

    again = BatchScheduler(store, bus, clock=clock)  # a restarted `driftline up`
    assert _asked(again) == []
    clock.now += 24 * 3600
    assert sorted(e[1] for e in _asked(again)) == [
        "hourly-20261206T040000Z",
        "scheduled-20261206T000000Z",
    ]
    again.stop()

    published = read_all(bus, "batch.requested", 5)
    codec = Codec()
    envelopes = [codec.decode(r.value, r.headers) for r in published]
    assert sorted(e.data.batch_id for e in envelopes) == [
        "hourly-20261205T030000Z",
        "hourly-20261205T040000Z",
        "hourly-20261206T040000Z",
        "scheduled-20261205T000000Z",
        "scheduled-20261206T000000Z",
    ]
    assert len({e.id for e in envelopes}) == 5
    assert all(e.source == "driftline/schedule" for e in envelopes)


def test_a_spec_that_does_not_parse_is_skipped_and_the_others_go_on(
    tmp_path: Path, bus: EmbeddedBus, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "store")
    store.put(spec_key("synth"), (SPEC_TOML + SCHEDULES).encode())
    store.put(spec_key("broken"), b"name = 'broken'\n[[batch]]\nevery_hours = 0\n")
    scheduler = BatchScheduler(store, bus, clock=Clock(DAY))
    assert len(scheduler.poll_once()) == 2
    assert "specs/broken.toml" in caplog.text
    scheduler.stop()


def test_schedules_need_distinct_names_and_a_positive_period() -> None:
    twice = SCHEDULES.replace('name = "hourly"\n', "")
    with pytest.raises(ConfigError, match="its own name"):
        ModelSpec.from_toml(SPEC_TOML + twice)
    with pytest.raises(ConfigError, match=r"batch.0.every_hours"):
        ModelSpec.from_toml(SPEC_TOML + '[[batch]]\nkey = "a.csv"\nevery_hours = 0\n')


def test_a_scheduled_job_scores_the_file_with_the_production_version(tmp_path: Path) -> None:
    ctx = with_production(context(tmp_path))
    ctx.store.put(spec_key("synth"), (SPEC_TOML + SCHEDULES).encode())
    rows = frame(300, seed=4)
    ctx.store.put("incoming/daily.csv", rows.to_csv(index=False).encode())

    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.create_topics(["batch.requested"])
    scheduler = BatchScheduler(ctx.store, bus, clock=Clock(DAY + 60))
    job = next(e for e in scheduler.poll_once() if e.batch_id.startswith("scheduled-"))
    scheduler.stop()
    ctx.state = ModelServer(ctx.store, ctx.registry)
    ctx.begin("batch-1", BatchRequested.TYPE, None, None)
    done = batch(job, ctx)
    assert (done.status, done.rows, done.scored, done.version) == ("succeeded", 300, 300, 1)
    assert done.output_key == f"batches/synth/{batch_id('scheduled', DAY)}.parquet"
    out = pd.read_parquet(tmp_path / "store" / done.output_key)
    assert len(out) == 300


def test_driftline_up_runs_the_schedules(tmp_path: Path) -> None:
    """The scheduler is one of `driftline up`'s triggers: started with it, it asks at once."""
    from driftline.runtime.http.server import _start_triggers
    from driftline.runtime.platform import Platform
    from driftline.runtime.settings import Settings

    platform = Platform.open(Settings(home=tmp_path / "home"))
    platform.store.put(spec_key("synth"), (SPEC_TOML + SCHEDULES).encode())
    stoppers: list = []  # type: ignore[type-arg]
    _start_triggers(platform, 0.1, stoppers)
    try:
        published = read_all(platform.bus, "batch.requested", 2, timeout_s=20)
    finally:
        for stop in reversed(stoppers):
            stop()
        platform.close()
    now = time.time()
    daily = batch_id("scheduled", now - now % 86400)
    codec = Codec()
    assert daily in {codec.decode(r.value, r.headers).data.batch_id for r in published}
