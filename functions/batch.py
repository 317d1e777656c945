"""batch: score a stored file with a model, in chunks, and keep the predictions.

On ``batch.requested`` the file (CSV or Parquet, an object-store key) is copied to a local
temporary file (streamed), scored chunk by chunk with the production version or the one
asked for (:func:`~driftline.functions.ml.batch.score_file`, through the process's
serving core), and the predictions go to the store as Parquet, next to a JSON summary
(``<output>.json``, the ``batch.completed`` event's fields) that anyone can poll for.
``batch.completed`` says what was scored, what was refused and why, and where the output
is; a file that cannot be read, a missing column, an unknown model or version end the job
as ``failed`` with the reason. Nothing is half-written: the output appears whole.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from driftline.events import BatchCompleted, BatchRequested
from driftline.functions.ml.batch import score_file
from driftline.functions.ml.serving import ModelServer, shared
from driftline.runtime.context import Context
from driftline.runtime.errors import ObjectNotFoundError, PermanentError
from driftline.runtime.function import function

log = logging.getLogger("driftline.batch")


def output_key(event: BatchRequested) -> str:
    return event.output_key or f"batches/{event.model}/{event.batch_id}.parquet"


def summary_key(key: str) -> str:
    """Where the JSON summary of the batch whose predictions go to ``key`` is written."""
    return key.rsplit(".", 1)[0] + ".json" if key.endswith(".parquet") else key + ".json"


def _server(ctx: Context) -> ModelServer:
    caps = ctx.capabilities
    providers = caps.scoring_providers() if caps is not None else None
    return shared(ctx.store, ctx.registry, providers=providers)


@function(
    subscribes="batch.requested",
    emits="batch.completed",
    gpu="preferred",
    init=_server,
    timeout_s=3600,
)
def batch(event: BatchRequested, ctx: Context) -> BatchCompleted:
    key = output_key(event)
    suffix = Path(event.key).suffix.lower() or ".csv"
    with tempfile.TemporaryDirectory(prefix="driftline-batch-") as tmp:
        source, out = Path(tmp) / f"input{suffix}", Path(tmp) / "predictions.parquet"
        try:
            ctx.store.download(event.key, source)
            outcome = score_file(
                ctx.state,
                event.model,
                source,
                out,
                version=event.version,
                chunk_rows=event.chunk_rows,
                progress=lambda rows: log.info("batch %s: %d rows scored", event.batch_id, rows),
            )
        except (PermanentError, ObjectNotFoundError) as exc:
            done = BatchCompleted(
                model=event.model,
                batch_id=event.batch_id,
                status="failed",
                version=event.version,
                errors=[f"{event.key}: {exc}"],
            )
        else:
            ctx.store.upload(out, key, "application/vnd.apache.parquet")
            done = BatchCompleted(
                model=event.model,
                batch_id=event.batch_id,
                version=outcome.version,
                rows=outcome.rows,
                scored=outcome.scored,
                refused=outcome.refused,
                output_key=key,
                errors=outcome.errors,
                seconds=round(outcome.seconds, 3),
            )
    ctx.store.put(summary_key(key), json.dumps(done.model_dump(mode="json")).encode())
    return done
