"""drift-check's saved state: snapshots, a journal of inputs between them, the old format."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from driftline.events import LabelsReceived, Matrix, ScoreCompleted
from driftline.functions import drift_state
from driftline.functions.drift_check import (
    Monitors,
    _iso,
    _waiting_from,
    _waiting_state,
    drift_check,
    save_changed,
)
from driftline.functions.ml.monitor import _nan_none, _window_from, _window_state
from driftline.runtime.context import Context
from tests.functions.synthetic import context

START = datetime(2024, 1, 1, tzinfo=UTC)
OLD_STATE = Path(__file__).parent / "fixtures" / "drift_state_d61ddbd.json"
"""What drift-check saved whole after each batch before the journal (commit d61ddbd): ten
rows of v1, four labeled, a label before its row, a NaN feature."""


def _scored(i: int, rows: int = 1) -> ScoreCompleted:
    rng = np.random.default_rng(i)
    return ScoreCompleted(
        model="synth",
        request_id=f"r{i}",
        version=1,
        predictions=[10.0 + i + k for k in range(rows)],
        columns=["x1", "x2", "x3"],
        rows=Matrix(rng.normal(size=(rows, 3))),
        event_time=START + timedelta(hours=i),
    )


def _labels(i: int, rows: int = 1) -> LabelsReceived:
    return LabelsReceived(
        model="synth", request_id=f"r{i}", labels=[12.0 + i + k for k in range(rows)]
    )


def _start(ctx: Context) -> Context:
    ctx.state = Monitors(ctx)
    m = ctx.state.get("synth")
    m.monitor.deployed(1, at=START, metrics={m.spec.metric_name: 2.0})
    m.changed = m.whole = True
    return ctx


def _restarted(ctx: Context) -> Context:
    again = context(Path(ctx.store.root).parent, registry=ctx.registry)
    again.state = Monitors(again)
    return again


def _kinds(ctx: Context) -> list[str]:
    return [
        json.loads(ctx.store.get(info.key))["kind"] for info in ctx.store.list("state/synth/drift/")
    ]


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (a NaN feature stays NaN through a save)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _features_as_lists(state: dict[str, Any]) -> dict[str, Any]:
    """A state with its windows row by row, each row's features and each scored request's
    rows as lists (NaN as None), as the oldest format had them."""
    windows = {
        start: [
            [*r[:4], _nan_none(r[4]), r[5], [None if math.isnan(v) else v for v in r[6]]]
            for r in _window_from(saved)
        ]
        for start, saved in state["windows"].items()
    }
    waiting = _waiting_from(state["waiting"])
    scored = [[rid, _iso(t), rows.tolist()] for rid, (t, rows, _) in waiting.items()]
    newer = {"sampled_out": 0, "filed": {}}  # keys the old format lacks, at what it implies
    assert {k: state[k] for k in newer} == newer
    return {
        **{k: v for k, v in state.items() if k != "waiting" and k not in newer},
        "windows": windows,
        "scored": scored,
    }


def test_a_restore_from_snapshot_and_journal_is_the_uninterrupted_state(tmp_path: Path) -> None:
    """Batches of rows and late labels over several windows, saved after each batch as the
    runner does: snapshots where windows closed, deltas between. A process restarted after
    any batch rebuilds exactly the state of the one that went on."""
    ctx = _start(context(tmp_path))
    outputs = []
    for batch in range(40):
        for i in range(batch * 6, batch * 6 + 6):
            outputs += drift_check(_scored(i, rows=3), ctx)
            if i >= 24:  # labels a day late, one request unlabeled now and then
                if i % 7:
                    outputs += drift_check(_labels(i - 24, rows=3), ctx)
        if batch == 20:  # a redelivered request and labels change nothing, before or after
            outputs += drift_check(_scored(100, rows=3), ctx)
            outputs += drift_check(_labels(90, rows=3), ctx)
        save_changed(ctx)
        live = ctx.state.get("synth").to_state()
        restored = _restarted(ctx).state.get("synth")
        assert _same(restored.to_state(), live), f"after batch {batch}"
        assert list(restored.scored) == list(ctx.state.get("synth").scored)
    kinds = _kinds(ctx)
    assert "delta" in kinds and "snapshot" in kinds
    assert any(e.TYPE == "drift.checked" for e in outputs), "windows closed on the way"


def test_a_restored_process_goes_on_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """The same inputs after a restart give the same outputs and the same state."""
    a = _start(context(tmp_path / "a"))
    b = _start(context(tmp_path / "b"))
    for i in range(200):
        events = [_scored(i, rows=2)] + ([_labels(i - 24, rows=2)] if i >= 24 else [])
        out_a = [e for ev in events for e in drift_check(ev, a)]
        out_b = [e for ev in events for e in drift_check(ev, b)]
        assert [e.model_dump() for e in out_a] == [e.model_dump() for e in out_b]
        save_changed(a)
        save_changed(b)
        if i % 13 == 5:
            b = _restarted(b)
    assert _same(a.state.get("synth").to_state(), b.state.get("synth").to_state())


def test_a_delta_costs_the_batch_not_the_window(tmp_path: Path) -> None:
    ctx = _start(context(tmp_path))
    for i in range(60):
        drift_check(_scored(i, rows=20), ctx)
    save_changed(ctx)  # the first save is whole: 1,200 rows waiting for labels
    drift_check(_scored(60), ctx)
    save_changed(ctx)
    sizes = [info.size for info in ctx.store.list("state/synth/drift/")]
    assert _kinds(ctx) == ["snapshot", "delta"]
    assert sizes[0] > 100_000 and sizes[1] < 500


def test_the_journal_is_compacted_and_old_objects_go(tmp_path: Path) -> None:
    """A snapshot once the deltas outweigh the last one; objects before the previous
    snapshot are deleted, so the journal stays short."""
    ctx = _start(context(tmp_path))
    for i in range(3 * drift_state.MAX_DELTAS):
        drift_check(_scored(i % 48, rows=1), ctx)  # redelivered rows: a delta each, no growth
        save_changed(ctx)
    kinds = _kinds(ctx)
    assert kinds.count("snapshot") == 2 and kinds[0] == "snapshot"
    assert len(kinds) <= 2 * drift_state.MAX_DELTAS + 1
    assert _same(_restarted(ctx).state.get("synth").to_state(), ctx.state.get("synth").to_state())


def test_a_state_saved_whole_before_the_journal_still_loads(tmp_path: Path) -> None:
    """Upgrade: the old whole-state object is read, then replaced by the first snapshot."""
    ctx = context(tmp_path)
    ctx.store.put(drift_state.legacy_key("synth"), OLD_STATE.read_bytes())
    ctx.state = Monitors(ctx)
    m = ctx.state.get("synth")
    assert m.monitor.version == 1 and list(m.scored) == [f"r{i}" for i in range(4, 10)]
    assert sum(len(rows) for rows in m.monitor.windows.values()) == 10
    assert [row["y"] for row in m.feedback] == [20.0, 21.0, 22.0, 23.0]
    assert m.monitor.detector is not None and len(m.monitor.detector.history) == 4
    assert list(m.early) == ["early"] and m.monitor.orphans == {"early": [1.0]}
    assert _same(_features_as_lists(m.to_state()), json.loads(OLD_STATE.read_bytes()))

    drift_check(LabelsReceived(model="synth", request_id="r5", labels=[25.0]), ctx)
    save_changed(ctx)
    assert not ctx.store.exists(drift_state.legacy_key("synth"))
    assert _kinds(ctx) == ["snapshot"]
    again = _restarted(ctx).state.get("synth")
    assert [row["y"] for row in again.feedback] == [20.0, 21.0, 22.0, 23.0, 25.0]
    assert _same(again.to_state(), m.to_state())


def test_snapshots_are_encoded_in_pieces_as_json_dumps_would_whole() -> None:

    rows = [[f"r{i}", i, 1.5 * i, None, "AAAA"] for i in range(2_500)]
    doc = {
        "kind": "snapshot",
        "state": {
            "windows": {"1.0": rows, "2.0": []},
            "scored": rows[:10],
            "x": {"a": (1, 2)},
            "pieces": ["A" * 150_000, "B" * 10, 'q"\\' * 40_000],  # long strings: one by one
        },
    }
    assert drift_state._dumps(doc) == json.dumps(doc)


def test_requests_waiting_for_labels_are_saved_by_column_and_come_back_the_same() -> None:
    """Thousands of requests (several pieces), with and without row times, of 0 to 3 rows."""
    rng = np.random.default_rng(3)
    waiting: OrderedDict[str, Any] = OrderedDict()
    for i in range(2_500):
        n = i % 4
        rows = rng.normal(size=(n, 3))
        times = None if i % 3 == 0 else np.arange(n, dtype=np.int64) + 1_700_000_000_000_000 + i
        at = None if i % 5 == 0 else datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
        waiting[f"r{i}"] = (at, rows, times)
    saved = json.loads(json.dumps(_waiting_state(waiting)))
    assert len(saved["features"]) == 3, "a piece per thousand requests"
    back = _waiting_from(saved)
    assert list(back) == list(waiting)
    for rid, (at, rows, times) in waiting.items():
        got_at, got_rows, got_times = back[rid]
        assert got_at == at and got_rows.shape == rows.shape and np.array_equal(got_rows, rows)
        assert (got_times is None) == (times is None)
        assert times is None or np.array_equal(got_times, times)


def test_window_rows_are_saved_by_column_and_come_back_the_same() -> None:
    """Thousands of rows (several pieces), labeled or not, a NaN prediction and feature
    among them; and an empty window."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2_500, 3))
    x[7, 1] = math.nan
    rows = [
        (
            f"r{i // 2}",
            i % 2,
            1_700_000_000.5 + i,
            1 + i % 3,
            float(i) / 3,
            None if i % 4 else i * 1.5,
            x[i],
        )
        for i in range(2_500)
    ]
    rows[11] = (*rows[11][:4], math.nan, *rows[11][5:])
    saved = json.loads(json.dumps(_window_state(rows)))
    assert len(saved["x"]) == 3, "a piece per thousand rows"
    back = _window_from(saved)
    assert len(back) == len(rows)
    for got, row in zip(back, rows, strict=True):
        assert got[:4] == row[:4] and _same(got[4], row[4]) and got[5] == row[5]
        assert np.array_equal(got[6], row[6], equal_nan=True)
    assert _window_from(json.loads(json.dumps(_window_state([])))) == []


def test_window_rows_of_several_widths_are_saved_and_come_back() -> None:
    """Events whose columns differ can put rows of different widths in one window."""
    rows = [
        (f"r{i}", 0, 1.0 * i, 1, 0.5, None, np.arange(2 + i % 3, dtype=np.float64))
        for i in range(2_100)
    ]
    saved = json.loads(json.dumps(_window_state(rows)))
    back = _window_from(saved)
    assert [len(r[6]) for r in back] == [len(r[6]) for r in rows]
    assert all(
        np.array_equal(a[6], b[6]) and a[:6] == b[:6] for a, b in zip(back, rows, strict=True)
    )
