"""One valid example of every event type (used by codec tests and the schema fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime

from driftline.events import models as m

T0 = datetime(2011, 3, 1, 12, tzinfo=UTC)
T1 = datetime(2011, 3, 8, 12, tzinfo=UTC)

EXAMPLES: dict[str, m.Event] = {
    e.TYPE: e
    for e in (
        m.DatasetUploaded(model="bike", key="uploads/jan.csv", size=1234, etag="abc"),
        m.DatasetIngested(
            model="bike",
            dataset_version="ds-1",
            key="datasets/ds-1.parquet",
            source_key="uploads/jan.csv",
            rows=100,
            quarantined_rows=2,
            quarantine_key="quarantine/ds-1.csv",
            time_min=T0,
            time_max=T1,
        ),
        m.ModelTrained(
            model="bike",
            run_id="run-1",
            artifact_key="models/run-1.onnx",
            sha256="00" * 32,
            reference_key="models/run-1.ref.parquet",
            holdout_key="models/run-1.holdout.parquet",
            metrics={"mae": 41.5},
            dataset_versions=["ds-1"],
            trigger="drift:data",
            train_start=T0,
            train_end=T1,
            rows=600,
            train_seconds=1.25,
            input_signature=["hr", "temp"],
            trials=["HistGradientBoostingRegressor() on the trailing window: mae 40.1  <- chosen"],
            promote=False,
            force=True,
        ),
        m.ModelRegistered(
            model="bike",
            version=2,
            run_id="run-1",
            artifact_key="models/run-1.onnx",
            sha256="00" * 32,
            reference_key="models/run-1.ref.parquet",
            metrics={"mae": 41.5},
            parent_version=1,
        ),
        m.ModelRejected(
            model="bike",
            run_id="run-2",
            reason="worse than champion",
            metric="mae",
            candidate=60.0,
            champion=40.0,
        ),
        m.ModelDeployed(
            model="bike",
            version=2,
            artifact_key="models/run-1.onnx",
            sha256="00" * 32,
            previous_version=1,
            reason="redeploy",
            effective_time=T1,
        ),
        m.ScoreRequested(
            model="bike",
            request_id="req-1",
            columns=["hr", "temp"],
            rows=[[5.0, 0.3]],
            event_time=T1,
        ),
        m.ScoreCompleted(
            model="bike",
            request_id="req-1",
            version=2,
            predictions=[17.0],
            columns=["hr", "temp"],
            rows=[[5.0, 0.3]],
            event_time=T1,
        ),
        m.LabelsReceived(model="bike", request_id="req-1", labels=[20.0], event_time=T1),
        m.DriftChecked(
            model="bike",
            version=2,
            window="2011-03-01T12:00:00+00:00",
            window_start=T0,
            window_end=T1,
            rows=168,
            labeled_rows=160,
            drift_share=0.4,
            metric="mae",
            metric_value=70.0,
            baseline_metric=40.0,
            drifted=True,
            cause="performance",
            loss=70.0,
            baseline_loss=40.0,
            effect=30.0,
            min_effect=6.0,
            z=9.5,
            p_value=1e-12,
            detector="adwin width 160, mean 0.17, alarms 1",
            probation=True,
            reason="performance drift: retrain",
        ),
        m.DriftDetected(
            model="bike",
            version=2,
            cause="performance",
            window="2011-03-01T12:00:00+00:00",
            window_end=T1,
            drift_share=0.4,
            metric_value=70.0,
            idempotency_key="bike/2/w",
            change_point=T0,
            detector="online",
        ),
        m.RetrainRequested(model="bike", reason="new features upstream", requested_by="cli"),
        m.BatchRequested(
            model="bike", batch_id="b-1", key="batches/bike/b-1/input.csv", chunk_rows=1000
        ),
        m.BatchCompleted(
            model="bike",
            batch_id="b-1",
            version=3,
            rows=1000,
            scored=998,
            refused=2,
            output_key="batches/bike/b-1.parquet",
            errors=["row 17: hum 'n/a' is not a number"],
            seconds=1.5,
        ),
    )
}
