"""Real-time scoring over the Open Inference Protocol (KServe v2), on the serving core.

``/v2/models/{name}/infer`` scores with the model's production version, and
``/v2/models/{name}/versions/{v}/...`` with any registered one, both through the process's
:class:`~driftline.functions.ml.serving.ModelServer` (the score function's, when it runs
here): a swap on ``model.deployed`` is one reference replaced, and a request holds the
version it started with until it answers, so no request fails during a swap.
:class:`ProductionSync` keeps the server on the registry's production alias even when no
score function runs in this process.

The model takes one FP32 tensor named ``input`` of shape ``[N, features]`` (any numeric
datatype), or one ``[N]`` tensor per feature named after it, and answers one tensor
``predict`` of shape ``[N]``. A request's ``id`` (a generated one when it has none) comes
back in the answer; every served request is captured as ``score.completed`` with that id
(:mod:`~driftline.runtime.http.capture`), so labels published later for it reach
drift-check. ``parameters.event_time`` (ISO 8601) says when the rows happened (default:
now). Errors answer as KServe and Triton do: 400 with ``{"error": ...}`` for a malformed
request, 404 for an unknown model or version, 503 when nothing can serve.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from driftline.events.codec import random_id
from driftline.events.times import micros
from driftline.functions.ml.serving import SMALL_ROWS, ModelServer, Served
from driftline.runtime.errors import DriftlineError, UnknownModelError, UnknownVersionError
from driftline.runtime.http import oip
from driftline.runtime.http.capture import Capture
from driftline.runtime.http.problems import (
    ProblemError,
    Reason,
    bad_request,
    problem_for,
    responses,
    unavailable,
)
from driftline.runtime.http.shared import read_body
from driftline.runtime.registry import Registry

log = logging.getLogger("driftline.inference")

INPUT, OUTPUT = "input", "predict"
Observe = Callable[[str, int, float], None]


class ProductionSync:
    """Moves the server to each model's production version as the registry changes."""

    def __init__(self, server: ModelServer, registry: Registry, interval_s: float = 0.25):
        self.server = server
        self.registry = registry
        self.interval_s = interval_s
        self.problems: dict[str, str] = {}
        """Models whose production version could not be loaded, with why."""
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _production(self, registry: Registry) -> dict[str, int]:
        return {
            m: p.version for m in registry.models() if (p := registry.production(m)) is not None
        }

    def sync(self) -> None:
        """Load every production version not served yet (one pass)."""
        wanted = self._production(self.registry)
        for model in wanted:
            try:
                self.server.production(model)
                self.problems.pop(model, None)
            except DriftlineError as exc:
                if self.problems.get(model) != str(exc):
                    log.error("cannot serve %s: %s", model, exc)
                self.problems[model] = str(exc)
        self._seen = wanted

    def start(self) -> None:
        """Load what is missing now, then follow the registry (again after a stop)."""
        self.sync()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="production-sync", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.registry.wait_for(
                lambda r: stop.is_set() or self._production(r) != self._seen, self.interval_s
            )
            if not stop.is_set():
                self.sync()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _output_type(served: Served) -> str:
    if served.spec.task != "classification":
        return "FP64"
    kind = {o.name: o.type for o in served.session.get_outputs()}.get("label", "")
    return "BYTES" if "string" in kind else "INT64"


def _event_time(request: oip.InferenceRequest) -> int:
    """When the request's rows happened, in microseconds since the epoch (what the capture
    carries): ``parameters.event_time`` (naive: UTC), else now."""
    value = (request.parameters or {}).get("event_time")
    if value is None:
        return time.time_ns() // 1000
    try:
        return micros(str(value))
    except ValueError:
        raise bad_request(
            f"parameters.event_time {value!r} is not an ISO 8601 time", Reason.BAD_DATA
        ) from None


_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "the binary tensor data extension",
                }
            },
        },
    }
}


