"""drift-check's state survives a restart: what a committed batch changed is in the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftline.events import LabelsReceived, Matrix, ScoreCompleted
from driftline.functions.drift_check import Monitors, drift_check, save_changed
from driftline.functions.ml.layout import get_table
from driftline.functions.ml.spec import TIME
from driftline.runtime.errors import StaleWriteError
from tests.functions.synthetic import context

START = datetime(2024, 1, 1, tzinfo=UTC)


def _scored(i: int) -> ScoreCompleted:
    return ScoreCompleted(
        model="synth",
        request_id=f"r{i}",
        version=1,
        predictions=[10.0 + i],
        columns=["x1", "x2", "x3"],
        rows=Matrix([[float(i), 0.5, 0.25]]),
        event_time=START + timedelta(hours=i),
    )


def _saved(seq: int) -> str:
    """The key of the model's ``seq``-th saved object (a snapshot or a journal delta)."""
    return f"state/synth/drift/{seq:012d}.json"


def test_a_restarted_drift_check_has_every_row_and_label_of_the_saved_batches(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    ctx.state = Monitors(ctx)
    for i in range(10):
        assert drift_check(_scored(i), ctx) == []
    for i in range(4):  # labels for the first four rows, before the restart
        drift_check(LabelsReceived(model="synth", request_id=f"r{i}", labels=[20.0 + i]), ctx)
    save_changed(ctx)  # what the runner calls before committing the batch
    assert ctx.store.exists(_saved(1))
    before = ctx.state.models["synth"]

    restarted = context(tmp_path, registry=ctx.registry)  # the same store, a new process
    restarted.state = Monitors(restarted)
    after = restarted.state.get("synth")
    assert after.monitor.to_state()["windows"] == before.monitor.to_state()["windows"], (
        "the open window's rows and labels"
    )
    assert list(after.scored) == [f"r{i}" for i in range(4, 10)], "rows still waiting for labels"
    assert [row["y"] for row in after.feedback] == [20.0, 21.0, 22.0, 23.0]
    assert after.feedback[0][TIME] == START

    # a label for a row scored before the restart still joins it; a redelivered row is ignored
    drift_check(LabelsReceived(model="synth", request_id="r5", labels=[25.0]), restarted)
    assert drift_check(_scored(5), restarted) == []
    assert [row["y"] for row in after.feedback][-1] == 25.0
    assert sum(len(rows) for rows in after.monitor.windows.values()) == 10

    # the window closes once event time passes it: its feedback is written, with all labels
    out = drift_check(_scored(24 * 4), restarted)
    assert [e.TYPE for e in out] == ["drift.checked"]
    feedback = list(restarted.store.list("feedback/synth/"))
    assert len(feedback) == 1
    assert sorted(get_table(restarted.store, feedback[0].key)["y"]) == [
        20.0,
        21.0,
        22.0,
        23.0,
        25.0,
    ]


def test_save_changed_writes_only_models_a_batch_changed(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.state = Monitors(ctx)
    writes: list[str] = []
    put_if = ctx.store.put_if
    ctx.store.put_if = lambda key, *a, **k: writes.append(key) or put_if(key, *a, **k)  # type: ignore[method-assign]
    drift_check(_scored(0), ctx)
    save_changed(ctx)
    save_changed(ctx)  # nothing changed since
    assert writes == [_saved(1)]
    drift_check(_scored(1), ctx)
    save_changed(ctx)
    assert writes == [_saved(1), _saved(2)]


def test_a_stalled_owner_cannot_overwrite_the_new_owners_state(tmp_path: Path) -> None:
    """Fencing. Owner A stalls holding the model's partition; B takes it over, reads A's
    last saved state, handles more rows and saves. When A resumes, its save is refused
    (StaleWriteError: the runner commits nothing, drops A's state and rejoins), and B's
    state, with every row, is what stays."""
    a = context(tmp_path)
    a.state = Monitors(a)
    for i in range(3):
        drift_check(_scored(i), a)
    save_changed(a)
    b = context(tmp_path, registry=a.registry)  # the replica that took the partition over
    b.state = Monitors(b)
    for i in range(3, 6):
        drift_check(_scored(i), b)
    save_changed(b)
    drift_check(_scored(6), a)  # A wakes up mid-batch, unaware
    with pytest.raises(StaleWriteError, match="another writer saved it first"):
        save_changed(a)
    again = context(tmp_path, registry=a.registry)
    again.state = Monitors(again)
    kept = again.state.get("synth")
    assert list(kept.scored) == [f"r{i}" for i in range(6)], "B's rows, none lost"
    assert sum(len(rows) for rows in kept.monitor.windows.values()) == 6


def test_a_window_judged_feature_by_feature_says_which_features_drifted() -> None:
    from driftline.functions.drift_check import feature_drift
    from driftline.functions.ml.drift_stats import ColumnDrift

    per = {
        "x1": ColumnDrift("K-S p_value", 0.001, 0.05, True),
        "x2": ColumnDrift("K-S p_value", 0.6, 0.05, False),
        "x3": ColumnDrift("K-S p_value", float("nan"), 0.05, False),
    }
    assert feature_drift(per) == {
        "drifted_features": ["x1"],
        "feature_drift": {"x1": 0.001, "x2": 0.6},
    }
    assert feature_drift({}) == {"drifted_features": [], "feature_drift": {}}


def test_a_batched_request_s_rows_keep_their_own_times_through_a_restart(
    tmp_path: Path,
) -> None:
    """Rows of one request that carries a time per row go to the windows of their own times
    (the synth spec's windows are 3 days, from 2023-12-31), and so does their feedback."""
    ctx = context(tmp_path)
    ctx.state = Monitors(ctx)
    times = [START + timedelta(hours=h) for h in (47, 48.5, 49)]
    scored = ScoreCompleted(
        model="synth",
        request_id="batch",
        version=1,
        predictions=[10.0, 11.0, 12.0],
        columns=["x1", "x2", "x3"],
        rows=Matrix([[1.0, 0.5, 0.25]] * 3),
        event_time=times[0],
        row_times=times,
    )
    assert drift_check(scored, ctx) == []
    save_changed(ctx)  # a journal delta with the row times

    restarted = context(tmp_path, registry=ctx.registry)
    restarted.state = Monitors(restarted)
    m = restarted.state.get("synth")
    boundary = datetime(2024, 1, 3, tzinfo=UTC).timestamp()
    assert {start: [r[2] for r in rows] for start, rows in m.monitor.windows.items()} == {
        boundary - 3 * 86_400: [times[0].timestamp()],
        boundary: [times[1].timestamp(), times[2].timestamp()],
    }
    labels = LabelsReceived(model="synth", request_id="batch", labels=[1.0, 2.0, 3.0])
    (checked,) = drift_check(labels, restarted)  # the first window is whole now: it closes
    assert checked.window_end.timestamp() == boundary
    assert [r[5] for rows in m.monitor.windows.values() for r in rows] == [2.0, 3.0]
    # the feedback written at the close holds the rows labeled up to it, as with a request
    # per row; the later rows wait for the next write; each row at its own time
    (written,) = restarted.store.list("feedback/synth/")
    feedback = get_table(restarted.store, written.key)
    assert [t.to_pydatetime() for t in feedback[TIME]] == times[:1]
    assert [row[TIME] for row in m.feedback] == times[1:]


def test_an_event_of_several_requests_is_taken_apart_by_row_ids(tmp_path: Path) -> None:
    """Captured /v2 traffic carries many requests per event (``row_ids``): each request's
    rows are filed under its own id and time, so its labels join it as if it came alone."""
    ctx = context(tmp_path)
    ctx.state = Monitors(ctx)
    alone = [_scored(i) for i in range(3)]
    alone[1] = alone[1].model_copy(
        update={"predictions": [11.0, 11.5], "rows": Matrix([[1.0, 0.5, 0.25]] * 2)}
    )
    together = ScoreCompleted(
        model="synth",
        request_id="r0",
        version=1,
        predictions=[p for e in alone for p in e.predictions],
        columns=["x1", "x2", "x3"],
        rows=Matrix([row for e in alone for row in e.rows.array]),
        event_time=START,
        row_times=[e.event_time for e in alone for _ in e.predictions],
        row_ids=["r0", "r1", "r1", "r2"],
    )

    def key(e: ScoreCompleted) -> tuple[object, ...]:
        return (e.request_id, e.predictions, e.rows, e.event_time, e.row_ids)

    assert [key(e) for e in together.requests()] == [key(e) for e in alone]
    assert drift_check(together, ctx) == []
    m = ctx.state.get("synth")
    assert list(m.scored) == ["r0", "r1", "r2"]
    drift_check(LabelsReceived(model="synth", request_id="r1", labels=[30.0, 31.0]), ctx)
    assert [(row["y"], row[TIME]) for row in m.feedback] == [
        (30.0, START + timedelta(hours=1)),
        (31.0, START + timedelta(hours=1)),
    ]
    with pytest.raises(ValueError, match="row_ids has 3 ids for 4 rows"):
        ScoreCompleted.model_validate(together.model_dump() | {"row_ids": ["a", "b", "c"]})


@pytest.mark.parametrize(("with_times", "hours"), [(True, 1), (True, 9), (False, 1)])
def test_an_event_of_several_requests_leaves_the_state_of_its_requests_one_by_one(
    tmp_path: Path, with_times: bool, hours: int
) -> None:
    """drift-check applies a batched event in one go (one journal record): the state it
    leaves, live and restored after a restart (from the journal; from a snapshot when a
    window closed), is the state the same requests leave when they come one by one."""
    ids = [f"r{i // 2}" for i in range(12)]  # two rows per request, six requests
    times = [START + timedelta(hours=hours * i) for i in range(12)]
    together = ScoreCompleted(
        model="synth",
        request_id="batch-1",
        version=1,
        predictions=[float(i) for i in range(12)],
        columns=["x1", "x2", "x3"],
        rows=Matrix([[float(i), 0.5, 0.25] for i in range(12)]),
        event_time=START,
        row_times=times if with_times else None,
        row_ids=ids,
    )
    one_by_one, batched = context(tmp_path / "a"), context(tmp_path / "b")
    for ctx in (one_by_one, batched):
        ctx.state = Monitors(ctx)
        drift_check(LabelsReceived(model="synth", request_id="r1", labels=[5.0, 6.0]), ctx)
        save_changed(ctx)  # the first save is a snapshot
    alone = [r for e in together.requests() for r in drift_check(e, one_by_one)]
    assert [e.TYPE for e in drift_check(together, batched)] == [e.TYPE for e in alone]
    assert len(batched.state.get("synth").journal) == 1, "one record for the event"
    closes = hours * 12 > 24 * 4 and with_times
    assert [e.TYPE for e in alone] == ["drift.checked"] * closes
    save_changed(batched)
    saved = json.loads(batched.store.get(_saved(2)))
    assert saved["kind"] == ("snapshot" if closes else "delta")

    def state(ctx: object) -> object:
        m = ctx.state.get("synth")  # type: ignore[attr-defined]
        return m.to_state() | {"slots": m.monitor._slots}

    assert state(batched) == state(one_by_one)
    restarted = context(tmp_path / "b", registry=batched.registry)
    restarted.state = Monitors(restarted)
    assert state(restarted) == state(one_by_one)
