"""The event contract: one pydantic model per event type.

Each model's ``TYPE`` is its CloudEvents type and the name of the topic it travels on.
The wire schema (``schemas/<type>.avsc``) is derived from the model and checked in; a
test keeps the two in agreement. Envelope attributes (id, source, time, traceparent) are
not fields here: they travel as CloudEvents headers (see :mod:`driftline.events.codec`).

Fields only ever get added with a default, so readers with a newer schema can still read
events written with an older one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from driftline.events.matrix import Matrix
from driftline.events.times import RowTimes


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]
"""A point in time, always UTC-aware (naive inputs are taken as UTC)."""


def _one_per_row(field: str, values: RowTimes | list[str] | None, rows: int) -> None:
    if values is not None and len(values) != rows:
        what = "times" if field == "row_times" else "ids"
        raise ValueError(
            f"{field} has {len(values)} {what} for {rows} rows (give one per row, or none)"
        )


class Event(BaseModel):
    """Base of every event: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    TYPE: ClassVar[str] = ""

    model: str = Field(
        description="Name of the model (spec) this event is about; the partition key "
        "of every event but score.requested."
    )

    def partition_key(self) -> bytes:
        """The Kafka record key: a model's events share a partition, so one consumer sees them
        in order (one registry writer, one drift monitor per model)."""
        return self.model.encode()


class DatasetUploaded(Event):
    """A data file landed in the object store (upload, webhook or bucket watcher)."""

    TYPE: ClassVar[str] = "dataset.uploaded"
    key: str = Field(description="Object-store key of the uploaded file.")
    size: int = Field(default=0, description="Size in bytes, when known.")
    etag: str | None = Field(default=None, description="The store's etag, when known.")
    kind: Literal["training", "feedback"] = Field(
        default="training", description="training: labeled rows to learn from."
    )


class DatasetIngested(Event):
    """An uploaded file was validated and written as a dataset version."""

    TYPE: ClassVar[str] = "dataset.ingested"
    dataset_version: str = Field(description="Id of the dataset version written.")
    key: str = Field(description="Object-store key of the validated rows (Parquet).")
    source_key: str = Field(description="Object-store key of the uploaded file.")
    rows: int = Field(description="Rows accepted.")
    quarantined_rows: int = Field(default=0, description="Rows refused by validation.")
    quarantine_key: str | None = Field(
        default=None, description="Where refused rows and reasons went."
    )
    time_min: Timestamp | None = Field(default=None, description="Earliest event time in the rows.")
    time_max: Timestamp | None = Field(default=None, description="Latest event time in the rows.")
    initial: bool = Field(
        default=False, description="Train a first version right away if none exists."
    )


class ModelTrained(Event):
    """A candidate was trained, exported to ONNX and checked against sklearn."""

    TYPE: ClassVar[str] = "model.trained"
    run_id: str = Field(description="Id of the training run (stable for a redelivered trigger).")
    artifact_key: str = Field(description="Object-store key of the ONNX file.")
    sha256: str = Field(description="sha256 of the ONNX bytes.")
    reference_key: str = Field(description="Object-store key of the reference sample (Parquet).")
    holdout_key: str = Field(description="Object-store key of the most recent labeled holdout.")
    metrics: dict[str, float] = Field(description="Validation metrics on the holdout.")
    dataset_versions: list[str] = Field(default_factory=list, description="Datasets trained on.")
    parent_version: int | None = Field(
        default=None, description="Production version at trigger time."
    )
    trigger: str = Field(default="initial", description="initial, drift:<cause> or manual.")
    train_start: Timestamp | None = Field(default=None, description="First event time trained on.")
    train_end: Timestamp | None = Field(default=None, description="Last event time trained on.")
    rows: int = Field(default=0, description="Training rows.")
    trainer: str = Field(default="", description="Estimator and device that trained it.")
    train_seconds: float = Field(
        default=0.0,
        description="Wall seconds the run spent training (every window and trial it tried, "
        "the ONNX export and its check): its compute cost. 0: not measured.",
    )
    input_signature: list[str] = Field(default_factory=list, description="Feature names, in order.")
    trials: list[str] = Field(
        default_factory=list,
        description="What the run tried (training windows, search trials) and each one's "
        "validation figure; the chosen one is marked.",
    )
    feature_importance: dict[str, float] = Field(
        default_factory=dict,
        description="Permutation importance of each feature on the holdout (of the fit that "
        "had not seen it): how much the gate metric worsens, in its units, when the feature "
        "is shuffled (mean of a few shuffles). Empty: not computed.",
    )
    promote: bool = Field(
        default=True,
        description="Deploy the version when it passes the gate (false: register it only; "
        "``driftline models register`` without --promote).",
    )
    force: bool = Field(
        default=False,
        description="Register without the gate: a model trained elsewhere that its user "
        "vouches for (``--force``).",
    )


