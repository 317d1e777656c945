"""Batch scoring: a file in chunks gives what the score function gives, row by row; bad rows
are refused and reported; a bad file, a missing column or an unknown model is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.events import BatchRequested, ScoreRequested
from driftline.functions.batch import batch
from driftline.functions.ml.batch import PREDICTION, ROW, VERSION, score_file
from driftline.functions.ml.serving import ModelServer
from driftline.functions.score import score
from driftline.runtime.context import Context
from driftline.runtime.errors import UnknownModelError, UnknownVersionError, ValidationError
from tests.functions.synthetic import context, frame, with_production

FEATURES = ["x1", "x2", "x3"]


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    """A store and registry with synth v1 in production."""
    return with_production(context(tmp_path))


def _rows(n: int = 1_000) -> pd.DataFrame:
    df = frame(n, seed=9)[["x3", "x1", "x2"]]  # another column order than the model's
    df["note"] = "extra columns are ignored"
    return df


def _score_function(ctx: Context, rows: pd.DataFrame) -> np.ndarray:
    ctx.state = ModelServer(ctx.store, ctx.registry)
    done = score(
        ScoreRequested(
            model="synth", request_id="r", columns=FEATURES, rows=rows[FEATURES].to_numpy()
        ),
        ctx,
    )
    assert done is not None
    return np.array(done.predictions)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_scored_in_chunks_matches_the_score_function_row_by_row(
    ctx: Context, tmp_path: Path, kind: str
) -> None:
    rows = _rows()
    source = tmp_path / f"in.{kind}"
    rows.to_csv(source, index=False) if kind == "csv" else rows.to_parquet(source)
    seen: list[int] = []
    outcome = score_file(
        ModelServer(ctx.store, ctx.registry),
        "synth",
        source,
        tmp_path / "out.parquet",
        chunk_rows=128,
        progress=seen.append,
    )
    assert (outcome.rows, outcome.scored, outcome.refused, outcome.version) == (1000, 1000, 0, 1)
    assert seen == [min(1000, 128 * i) for i in range(1, 9)]  # one line per chunk
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out[ROW].tolist() == list(range(1000)) and set(out[VERSION]) == {1}
    assert np.allclose(out[PREDICTION], _score_function(ctx, rows), rtol=1e-6)


def test_bad_rows_are_refused_and_reported_not_fatal(ctx: Context, tmp_path: Path) -> None:
    rows = _rows(300).astype(object)
    rows.loc[17, "x2"] = "1,5"
    rows.loc[250, "x1"] = "twelve"
    rows.to_csv(tmp_path / "in.csv", index=False)
    outcome = score_file(
        ModelServer(ctx.store, ctx.registry),
        "synth",
        tmp_path / "in.csv",
        tmp_path / "out.parquet",
        chunk_rows=100,
    )
    assert (outcome.rows, outcome.scored, outcome.refused) == (300, 298, 2)
    assert outcome.errors == [
        "row 17: x2 '1,5' is not a number",
        "row 250: x1 'twelve' is not a number",
    ]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert 17 not in set(out[ROW]) and 250 not in set(out[ROW]) and len(out) == 298


def test_a_missing_column_a_corrupt_file_and_unknown_models_are_clear_errors(
    ctx: Context, tmp_path: Path
) -> None:
    server = ModelServer(ctx.store, ctx.registry)
    _rows(10).drop(columns=["x2"]).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ValidationError, match=r"in.csv: feature column\(s\) \['x2'\] missing"):
        score_file(server, "synth", tmp_path / "in.csv", tmp_path / "o.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValidationError, match="bad.parquet: cannot read as Parquet"):
        score_file(server, "synth", tmp_path / "bad.parquet", tmp_path / "o.parquet")
    with pytest.raises(UnknownModelError, match="no model named 'nope'"):
        score_file(server, "nope", tmp_path / "in.csv", tmp_path / "o.parquet")
    with pytest.raises(UnknownVersionError, match="has no version 9"):
        score_file(server, "synth", tmp_path / "in.csv", tmp_path / "o.parquet", version=9)


def test_the_batch_function_keeps_predictions_and_a_summary_in_the_store(
    ctx: Context, tmp_path: Path
) -> None:
    rows = _rows(500)
    ctx.store.put("batches/synth/in.csv", rows.to_csv(index=False).encode())
    ctx.state = ModelServer(ctx.store, ctx.registry)
    done = batch(
        BatchRequested(model="synth", batch_id="b1", key="batches/synth/in.csv", chunk_rows=64),
        ctx,
    )
    assert done.status == "succeeded" and (done.rows, done.scored, done.version) == (500, 500, 1)
    assert done.output_key == "batches/synth/b1.parquet"
    ctx.store.download(done.output_key, tmp_path / "got.parquet")
    got = pd.read_parquet(tmp_path / "got.parquet")
    assert np.allclose(got[PREDICTION], _score_function(ctx, rows), rtol=1e-6)
    assert json.loads(ctx.store.get("batches/synth/b1.json")) == done.model_dump(mode="json")

    ctx.store.put("batches/synth/broken.csv", b"x1,x3\n1,2\n")
    failed = batch(
        BatchRequested(model="synth", batch_id="b2", key="batches/synth/broken.csv"), ctx
    )
    assert failed.status == "failed" and failed.output_key is None
    assert "['x2'] missing" in failed.errors[0]
    assert not ctx.store.exists("batches/synth/b2.parquet")
    gone = batch(BatchRequested(model="synth", batch_id="b3", key="batches/none.csv"), ctx)
    assert gone.status == "failed" and "no object 'batches/none.csv'" in gone.errors[0]
