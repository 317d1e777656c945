"""The HTTP gateway: how people and other systems reach a running Driftline.

    POST /v1/events/{type}           publish an event (CloudEvents binary or structured, or plain JSON)
    GET  /v1/events/tail             events as they pass, decoded, as JSON lines (runtime.http.tail)
    POST /v1/hooks/{name}            a signed webhook trigger (runtime.http.webhooks)
    POST /v1/notifications/s3        MinIO / S3 bucket notifications (runtime.triggers.notifications)
    GET  /v1/models[/{name}]         registry state: versions, aliases, lineage
    POST /v1/models/{name}/rollback  production back to the previous version
    POST /v1/models/{name}/versions/{version}/promote  a chosen version to production
    POST /v1/models[/{name}/uploads|retrain|versions]  the lifecycle (runtime.http.lifecycle)
    /v2/...                          Open Inference Protocol scoring (runtime.http.inference)
    GET  /metrics                    Prometheus metrics (runtime.http.metrics)
    GET  /ui                         the dashboard (runtime.http.ui)

Write endpoints (events, notifications, rollback, promote, the lifecycle) need ``Authorization: Bearer <token>``
when ``api_token`` is set; hooks carry their own signatures. Errors are answered as a
:class:`~driftline.runtime.http.problems.Problem`.
"""

from __future__ import annotations

import enum
import importlib.metadata
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from driftline.events.codec import Codec
from driftline.events.models import (
    BY_TYPE,
    BatchRequested,
    Event,
    ModelDeployed,
    ModelRegistered,
    ModelRejected,
)
from driftline.events.user import is_builtin
from driftline.functions.batch import output_key, summary_key
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.dlq import dead_letters, replay_dead_letters
from driftline.runtime.function import spec_of
from driftline.runtime.http import (
    cloudevents,
    inference,
    lifecycle,
    schemas,
    tail,
    ui,
    webhooks,
)
from driftline.runtime.http.capture import SOURCE as CAPTURED
from driftline.runtime.http.capture import Capture
from driftline.runtime.http.metrics import Metrics
from driftline.runtime.http.oip import InferenceRequest
from driftline.runtime.http.problems import (
    Problem,
    Reason,
    conflict,
    install_error_handlers,
    invalid,
    not_found,
    responses,
)
from driftline.runtime.http.shared import Publisher, read_body, token_dependencies
from driftline.runtime.registry import Registry
from driftline.runtime.settings import HookSettings
from driftline.runtime.triggers import notifications


class Accepted(BaseModel):
    """An event taken for publishing."""

    id: str = Field(description="The event's id (ce-id): the given one, or a new one.")
    type: str


class ModelSummary(BaseModel):
    model: str
    production: int | None
    previous: int | None
    versions: list[int]
    rejections: int


class Aliases(BaseModel):
    production: int | None
    previous: int | None


class ModelDetail(BaseModel):
    """One model: its versions with lineage (dataset versions, run, parent, metrics, sha256), aliases, history."""

    name: str
    aliases: Aliases
    versions: list[ModelRegistered]
    deployments: list[ModelDeployed]
    rejections: list[ModelRejected]


class Rollback(BaseModel):
    """A rollback or promotion accepted: the model.deployed published."""

    id: str = Field(description="Id of the model.deployed event published.")
    model: str
    version: int = Field(description="The version going to production.")
    previous_version: int | None = Field(description="The production version it replaces.")


class BatchRequest(BaseModel):
    """A batch job: score a stored CSV or Parquet file."""

    key: str = Field(description="Object-store key of the file to score.")
    batch_id: str | None = Field(default=None, description="Id of the job (default: generated).")
    version: int | None = Field(default=None, description="Version (default: production).")
    output_key: str | None = Field(
        default=None,
        description="Where the predictions go (default: batches/<model>/<id>.parquet).",
    )
    chunk_rows: int = Field(default=50_000, gt=0, description="Rows scored at a time.")


class BatchAccepted(BaseModel):
    id: str = Field(description="Id of the batch.requested event published.")
    batch_id: str
    output_key: str = Field(description="Where the predictions will be (Parquet).")
    summary_key: str = Field(description="Where batch.completed's figures will be (JSON).")