class ModelRegistered(Event):
    """A candidate passed the gate and became a registry version."""

    TYPE: ClassVar[str] = "model.registered"
    version: int = Field(description="Registry version number (1, 2, ...).")
    run_id: str
    artifact_key: str
    sha256: str
    reference_key: str
    metrics: dict[str, float]
    dataset_versions: list[str] = Field(default_factory=list)
    parent_version: int | None = None
    trigger: str = "initial"
    train_start: Timestamp | None = None
    train_end: Timestamp | None = None
    input_signature: list[str] = Field(default_factory=list)
    gate: str = Field(default="", description="What the promotion gate compared, in words.")


class ModelRejected(Event):
    """A candidate lost to the champion at the promotion gate, or failed its checks."""

    TYPE: ClassVar[str] = "model.rejected"
    run_id: str
    reason: str = Field(description="Why, in words a person can act on.")
    metric: str = Field(default="", description="Gate metric name.")
    candidate: float | None = Field(default=None, description="Candidate's gate metric.")
    champion: float | None = Field(default=None, description="Champion's gate metric.")


class ModelDeployed(Event):
    """A version became the production alias (promotion or rollback)."""

    TYPE: ClassVar[str] = "model.deployed"
    version: int
    artifact_key: str
    sha256: str
    previous_version: int | None = None
    reason: str = Field(
        default="promotion",
        description="promotion, rollback, or redeploy (an earlier version fit the most recent "
        "data best at the gate).",
    )
    effective_time: Timestamp | None = Field(
        default=None, description="Event time (data time) from which this version serves."
    )


class ScoreRequested(Event):
    """Rows to score with the model's production version."""

    TYPE: ClassVar[str] = "score.requested"
    request_id: str

    def partition_key(self) -> bytes:
        """Requests need no order among themselves: keyed by request id they spread over all
        partitions, so score replicas share even one model's load (a replica follows the
        registry for the version to serve, see ``functions.ml.serving.ModelServer``)."""
        return self.request_id.encode()

    columns: list[str] = Field(description="Feature names, the order of values in each row.")
    rows: Matrix = Field(
        description="Feature values, one row per list, in ``columns`` order; null: missing."
    )
    event_time: Timestamp | None = Field(default=None, description="Data time of the rows.")
    row_times: RowTimes | None = Field(
        default=None,
        description="Data time of each row, in row order, when the rows have times of their "
        "own (a batch of a stream's rows); null: every row is at ``event_time``. Packed "
        "int64 microseconds since the epoch (``events/times.py``).",
    )

    @model_validator(mode="after")
    def _row_times_fit(self) -> ScoreRequested:
        _one_per_row("row_times", self.row_times, len(self.rows))
        return self


