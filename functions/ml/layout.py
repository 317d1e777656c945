"""Where the functions keep things in the object store, and how tables travel there.

specs/<model>.toml                         the model spec
datasets/<model>/<version>.parquet         validated rows of an ingested file
quarantine/<model>/<version>.csv           refused rows, with a ``reason`` column
feedback/<model>/<window>.parquet          scored rows joined with their late labels
models/<model>/<run>/model.onnx            a trained candidate
models/<model>/<run>/reference.parquet     its reference sample (for data drift)
models/<model>/<run>/holdout.parquet       its most recent labeled rows (for the gate)
reports/<model>/v<version>/<window>.html   Evidently report of a drifted window
state/<model>/drift/<n>.json               drift-check's state: snapshots and journal deltas (drift_state)
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from driftline.functions.ml.spec import TIME, ModelSpec
from driftline.runtime.errors import ValidationError


def spec_key(model: str) -> str:
    return f"specs/{model}.toml"


def load_spec(store: Any, model: str) -> ModelSpec:
    """The spec saved for ``model``; a clear error when there is none."""
    key = spec_key(model)
    if not store.exists(key):
        raise ValidationError(
            f"model {model!r} has no spec at {store.uri(key)}; save one first "
            "(driftline replay does, or put the TOML there)"
        )
    return ModelSpec.from_toml(store.get(key).decode())


def put_table(store: Any, key: str, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    store.put(key, buf.getvalue(), "application/vnd.apache.parquet")


def get_table(store: Any, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.get(key)))


def read_upload(data: bytes, key: str) -> pd.DataFrame:
    """Parse an uploaded CSV or Parquet file; unreadable bytes are a ValidationError."""
    try:
        if key.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises many types for bad files
        raise ValidationError(
            f"dataset {key}: cannot read as {'Parquet' if key.endswith('parquet') else 'CSV'}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _tables(store: Any, *prefixes: str) -> pd.DataFrame:
    """Every non-empty Parquet table under ``prefixes``, concatenated (empty: no columns)."""
    frames = [
        get_table(store, info.key)
        for prefix in prefixes
        for info in store.list(prefix)
        if info.key.endswith(".parquet")
    ]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def labeled_rows(store: Any, model: str) -> pd.DataFrame:
    """Every labeled row known for a model: ingested datasets and scoring feedback."""
    return _tables(store, f"datasets/{model}/", f"feedback/{model}/")


def feedback_between(store: Any, model: str, start: Any, end: Any) -> pd.DataFrame:
    """Labeled scoring rows (feedback) with event time in ``[start, end)``, in time order."""
    rows = _tables(store, f"feedback/{model}/")
    if rows.empty:
        return rows
    times = pd.to_datetime(rows[TIME], utc=True)
    keep = (times >= pd.Timestamp(start)) & (times < pd.Timestamp(end))
    return rows[keep].sort_values(TIME, kind="stable").reset_index(drop=True)