def _events(
    publisher: Publisher, auth: list[Any], max_body_bytes: int, types: Mapping[str, type[Event]]
) -> APIRouter:
    """``POST /v1/events/{type}`` for ``types``: the built-in ones and the user types of the
    functions this process hosts."""
    api = APIRouter(tags=["events"])
    known = enum.Enum("EventType", {t.replace(".", "_"): t for t in types}, type=str)  # type: ignore[misc]
    structured = {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "time": {"type": "string"},
            "data": {"type": "object"},
        },
    }
    plain = {"anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in types.values()]}

    async def publish(type: Any, request: Request) -> Accepted:  # noqa: A002 (the URL's name)
        """Publish one event: CloudEvents HTTP binary mode (ce-* headers, the data as JSON body),
        structured mode (application/cloudevents+json), or the data as plain JSON."""
        body = await read_body(request, max_body_bytes)
        incoming = cloudevents.parse(type.value, request.headers, body)
        model = types[type.value]
        try:
            event = model.model_validate(incoming.data)
        except PydanticValidationError as exc:
            raise invalid(f"{type.value} event", exc) from None
        event_id = incoming.id or str(uuid.uuid4())
        await run_in_threadpool(
            publisher.publish,
            event,
            event_id,
            source=incoming.source,
            time=incoming.time,
            traceparent=incoming.traceparent,
        )
        return Accepted(id=event_id, type=type.value)

    publish.__annotations__["type"] = known  # the path's enum: this process's types
    api.post(
        "/v1/events/{type}",
        status_code=202,
        response_model=Accepted,
        dependencies=auth,
        responses=responses(400, 401, 413, 415, 422, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": plain},
                    cloudevents.STRUCTURED: {"schema": structured},
                },
            }
        },
    )(publish)
    return api


def _models(registry: Registry, publisher: Publisher, store: Any, auth: list[Any]) -> APIRouter:
    api = APIRouter(tags=["models"])

    def entry(name: str) -> Any:
        found = registry.entry(name)
        if found is None:
            raise not_found(
                f"no model named {name!r}; known: {registry.models()}", Reason.UNKNOWN_MODEL
            )
        return found

    def registered(e: Any, version: int) -> None:
        if version not in e.versions:
            raise not_found(
                f"model {e.name} has no version {version}; registered: {sorted(e.versions)}",
                Reason.UNKNOWN_VERSION,
            )

    @api.get("/v1/models", response_model=list[ModelSummary])
    def list_models() -> list[ModelSummary]:
        """Every model with its aliases and versions."""
        return [
            ModelSummary(
                model=e.name,
                production=e.production,
                previous=e.previous,
                versions=sorted(e.versions),
                rejections=len(e.rejections),
            )
            for e in (entry(m) for m in registry.models())
        ]

    @api.get("/v1/models/{name}", response_model=ModelDetail, responses=responses(404))
    def show_model(name: str) -> ModelDetail:
        """A model's versions with lineage, its aliases, deployments and rejections."""
        e = entry(name)
        return ModelDetail(
            name=e.name,
            aliases=Aliases(production=e.production, previous=e.previous),
            versions=[v for _, v in sorted(e.versions.items())],
            deployments=list(e.deployments),
            rejections=list(e.rejections),
        )

    @api.post(
        "/v1/models/{name}/rollback",
        status_code=202,
        response_model=Rollback,
        dependencies=auth,
        responses=responses(401, 404, 409, 503),
    )
    def rollback(name: str) -> Rollback:
        """Publish model.deployed (reason rollback) for the previous version: every scorer swaps to it."""
        e = entry(name)
        event = e.rollback_event()
        if event is None:
            raise conflict(
                f"model {name} has no previous version to roll back to "
                f"(production: {e.production})",
                Reason.NO_PREVIOUS,
            )
        event_id = publisher.publish(event, str(uuid.uuid4()))
        return Rollback(
            id=event_id, model=name, version=event.version, previous_version=e.production
        )

    @api.post(
        "/v1/models/{name}/versions/{version}/promote",
        status_code=202,
        response_model=Rollback,
        dependencies=auth,
        responses=responses(401, 404, 409, 503),
    )
    def promote(name: str, version: int) -> Rollback:
        """Publish model.deployed (reason promotion) for a chosen registered version: every
        scorer swaps to it, and drift-check judges it from then on."""
        e = entry(name)
        registered(e, version)
        if version == e.production:
            raise conflict(
                f"model {name}: v{version} is production already", Reason.ALREADY_PRODUCTION
            )
        event = e.promote_event(version)
        event_id = publisher.publish(event, str(uuid.uuid4()))
        return Rollback(id=event_id, model=name, version=version, previous_version=e.production)

    @api.post(
        "/v1/models/{name}/batches",
        status_code=202,
        response_model=BatchAccepted,
        dependencies=auth,
        responses=responses(400, 401, 404, 503),
    )
    def request_batch(name: str, body: BatchRequest) -> BatchAccepted:
        """Publish batch.requested: the batch function scores the file in chunks, writes the
        predictions as Parquet and batch.completed's figures as JSON beside them."""
        e = entry(name)
        if body.version is not None:
            registered(e, body.version)
        if not store.exists(body.key):
            raise not_found(f"no object {body.key!r} in {store.uri('')}", Reason.NOT_FOUND)
        event = BatchRequested(
            model=name,
            batch_id=body.batch_id or uuid.uuid4().hex,
            **body.model_dump(exclude={"batch_id"}),
        )
        event_id = publisher.publish(event, f"batch:{event.batch_id}")
        key = output_key(event)
        return BatchAccepted(
            id=event_id, batch_id=event.batch_id, output_key=key, summary_key=summary_key(key)
        )

    return api