class ScoreCompleted(Event):
    """Predictions for one request, with the version that made them."""

    TYPE: ClassVar[str] = "score.completed"
    request_id: str
    version: int
    predictions: list[float]
    columns: list[str] = Field(default_factory=list, description="Feature names of ``rows``.")
    rows: Matrix = Field(
        default_factory=lambda: Matrix([]), description="The scored features (for drift)."
    )
    event_time: Timestamp | None = None
    row_times: RowTimes | None = Field(
        default=None,
        description="The request's time per row (null: every row is at ``event_time``); "
        "drift-check files each row in the window of its own time.",
    )
    seconds: float = Field(
        default=0.0,
        description="Wall seconds the score handler spent on the request (aligning the "
        "columns and predicting): its compute cost. 0: not measured.",
    )
    row_ids: list[str] | None = Field(
        default=None,
        description="The request id of each row, when the event carries the rows of several "
        "requests (captured /v2 traffic, published in batches); labels.received joins each "
        "request by its own id. null: every row is of ``request_id``.",
    )

    @model_validator(mode="after")
    def _row_times_fit(self) -> ScoreCompleted:
        _one_per_row("row_times", self.row_times, len(self.predictions))
        _one_per_row("row_ids", self.row_ids, len(self.predictions))
        return self

    def runs(self) -> list[tuple[str, int, int]]:
        """The requests the rows belong to, in order (:func:`id_runs`); the whole event when
        it has no ``row_ids``."""
        if self.row_ids is None:
            return [(self.request_id, 0, len(self.predictions))]
        return id_runs(self.row_ids)

    def requests(self) -> list[ScoreCompleted]:
        """The event as one event per request: itself without ``row_ids``; else each of
        :meth:`runs` under its id."""
        if self.row_ids is None:
            return [self]
        out: list[ScoreCompleted] = []
        for rid, start, end in self.runs():
            times = None if self.row_times is None else RowTimes(self.row_times.micros[start:end])
            update = {
                "request_id": rid,
                "predictions": self.predictions[start:end],
                "rows": Matrix(self.rows.array[start:end]),
                "row_times": times,
                "event_time": self.event_time if times is None else times.datetimes()[0],
                "row_ids": None,
            }
            out.append(self.model_copy(update=update))
        return out