class Endpoints:
    """The handlers of the /v2 routes."""

    def __init__(
        self,
        server: ModelServer,
        registry: Registry,
        sync: ProductionSync | None,
        observe: Observe | None,
        capture: Capture | None,
        max_body_bytes: int,
    ):
        self.server = server
        self.registry = registry
        self.sync = sync
        self.observe = observe
        self.capture = capture
        self.max_body_bytes = max_body_bytes
        self.version = importlib.metadata.version("driftline")

    def served(self, name: str, version: str | None = None) -> Served:
        """What serves a request: the production version, or the one asked for; a domain
        error (unknown model or version, nothing in production, a corrupt artifact) answers
        as its problem."""
        try:
            if version is None:
                return self.server.production(name)
            if not version.isdigit():
                entry = self.registry.entry(name)
                if entry is None:
                    raise UnknownModelError(name, self.registry.models())
                raise UnknownVersionError(name, version, sorted(entry.versions))
            return self.server.version(name, int(version))
        except DriftlineError as exc:
            raise problem_for(exc) from None

    def server_metadata(self) -> oip.ServerMetadata:
        return oip.ServerMetadata(
            name="driftline", version=self.version, extensions=["binary_tensor_data"]
        )

    def live(self) -> dict[str, bool]:
        return {"live": True}

    def ready(self) -> dict[str, bool]:
        problems = dict(self.sync.problems) if self.sync is not None else {}
        if problems:
            said = "; ".join(f"{m}: {p}" for m, p in sorted(problems.items()))
            raise unavailable(f"not serving: {said}", Reason.NOT_READY)
        return {"ready": True}

    def metadata(self, name: str) -> oip.ModelMetadata:
        return self._metadata(name, None)

    def version_metadata(self, name: str, version: str) -> oip.ModelMetadata:
        return self._metadata(name, version)

    def _metadata(self, name: str, version: str | None) -> oip.ModelMetadata:
        served = self.served(name, version)
        n = len(served.spec.feature_names)
        entry = self.registry.entry(name)
        return oip.ModelMetadata(
            name=name,
            versions=[str(v) for v in sorted(entry.versions if entry else [served.version])],
            platform="onnxruntime_onnx",
            inputs=[oip.TensorMetadata(name=INPUT, datatype="FP32", shape=[-1, n])],
            outputs=[oip.TensorMetadata(name=OUTPUT, datatype=_output_type(served), shape=[-1])],
            parameters={
                "version": str(served.version),
                "features": served.spec.feature_names,
                "task": served.spec.task,
            },
        )

    def model_ready(self, name: str) -> dict[str, Any]:
        return {"name": name, "version": str(self.served(name).version), "ready": True}

    def version_ready(self, name: str, version: str) -> dict[str, Any]:
        return {"name": name, "version": str(self.served(name, version).version), "ready": True}

    async def infer(self, name: str, request: Request) -> Response:
        return await self._timed(name, request, None)

    async def version_infer(self, name: str, version: str, request: Request) -> Response:
        return await self._timed(name, request, version)

    async def _timed(self, name: str, request: Request, version: str | None) -> Response:
        started, status = time.perf_counter(), 200
        try:
            return await self._infer(name, request, version)
        except ClientDisconnect:
            status = 499  # the client went before its request was read (nginx's code)
            raise
        except Exception as exc:
            status = _problem(exc).status
            raise
        finally:
            if self.observe is not None:
                unknown = (
                    status == 404 and self.registry.entry(name) is None
                )  # keeps labels bounded
                self.observe("" if unknown else name, status, time.perf_counter() - started)

    async def _infer(self, name: str, request: Request, version: str | None) -> Response:
        served = self.served(name, version)
        body = await read_body(request, self.max_body_bytes)
        req, arrays = oip.parse_request(body, request.headers.get(oip.HEADER_LENGTH))
        unknown = [o.name for o in req.outputs or () if o.name != OUTPUT]
        if unknown:
            raise bad_request(
                f"no output(s) {unknown}; this model answers {OUTPUT!r}", Reason.BAD_OUTPUTS
            )
        x = oip.features(arrays, INPUT, served.features)
        when = _event_time(req)
        if len(x) > SMALL_ROWS:  # bigger inputs off the event loop, so none stalls it
            y = await run_in_threadpool(served.predict, x)
        else:
            y = served.predict(x)
        rid = req.id or random_id()
        if self.capture is not None:
            self.capture.offer(name, rid, served.version, served.features, x, y, when)
        head = {"model_name": name, "model_version": str(served.version), "id": rid}
        content, headers = oip.encode(head, {OUTPUT: y}, oip.binary_outputs(req))
        return Response(content, headers=headers)


