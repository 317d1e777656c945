"""Real-time scoring over the Open Inference Protocol (KServe v2), with the score function's sessions.

``/v2/models/{name}/infer`` scores with the model's production version: the same
:class:`~driftline.functions.score.Sessions` the score function uses, so a swap on
``model.deployed`` is one reference replaced, and a request holds the version it started
with until it answers: no request fails during a swap. :class:`SessionSync` keeps the
sessions on the registry's production alias even when no score function runs in this
process. ``/v2/models/{name}/versions/{v}/...`` serves any registered version (a few
non-production ones are kept loaded, least recently used first out).

The model takes one FP32 tensor named ``input`` of shape ``[N, features]`` (any numeric
datatype and name are accepted; so is one ``[N]`` tensor per feature, named after it) and
answers one tensor ``predict`` of shape ``[N]``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from driftline.functions.ml.layout import load_spec
from driftline.functions.ml.training import load_session, predict
from driftline.functions.score import Served, Sessions
from driftline.runtime.errors import DriftlineError
from driftline.runtime.http import oip
from driftline.runtime.http.problems import (
    ProblemError,
    Reason,
    bad_request,
    not_found,
    responses,
    unavailable,
)
from driftline.runtime.http.shared import read_body
from driftline.runtime.registry import Registry

log = logging.getLogger("driftline.inference")

INPUT, OUTPUT = "input", "predict"
INLINE_ROWS = 64
"""Bigger batches are scored on a worker thread, so one never stalls the event loop."""
Observe = Callable[[str, int, float], None]


class SessionSync:
    """Moves the sessions to each model's production version as the registry changes."""

    def __init__(self, sessions: Sessions, registry: Registry, interval_s: float = 0.25):
        self.sessions = sessions
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
        for model, version in wanted.items():
            target = self.registry.version(model, version)
            if target is None:
                continue
            try:
                if self.sessions.get(model).version != version:
                    self.sessions.deploy(model, version, target.artifact_key, target.sha256)
                self.problems.pop(model, None)
            except DriftlineError as exc:
                if self.problems.get(model) != str(exc):
                    log.error("cannot serve %s v%d: %s", model, version, exc)
                self.problems[model] = str(exc)
        self._seen = wanted

    def start(self) -> None:
        """Load what is missing now, then follow the registry (again after a stop)."""
        self.sync()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="session-sync", daemon=True
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


class _Pinned:
    """Sessions of non-production versions asked for by number; a few, least recently used out."""

    def __init__(self, store: Any, size: int = 4):
        self.store = store
        self.size = size
        self._loaded: OrderedDict[tuple[str, int], Served] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, version: int, artifact_key: str, sha256: str) -> Served:
        with self._lock:
            if (model, version) in self._loaded:
                self._loaded.move_to_end((model, version))
                return self._loaded[(model, version)]
        data = self.store.get(artifact_key)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise unavailable(
                f"model {model} v{version}: artifact does not match its sha256", Reason.CORRUPT
            )
        spec = load_spec(self.store, model)
        served = Served(version, spec, load_session(data, spec))
        with self._lock:
            self._loaded[(model, version)] = served
            while len(self._loaded) > self.size:
                self._loaded.popitem(last=False)
        return served


def _output_type(served: Served) -> str:
    if served.spec.task != "classification":
        return "FP64"
    kind = {o.name: o.type for o in served.session.get_outputs()}.get("label", "")
    return "BYTES" if "string" in kind else "INT64"


class _Models:
    """Finds what serves a request: the production session, or a pinned version."""

    def __init__(self, sessions: Sessions, registry: Registry, sync: SessionSync | None):
        self.sessions = sessions
        self.registry = registry
        self.sync = sync
        self.pinned = _Pinned(sessions.store)

    def entry(self, name: str) -> Any:
        entry = self.registry.entry(name)
        if entry is None or not entry.versions:
            raise not_found(
                f"no model named {name!r}; known: {self.registry.models()}", Reason.UNKNOWN_MODEL
            )
        return entry

    def served(self, name: str, version: str | None = None) -> Served:
        entry = self.entry(name)
        if version is not None:
            number = int(version) if version.isdigit() else -1
            registered = entry.versions.get(number)
            if registered is None:
                raise not_found(
                    f"model {name} has no version {version!r}; registered: "
                    f"{sorted(entry.versions)}",
                    Reason.UNKNOWN_VERSION,
                )
            if number != entry.production:
                return self.pinned.get(name, number, registered.artifact_key, registered.sha256)
        if entry.production is None:
            raise unavailable(f"model {name} has no production version yet", Reason.NOT_READY)
        try:
            return self.sessions.get(name)
        except DriftlineError as exc:
            raise unavailable(
                f"model {name} v{entry.production} cannot be loaded: {exc}", Reason.NOT_READY
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


class _Endpoints(_Models):
    """The handlers of the /v2 routes."""

    def __init__(
        self,
        sessions: Sessions,
        registry: Registry,
        sync: SessionSync | None,
        observe: Observe | None,
        max_body_bytes: int,
    ):
        super().__init__(sessions, registry, sync)
        self.observe = observe
        self.max_body_bytes = max_body_bytes
        self.version = importlib.metadata.version("driftline")

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
        return oip.ModelMetadata(
            name=name,
            versions=[str(v) for v in sorted(self.entry(name).versions)],
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
        except ProblemError as exc:
            status = exc.status
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
        x = oip.features(arrays, served.spec.feature_names)
        if len(x) > INLINE_ROWS:
            y = await run_in_threadpool(predict, served.session, served.spec, x)
        else:
            y = predict(served.session, served.spec, x)
        head = {"model_name": name, "model_version": str(served.version), "id": req.id}
        content, headers = oip.encode(head, {OUTPUT: y}, oip.binary_outputs(req))
        return Response(content, headers=headers)


def router(
    sessions: Sessions,
    registry: Registry,
    *,
    sync: SessionSync | None = None,
    observe: Observe | None = None,
    max_body_bytes: int = 1_048_576,
) -> APIRouter:
    """The ``/v2`` endpoints."""
    v2 = _Endpoints(sessions, registry, sync, observe, max_body_bytes)
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