def _document(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add schemas the routes name by $ref, and answer 422 as a Problem everywhere."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                schemas.setdefault(name, schema)
            for operation in (op for path in doc["paths"].values() for op in path.values()):
                if "422" in operation.get("responses", {}):
                    operation["responses"]["422"]["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
            schemas.setdefault(
                "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


DLQ_READ_S = 1.0


class DeadLetters(BaseModel):
    replayed: int = Field(description="Dead-lettered events sent back to their topics.")


def _dlq(bus: Any, auth: list[Any]) -> APIRouter:
    """Dead letters over HTTP: each call reads the DLQ topics for a second (end offsets are
    not trusted), so ``driftline dlq`` works while ``driftline up`` holds the embedded bus."""
    api = APIRouter(tags=["dead letters"])

    @api.get("/v1/dlq", responses=responses(503))
    def list_dead_letters() -> list[dict[str, Any]]:
        """Dead-lettered events (up to 10,000): topic, offset, and why (the ``dlq_*`` headers)."""
        return dead_letters(bus, DLQ_READ_S)

    @api.post(
        "/v1/dlq/replay",
        response_model=DeadLetters,
        dependencies=auth,
        responses=responses(401, 503),
    )
    def replay() -> DeadLetters:
        """Send dead-lettered events back to their topics (each once, whoever replays it)."""
        return DeadLetters(replayed=replay_dead_letters(bus, DLQ_READ_S))

    return api


def _runners(view: Any, functions: Sequence[Any] | None) -> APIRouter:
    from driftline.functions import FUNCTIONS

    api = APIRouter(tags=["runners"])
    known = {f.spec.name: f.spec.gpu for f in (*FUNCTIONS, *(functions or ()))}

    @api.get("/v1/runners")
    def runners() -> dict[str, Any]:
        """Live runners (from their heartbeats), their capabilities, and per function who
        serves it, with a problem named where no live runner can."""
        from driftline.runtime.cluster.heartbeat import function_report

        return {"runners": view.snapshot(), "functions": function_report(view.runners(), known)}

    return api


def _event_types(functions: Sequence[Any]) -> dict[str, type[Event]]:
    """The built-in event types, then the user types the functions read or write."""
    types = dict(BY_TYPE)
    for f in functions:
        for model in spec_of(f).event_types:
            types.setdefault(model.TYPE, model)
    return types


class Gateway(FastAPI):
    """The gateway's app: infer requests (:class:`~driftline.runtime.http.inference.InferLane`)
    are answered before the middleware stack and the router see them; everything else,
    lifespan included, is FastAPI's."""

    lane: inference.InferLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lane is not None and await self.lane.serve(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def create_app(
    platform: Any,
    server: ModelServer,
    runner: Any = None,
    hooks: Mapping[str, HookSettings] | None = None,
    runners: Any = None,
    functions: Sequence[Any] | None = None,
) -> Gateway:
    """The gateway over an open :class:`~driftline.runtime.platform.Platform`.

    ``server`` (the serving core) should be the score function's
    (``runner.workers["score"].ctx.state``) when it runs in this process, so both score with
    the same loaded versions. Requests served on ``/v2`` are captured as ``score.completed``
    (settings ``capture_rate``, ``capture_queue``). ``runner``
    (anything with a runner's ``stats``, such as :class:`~driftline.runtime.stats.ProcessStats`)
    feeds the function metrics; ``functions`` (the process's own, user functions
    included) join the built-ins in ``/v1/runners``. Background work (keeping sessions on the production
    versions, following drift) runs while the app's lifespan does.
    """
    settings, registry = platform.settings, platform.registry
    types = _event_types(functions or ())
    platform.bus.create_topics(list(types))
    publisher = Publisher(platform.bus, Codec([t for t in types.values() if not is_builtin(t)]))
    sync = inference.ProductionSync(server, registry)
    capture = (
        Capture(
            Publisher(platform.bus, source=CAPTURED.decode()),
            rate=settings.capture_rate,
            size=settings.capture_queue,
        )
        if settings.capture_rate > 0
        else None
    )
    metrics = Metrics(registry, runner, platform.bus, capture)
    auth = token_dependencies(settings.api_token)
    limit = settings.max_body_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(
            sync.start
        )  # production versions are loaded before the first request
        metrics.start()
        if capture is not None:
            capture.start()
        try:
            yield
        finally:
            sync.stop()
            metrics.stop()
            if capture is not None:
                capture.stop()
                capture.publisher.close()
            publisher.close()

    app = Gateway(
        title="Driftline",
        version=importlib.metadata.version("driftline"),
        lifespan=lifespan,
        description=__doc__.split("\n\n")[0] if __doc__ else "",
    )
    install_error_handlers(app)
    app.state.capture = capture
    app.include_router(_events(publisher, auth, limit, types))
    app.include_router(
        webhooks.router(
            settings.hooks if hooks is None else hooks,
            publisher,
            tolerance_s=settings.webhook_tolerance_s,
            max_body_bytes=limit,
            store=platform.store,
        )
    )
    app.include_router(
        notifications.router(
            publisher,
            getattr(platform.store, "bucket", None),
            max_body_bytes=limit,
            dependencies=auth,
        )
    )
    app.include_router(_models(registry, publisher, platform.store, auth))
    app.include_router(
        lifecycle.router(
            platform.store,
            registry,
            publisher,
            auth,
            max_body_bytes=limit,
            max_upload_bytes=settings.max_upload_bytes,
        )
    )
    app.include_router(_dlq(platform.bus, auth))
    app.include_router(schemas.router(platform.bus))
    app.include_router(tail.router(platform.bus))
    v2 = inference.Endpoints(
        server, registry, sync=sync, observe=metrics.observe, capture=capture, max_body_bytes=limit
    )
    app.include_router(inference.router(v2))
    app.lane = inference.InferLane(v2)
    app.include_router(metrics.router())
    if runners is not None:  # a LiveRunners view (driftline up starts one)
        app.include_router(_runners(runners, functions))
    app.include_router(
        ui.router(
            registry,
            metrics.history,
            platform.bus,
            runners,
            runner,
            platform.store,
            token=settings.api_token is not None,
        )
    )
    _document(app, [InferenceRequest, notifications.S3Notification, *types.values()])
    return app
