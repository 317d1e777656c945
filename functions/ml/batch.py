"""Batch scoring: a CSV or Parquet file scored in chunks, predictions written as Parquet.

:func:`score_file` reads ``chunk_rows`` rows at a time (pandas' chunked CSV reader,
pyarrow's record batches for Parquet), so memory stays bounded whatever the file's size,
scores each chunk with one version from the serving core and appends the predictions to
a Parquet file: one row per scored input row, with the input row's index (0-based, in
file order), the prediction and the version. A row with a value that is not a number is
refused (counted, the first few reported with why), never fatal; a file that cannot be
read, or that lacks a feature column, is a :class:`ValidationError` naming what is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.functions.ml.serving import ModelServer, Served
from driftline.runtime.errors import ValidationError

ROW, PREDICTION, VERSION = "row", "prediction", "version"
"""Columns of the predictions file."""
MAX_REPORTED = 20
"""Refused rows reported by number and reason (all are counted)."""


@dataclass
class BatchOutcome:
    """What a batch scored."""

    version: int
    rows: int = 0
    scored: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def score_file(
    server: ModelServer,
    model: str,
    source: Path,
    out: Path,
    *,
    version: int | None = None,
    chunk_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> BatchOutcome:
    """Score ``source`` with ``model`` (``version``, default production) into ``out``."""
    started = time.perf_counter()
    served = server.production(model) if version is None else server.version(model, version)
    features = served.spec.feature_names
    outcome = BatchOutcome(served.version)
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in _chunks(Path(source), features, chunk_rows):
            table = _score_chunk(served, chunk, outcome)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            if progress is not None:
                progress(outcome.rows)
        if writer is None:  # an empty file: an empty predictions file
            writer = pq.ParquetWriter(out, _schema(served))
    finally:
        if writer is not None:
            writer.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _schema(served: Served) -> pa.Schema:
    kind = pa.int64() if served.spec.task == "classification" else pa.float64()
    return pa.schema([(ROW, pa.int64()), (PREDICTION, kind), (VERSION, pa.int64())])


def _score_chunk(served: Served, chunk: pd.DataFrame, outcome: BatchOutcome) -> pa.Table:
    start = outcome.rows
    index = np.arange(start, start + len(chunk), dtype=np.int64)
    raw = chunk[served.spec.feature_names]
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy()  # text where a number should be
    refused = bad.any(axis=1)
    for i in np.flatnonzero(refused)[: max(0, MAX_REPORTED - len(outcome.errors))]:
        column = served.spec.feature_names[int(np.argmax(bad[i]))]
        outcome.errors.append(f"row {index[i]}: {column} {raw.iloc[i][column]!r} is not a number")
    x = values.to_numpy(dtype=np.float32)[~refused]
    y = served.predict(x)
    outcome.rows += len(chunk)
    outcome.scored += len(x)
    outcome.refused += int(refused.sum())
    schema = _schema(served)
    return pa.table(
        {
            ROW: index[~refused],
            PREDICTION: pa.array(np.asarray(y), type=schema.field(PREDICTION).type),
            VERSION: np.full(len(x), served.version, dtype=np.int64),
        },
        schema=schema,
    )


def _chunks(path: Path, features: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunk_rows`` at a time, with at least the feature columns."""
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            with pq.ParquetFile(path) as file:
                _check_columns(path, file.schema_arrow.names, features)
                for batch in file.iter_batches(batch_size=chunk_rows, columns=features):
                    yield batch.to_pandas()
        else:
            with pd.read_csv(path, chunksize=chunk_rows, dtype=str) as reader:
                for i, chunk in enumerate(reader):
                    if i == 0:
                        _check_columns(path, list(chunk.columns), features)
                    yield chunk
    except ValidationError:
        raise
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        kind = "Parquet" if parquet else "CSV"
        raise ValidationError(
            f"{path.name}: cannot read as {kind}: {type(exc).__name__}: {exc}"
        ) from None


def _check_columns(path: Path, columns: list[str], features: list[str]) -> None:
    missing = [f for f in features if f not in columns]
    if missing:
        raise ValidationError(
            f"{path.name}: feature column(s) {missing} missing (the model takes {features})"
        )
