from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from driftline.events import DatasetUploaded
from driftline.functions.ingest import ingest
from driftline.functions.ml.layout import get_table
from driftline.runtime.errors import ValidationError
from tests.functions.synthetic import context, frame


def _upload(ctx, df: pd.DataFrame, key: str = "uploads/a.csv") -> DatasetUploaded:  # type: ignore[no-untyped-def]
    ctx.store.put(key, df.to_csv(index=False).encode())
    return DatasetUploaded(model="synth", key=key)


def test_good_rows_become_a_dataset_version(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    out = ingest(_upload(ctx, frame(100)), ctx)
    assert out.rows == 100 and out.quarantined_rows == 0 and out.initial
    table = get_table(ctx.store, out.key)
    assert len(table) == 100 and {"x1", "x2", "x3", "y"} <= set(table.columns)
    assert out.time_min is not None and out.time_max is not None and out.time_min < out.time_max


def test_bad_rows_are_quarantined_with_reasons(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    df = frame(20).astype({"x2": object})
    df.loc[3, "x2"] = "oops"
    df.loc[5, "y"] = None
    df.loc[7, "ts"] = "not a time"
    out = ingest(_upload(ctx, df), ctx)
    assert (out.rows, out.quarantined_rows) == (17, 3)
    assert out.quarantine_key is not None
    bad = pd.read_csv(ctx.store.uri(out.quarantine_key).removeprefix("file://"))
    reasons = " | ".join(bad["reason"])
    assert "x2" in reasons and "not a number" in reasons and "'y'" in reasons and "ts" in reasons


def test_a_missing_column_refuses_the_whole_file_naming_it(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    with pytest.raises(ValidationError, match=r"'x3' missing \(expected 3 features: x1, x2, x3"):
        ingest(_upload(ctx, frame(10).drop(columns=["x3"])), ctx)
    assert list(ctx.store.list("datasets/")) == [], "nothing half-written"


def test_garbage_bytes_are_refused(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.store.put("uploads/x.parquet", b"\x00not parquet")
    with pytest.raises(ValidationError, match="cannot read as Parquet"):
        ingest(DatasetUploaded(model="synth", key="uploads/x.parquet"), ctx)


def test_a_model_without_spec_is_a_clear_error(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.store.put("uploads/a.csv", frame(5).to_csv(index=False).encode())
    with pytest.raises(ValidationError, match="model 'other' has no spec"):
        ingest(DatasetUploaded(model="other", key="uploads/a.csv"), ctx)
