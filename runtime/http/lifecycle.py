"""The model lifecycle over HTTP (the checks and stores are :mod:`driftline.runtime.lifecycle`'s):

    POST /v1/models                           create or change a model: its TOML spec as the body
    POST /v1/models/{name}/uploads            a CSV or Parquet file into uploads/ (ingest follows)
    POST /v1/models/{name}/retrain            a manual retrain (retrain.requested)
    POST /v1/models/{name}/versions           an ONNX model trained elsewhere, for the gate

All are writes: ``Authorization: Bearer <token>`` when ``api_token`` is set.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from driftline.runtime import lifecycle
from driftline.runtime.errors import ConfigError, ValidationError
from driftline.runtime.http.problems import ProblemError, Reason, responses
from driftline.runtime.http.shared import Publisher, read_body, spooled_body

ONNX = "application/octet-stream"


class SpecCreated(BaseModel):
    """A spec saved: a changed spec is the model's next spec version."""

    model: str
    spec_version: int = Field(description="1, 2, ...: each changed spec is a new version.")
    changed: bool = Field(description="False when this exact spec was the current one already.")
    key: str = Field(description="Object-store key of the current spec.")


class Uploaded(BaseModel):
    """A data file stored under uploads/: the upload watcher publishes dataset.uploaded."""

    model: str
    key: str
    kind: Literal["training", "feedback"]
    size: int


class RetrainAccepted(BaseModel):
    id: str = Field(description="Id of the retrain.requested event published.")
    model: str


class RetrainBody(BaseModel):
    reason: str = Field(default="", description="Why, in your words (kept with the request).")


class CandidateAccepted(BaseModel):
    """An external model checked and published as model.trained: the register function gates
    it; its run id names the outcome in ``GET /v1/models/{name}`` (a version or a rejection)."""

    id: str = Field(description="Id of the model.trained event published.")
    model: str
    run_id: str
    sha256: str
    artifact_key: str
    metrics: dict[str, float] = Field(description="Given metrics, and those measured here.")


def _raw(content_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {content_type: {"schema": schema}}}}


def _invalid(error: str) -> ProblemError:
    return ProblemError(422, error, Reason.INVALID)


def router(
    store: Any,
    registry: Any,
    publisher: Publisher,
    auth: list[Any],
    *,
    max_body_bytes: int,
    max_upload_bytes: int,
) -> APIRouter:
    api = APIRouter(tags=["lifecycle"])
    text = {"type": "string"}
    binary = {"type": "string", "format": "binary"}

    @api.post(
        "/v1/models",
        status_code=201,
        response_model=SpecCreated,
        dependencies=auth,
        responses=responses(400, 401, 413, 422),
        openapi_extra=_raw("text/plain", text),
    )
    async def create_model(request: Request) -> SpecCreated:
        """Validate a model spec (TOML text) and save it where the functions read it; a changed
        spec becomes the next spec version, every version kept under spec-history/."""
        body = await read_body(request, max_body_bytes)
        try:
            saved = await run_in_threadpool(lifecycle.save_spec, store, body.decode())
        except (ConfigError, UnicodeDecodeError) as exc:
            raise _invalid(f"spec: {exc}") from None
        return SpecCreated(
            model=saved.model, spec_version=saved.version, changed=saved.changed, key=saved.key
        )

    @api.post(
        "/v1/models/{name}/uploads",
        status_code=202,
        response_model=Uploaded,
        dependencies=auth,
        responses=responses(400, 401, 404, 413, 422),
        openapi_extra=_raw(ONNX, binary),
    )
    async def upload(
        name: str,
        request: Request,
        filename: str = Query(description="The file's name: .csv, .parquet or .pq."),
        kind: Literal["training", "feedback"] = Query(
            default="training",
            description="training: labeled rows to learn from; feedback: labeled "
            "production rows (the gate's most recent labeled data)",
        ),
    ) -> Uploaded:
        """Store a data file under uploads/<name>/: ingest validates it, and a model with no
        version yet is trained on it (the upload watcher polls every few seconds)."""
        key = lifecycle.upload_key(store, name, filename, kind)
        async with spooled_body(request, max_upload_bytes) as (path, size):
            await run_in_threadpool(store.upload, path, key)
        return Uploaded(model=name, key=key, kind=kind, size=size)

    @api.post(
        "/v1/models/{name}/retrain",
        status_code=202,
        response_model=RetrainAccepted,
        dependencies=auth,
        responses=responses(400, 401, 404, 503),
    )
    def retrain(name: str, body: RetrainBody | None = None) -> RetrainAccepted:
        """Publish retrain.requested: the retrain function trains on every labeled row
        (``trigger="manual"``), and the gate decides as for any candidate."""
        event = lifecycle.retrain_request(store, name, body.reason if body else "", "api")
        return RetrainAccepted(id=publisher.publish(event, str(uuid.uuid4())), model=name)

    @api.post(
        "/v1/models/{name}/versions",
        status_code=202,
        response_model=CandidateAccepted,
        dependencies=auth,
        responses=responses(400, 401, 404, 413, 422, 503),
        openapi_extra=_raw(ONNX, binary),
    )
    async def register(
        name: str,
        request: Request,
        metrics: str | None = Query(
            default=None, description='Its own figures, as a JSON object: {"mae": 3.1}.'
        ),
        promote: bool = Query(default=False, description="Deploy it when it passes the gate."),
        force: bool = Query(default=False, description="Register it without the gate."),
    ) -> CandidateAccepted:
        """Register an ONNX model trained elsewhere: it must load in onnxruntime and take the
        spec's features; its sha256 is recorded, its figures measured on the most recent
        labeled rows, and the register function puts it through the promotion gate against
        production (unless ``force``). No pickle: ONNX only."""
        try:
            given = lifecycle.metrics_of(metrics)
        except ValidationError as exc:
            raise _invalid(str(exc)) from None
        onnx = await read_body(request, max_upload_bytes, "max_upload_bytes")
        event = await run_in_threadpool(
            lifecycle.external_candidate,
            store,
            registry,
            name,
            onnx,
            given,
            promote=promote,
            force=force,
        )
        event_id = await run_in_threadpool(publisher.publish, event, f"external:{event.run_id}")
        return CandidateAccepted(
            id=event_id,
            model=name,
            run_id=event.run_id,
            sha256=event.sha256,
            artifact_key=event.artifact_key,
            metrics=event.metrics,
        )

    return api
