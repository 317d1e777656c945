"""retrain: a candidate from the training window, exported to ONNX and verified.

Triggered by new labeled data (``dataset.ingested``), by drift (``drift.detected``,
which also carries refreshes and scheduled challenges: trigger ``refresh`` or ``challenge``)
and by a person (``retrain.requested``: trigger ``manual``, up to the latest labeled row).
Trains on every labeled row the model has (ingested datasets and scoring feedback) inside
the spec's training window ending at the trigger's event time. A drift with a known
change point trains only on rows after it (at least ``training.min_rows``), so a retrain
does not mix the old concept with the new. ``training.train`` checks the ONNX export
against scikit-learn on held-out rows before anything is stored. On a runner with a GPU
trainer the model is fitted on the GPU (``gpu_training``), else on the CPU.
"""

from __future__ import annotations

import uuid

from driftline.events import (
    DatasetIngested,
    DriftDetected,
    ModelRejected,
    ModelTrained,
    RetrainRequested,
)
from driftline.functions.ml.gpu_training import train_for
from driftline.functions.ml.layout import labeled_rows, load_spec, put_table
from driftline.functions.ml.monitor import detection_run_id
from driftline.functions.ml.spec import TIME
from driftline.runtime.context import Context
from driftline.runtime.errors import ValidationError
from driftline.runtime.function import RetryPolicy, function

RUN_NAMESPACE = uuid.UUID("0b6a3f0e-9d1e-4d56-8f3c-2f1f6c7d9a20")


@function(
    subscribes=("dataset.ingested", "drift.detected", "retrain.requested"),
    emits=("model.trained", "model.rejected"),
    gpu="preferred",
    timeout_s=1800,
    retry=RetryPolicy(attempts=3, initial_backoff_s=1.0),
)
def retrain(
    event: DatasetIngested | DriftDetected | RetrainRequested, ctx: Context
) -> ModelTrained | ModelRejected | None:
    spec = load_spec(ctx.store, event.model)
    if isinstance(event, DatasetIngested):
        if event.rows == 0:
            return None
        until, since, trigger = event.time_max, None, "data"
    elif isinstance(event, RetrainRequested):
        until, since, trigger = None, None, "manual"
    else:
        until, since = event.window_end, event.change_point
        trigger = f"drift:{event.cause}"
        if event.cause == "refresh":  # a refresh, or a scheduled challenge
            trigger = "challenge" if event.detector == "schedule" else "refresh"
    production = ctx.registry.production(event.model) if ctx.registry is not None else None
    if production is None and trigger != "manual":
        trigger = "initial"
    if isinstance(event, DriftDetected):  # drift-check knows which run its detection starts
        run_id = detection_run_id(event.idempotency_key)
    else:
        run_id = str(uuid.uuid5(RUN_NAMESPACE, ctx.event_id))
    rows = labeled_rows(ctx.store, event.model)
    if rows.empty:
        why = f"model {event.model}: no labeled rows to train on (upload a dataset first)"
        if trigger == "manual":  # the person who asked reads the rejection
            return ModelRejected(model=event.model, run_id=run_id, reason=why)
        raise ValidationError(why)
    rows = rows.drop_duplicates(subset=[TIME, *spec.feature_names, spec.target])
    try:
        result = train_for(spec, rows, now=until, since=since, capabilities=ctx.capabilities)
    except ValidationError as exc:
        if isinstance(event, DatasetIngested):
            raise  # a dataset that cannot train a model is the uploader's problem: DLQ, with why
        # a drift retrain that cannot train must still end the retrain in flight
        return ModelRejected(
            model=event.model, run_id=run_id, reason=f"retrain not possible: {exc}"
        )
    base = f"models/{event.model}/{run_id}"
    ctx.store.put(f"{base}/model.onnx", result.onnx, "application/onnx")
    put_table(ctx.store, f"{base}/reference.parquet", result.reference)
    put_table(ctx.store, f"{base}/holdout.parquet", result.holdout)
    ctx.log.info(
        "%s: trained %s on %d rows in %.1fs (%s)",
        event.model,
        run_id,
        result.n_rows,
        result.seconds,
        trigger,
    )
    return ModelTrained(
        model=event.model,
        run_id=run_id,
        artifact_key=f"{base}/model.onnx",
        sha256=result.sha256,
        reference_key=f"{base}/reference.parquet",
        holdout_key=f"{base}/holdout.parquet",
        metrics=result.metrics,
        dataset_versions=sorted(
            {event.dataset_version} if isinstance(event, DatasetIngested) else set()
        ),
        parent_version=production.version if production else None,
        trigger=trigger,
        train_start=result.train_start,
        train_end=result.train_end,
        rows=result.n_rows,
        trainer=result.trainer,
        train_seconds=round(result.seconds, 3),
        input_signature=spec.feature_names,
        trials=result.trials,
        feature_importance=result.importance,
    )