def router(endpoints: Endpoints) -> APIRouter:
    """The ``/v2`` endpoints (the infer routes are served by :class:`InferLane` in front
    of the app; these give them their OpenAPI document and serve them when it is absent)."""
    v2 = endpoints
    api = APIRouter(tags=["inference (Open Inference Protocol v2)"])
    get, missing = ["GET"], responses(404, 503)
    api.add_api_route("/v2", v2.server_metadata, methods=get, response_model=oip.ServerMetadata)
    api.add_api_route("/v2/health/live", v2.live, methods=get)
    api.add_api_route("/v2/health/ready", v2.ready, methods=get, responses=responses(503))
    for path, meta, ready, infer in (
        ("/v2/models/{name}", v2.metadata, v2.model_ready, v2.infer),
        (
            "/v2/models/{name}/versions/{version}",
            v2.version_metadata,
            v2.version_ready,
            v2.version_infer,
        ),
    ):
        api.add_api_route(
            path, meta, methods=get, response_model=oip.ModelMetadata, responses=missing
        )
        api.add_api_route(f"{path}/ready", ready, methods=get, responses=missing)
        api.add_api_route(
            f"{path}/infer",
            infer,
            methods=["POST"],
            response_model=oip.InferenceResponse,
            responses=responses(400, 404, 413, 422, 503),
            openapi_extra=_INFER_BODY,
        )
    return api


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class InferLane:
    """``POST .../infer`` answered straight by :class:`Endpoints`, ahead of the app.

    FastAPI's route matching over the gateway's few dozen routes, its dependency solving
    and the middleware wrapping each ``send`` cost more CPU than scoring a row does (about
    half of a request's time in a py-spy profile under load); the infer routes take no
    dependencies, so the gateway (:class:`~driftline.runtime.http.app.Gateway`) asks this
    lane first. Answers are the routes' own, errors included: a domain error as its
    problem, anything unexpected as a logged 500 problem (counted as a 500 in the metrics).
    """

    def __init__(self, endpoints: Endpoints):
        self.endpoints = endpoints

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``scope`` when it is an infer request; False (nothing sent) otherwise."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        match = _INFER_PATH.fullmatch(_route_path(scope))
        if match is None:
            return False
        name, version = match.groups()
        try:
            response = await self.endpoints._timed(name, Request(scope, receive), version)
        except ClientDisconnect:
            return True  # nobody to answer
        except Exception as exc:  # noqa: BLE001 - every error is answered, as the app would
            response = _error_response(scope, exc)
        await response(scope, receive, send)
        return True


def _route_path(scope: Scope) -> str:
    """The path the app's routes see: without the ``root_path`` a proxy prefix adds (uvicorn
    ``--root-path`` puts it in ``path`` too), as Starlette's routing strips it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return str(path[len(root) :])
    return str(path)


def _problem(exc: Exception) -> ProblemError:
    """How an error on the infer path answers: its problem (a domain error as the app's
    handlers map it), else a 500 problem."""
    if isinstance(exc, DriftlineError):
        try:
            return problem_for(exc)
        except LookupError:
            pass
    return ProblemError(500, f"internal error: {type(exc).__name__}", Reason.INTERNAL)


def _error_response(scope: Scope, exc: Exception) -> Response:
    answer = _problem(exc)
    if answer is not exc and answer.status >= 500:  # not a problem raised on purpose
        log.error("POST %s: %s", scope["path"], exc, exc_info=exc)
    return JSONResponse(answer.problem.model_dump(), answer.status, headers=answer.headers)
