"""The Driftline event contract: models, Avro schemas, the wire codec, topic names, its errors."""

from __future__ import annotations

from driftline.events.codec import Codec, Envelope
from driftline.events.errors import DecodeError, SchemaError
from driftline.events.matrix import Matrix
from driftline.events.models import (
    BY_TYPE,
    EVENT_MODELS,
    BatchCompleted,
    BatchRequested,
    DatasetIngested,
    DatasetUploaded,
    DriftChecked,
    DriftDetected,
    Event,
    LabelsReceived,
    ModelDeployed,
    ModelRegistered,
    ModelRejected,
    ModelTrained,
    RetrainRequested,
    ScoreCompleted,
    ScoreRequested,
)
from driftline.events.times import RowTimes
from driftline.events.topics import DLQ_SUFFIX, EVENT_TOPICS, dlq_topic

__all__ = [
    "BY_TYPE",
    "DLQ_SUFFIX",
    "EVENT_MODELS",
    "EVENT_TOPICS",
    "BatchCompleted",
    "BatchRequested",
    "Codec",
    "DatasetIngested",
    "DatasetUploaded",
    "DecodeError",
    "DriftChecked",
    "DriftDetected",
    "Envelope",
    "Event",
    "LabelsReceived",
    "Matrix",
    "ModelDeployed",
    "ModelRegistered",
    "ModelRejected",
    "ModelTrained",
    "RetrainRequested",
    "RowTimes",
    "SchemaError",
    "ScoreCompleted",
    "ScoreRequested",
    "dlq_topic",
]