def id_runs(ids: Sequence[str]) -> list[tuple[str, int, int]]:
    """(id, first row, end row) for each run of consecutive rows of one id, in order."""
    if not ids:
        return []
    ends = [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    starts = [0, *ends]
    return [(ids[a], a, b) for a, b in zip(starts, [*ends, len(ids)], strict=True)]


class BatchRequested(Event):
    """Score a stored file (CSV or Parquet) with a model: a batch job."""

    TYPE: ClassVar[str] = "batch.requested"
    batch_id: str = Field(description="Names the job and its output; one job per id.")
    key: str = Field(description="Object-store key of the CSV or Parquet file to score.")
    version: int | None = Field(
        default=None, description="Version to score with (None: the production version)."
    )
    output_key: str | None = Field(
        default=None,
        description="Where the predictions go (Parquet); None: batches/<model>/<batch_id>.parquet.",
    )
    chunk_rows: int = Field(default=50_000, gt=0, description="Rows read and scored at a time.")

    def partition_key(self) -> bytes:
        """Jobs need no order among themselves: keyed by id they spread over the partitions."""
        return self.batch_id.encode()


class BatchCompleted(Event):
    """A batch job ended: what it scored, what it refused, where the predictions are."""

    TYPE: ClassVar[str] = "batch.completed"
    batch_id: str
    status: Literal["succeeded", "failed"] = "succeeded"
    version: int | None = Field(default=None, description="The version that scored the rows.")
    rows: int = Field(default=0, description="Rows read from the file.")
    scored: int = Field(default=0, description="Rows scored (one prediction each).")
    refused: int = Field(default=0, description="Rows left out: a value that is not a number.")
    output_key: str | None = Field(default=None, description="The predictions (Parquet).")
    errors: list[str] = Field(
        default_factory=list,
        description="Why it failed, or the first refused rows with why (a few).",
    )
    seconds: float = 0.0

    def partition_key(self) -> bytes:
        return self.batch_id.encode()


class LabelsReceived(Event):
    """Delayed ground truth for an earlier request, in row order."""

    TYPE: ClassVar[str] = "labels.received"
    request_id: str
    labels: list[float]
    event_time: Timestamp | None = None


class DriftChecked(Event):
    """Figures of one closed window, drifted or not."""

    TYPE: ClassVar[str] = "drift.checked"
    version: int
    window: str = Field(description="Window id (start of the window, ISO).")
    window_start: Timestamp
    window_end: Timestamp
    rows: int
    labeled_rows: int = 0
    drift_share: float | None = Field(default=None, description="Share of drifted features.")
    metric: str = ""
    metric_value: float | None = None
    baseline_metric: float | None = None
    drifted: bool = False
    cause: str | None = None
    detected: bool = Field(default=False, description="Whether a drift.detected was emitted.")
    report_key: str | None = Field(default=None, description="HTML report, drifted windows only.")
    loss: float | None = Field(
        default=None, description="Mean per-row loss of the labeled rows (miss rate, error)."
    )
    baseline_loss: float | None = Field(default=None, description="The version's validation loss.")
    effect: float | None = Field(
        default=None, description="loss - baseline_loss (positive: worse)."
    )
    min_effect: float | None = Field(
        default=None, description="Smallest effect that counts, in loss units."
    )
    z: float | None = Field(default=None, description="The performance test's z statistic.")
    p_value: float | None = Field(default=None, description="Its one-sided p-value.")
    detector: str | None = Field(
        default=None, description="The online change detector's state at the window's close."
    )
    probation: bool = Field(
        default=False,
        description="The first judged window of a promoted version: the register function "
        "compares it with the version it replaced and rolls back when it does clearly worse.",
    )
    reason: str = Field(default="", description="What the drift check decided, in words.")
    drifted_features: list[str] = Field(
        default_factory=list,
        description="Features whose distribution drifted, when judged one by one (drifted "
        "windows: on their data, or on their performance; see feature_drift).",
    )
    feature_drift: dict[str, float] = Field(
        default_factory=dict,
        description="Evidently's drift score of each feature, when judged one by one: a "
        "p-value (drifted below its threshold) or a distance (drifted at or above it).",
    )


class DriftDetected(Event):
    """Drift that passed every guard: triggers a retrain."""

    TYPE: ClassVar[str] = "drift.detected"
    version: int
    cause: Literal["data", "performance", "refresh"] = Field(
        description="data, performance, or refresh (a version trained from a change point "
        "retrains as the new concept's data grows, or a scheduled challenger)."
    )
    window: str
    window_end: Timestamp = Field(description="Event time of the detection: the retrain's end.")
    drift_share: float | None = None
    metric_value: float | None = None
    idempotency_key: str = Field(description="One per (model version, window).")
    change_point: Timestamp | None = Field(
        default=None, description="Estimated start of the change: the retrain learns from after it."
    )
    detector: str = Field(
        default="window",
        description="What found it: window, online (ADWIN), refresh, or schedule (a "
        "scheduled challenger, cause refresh).",
    )


class RetrainRequested(Event):
    """Someone asked for a retrain (``driftline retrain``, the API, the dashboard): the
    retrain function trains on every labeled row, recorded as ``trigger="manual"``."""

    TYPE: ClassVar[str] = "retrain.requested"
    reason: str = Field(default="", description="Why, in the requester's words.")
    requested_by: str = Field(default="", description="Who or what asked (cli, api, ui).")


EVENT_MODELS: tuple[type[Event], ...] = (
    DatasetUploaded,
    DatasetIngested,
    ModelTrained,
    ModelRegistered,
    ModelRejected,
    ModelDeployed,
    ScoreRequested,
    ScoreCompleted,
    LabelsReceived,
    DriftChecked,
    DriftDetected,
    RetrainRequested,
    BatchRequested,
    BatchCompleted,
)
"""Every event type, in loop order."""

BY_TYPE: dict[str, type[Event]] = {m.TYPE: m for m in EVENT_MODELS}
