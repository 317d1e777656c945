"""The dashboard's routes: three pages under ``/ui`` and their static files.

    GET /ui                 models: production version, since when, last window checked
    GET /ui/models/{name}   a model: monitoring chart, versions, training runs, deploys,
                            rejections, rollback
    GET /ui/platform        live runners, who serves each function, function stats, the DLQ
    GET /ui/reports/{model}/{file}  a drifted window's Evidently report, from the store
    GET /ui/static/{file}   the page script and style, and plotly.js from the installed plotly

Pages are rendered on the server and read-only; their script refreshes them every few
seconds and sends the actions (rollback, DLQ replay) to the JSON API with the bearer token
typed into the page, so the API's own checks decide. Nothing is fetched from elsewhere.
"""

from __future__ import annotations

import importlib.metadata
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from driftline.runtime.dlq import dead_letters
from driftline.runtime.errors import ObjectNotFoundError
from driftline.runtime.http.history import KEEP, History
from driftline.runtime.http.problems import Reason, not_found
from driftline.runtime.http.ui import charts, views
from driftline.runtime.registry import Registry
from driftline.runtime.store import ObjectStore

HERE = Path(__file__).resolve().parent
REFRESH_S = 5
DLQ_READ_S = 0.5
"""How long the platform page reads the dead-letter topics (their end offsets are not trusted)."""
_STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def router(
    registry: Registry,
    history: History | None,
    bus: Any,
    runners: Any,
    runner: Any,
    store: ObjectStore,
    *,
    token: bool,
) -> APIRouter:
    """The dashboard over the gateway's registry, event history, bus and runner views.
    ``token``: whether actions need a bearer token (the page then asks for one)."""
    api = APIRouter(include_in_schema=False)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(when=_when, num=_num)
    common = {
        "refresh_s": REFRESH_S,
        "token_required": token,
        "plotly_version": importlib.metadata.version("plotly"),  # a new one is fetched anew
    }

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {**common, **context})

    @api.get("/ui")
    def models_page(request: Request) -> HTMLResponse:
        return page(request, "models.html", models=views.models(registry, history), tab="models")

    @api.get("/ui/models/{name}")
    def model_page(request: Request, name: str) -> HTMLResponse:
        entry = registry.entry(name)
        if entry is None:
            raise not_found(
                f"no model named {name!r}; known: {registry.models()}", Reason.UNKNOWN_MODEL
            )
        checked = views.windows(history, name)
        figure = charts.monitoring(
            name, checked, views.detections(history, name), entry.deployments
        )
        metric = next((w.metric for w in reversed(checked) if w.metric), "metric")
        weights = views.importance(entry, history)
        drift = charts.features(*views.features(checked, weights, entry.production), metric)
        return page(
            request,
            "model.html",
            model=views.model(entry, history),
            figure=figure,
            features=drift if weights or any(w.feature_drift for w in checked) else None,
            keep=KEEP,
            tab="models",
        )

    @api.get("/ui/platform")
    def platform_page(request: Request) -> HTMLResponse:
        data = views.platform(runners, runner, dead_letters(bus, DLQ_READ_S))
        return page(request, "platform.html", tab="platform", **data)

    @api.get("/ui/reports/{model}/{file:path}")
    def report(model: str, file: str) -> HTMLResponse:
        key = f"reports/{model}/{file}"
        if not file.endswith(".html") or ".." in key.split("/"):
            raise not_found(f"no report {key!r}: reports are HTML under reports/", Reason.NOT_FOUND)
        try:
            return HTMLResponse(store.get(key))
        except ObjectNotFoundError:
            raise not_found(f"no report {key!r} in the store", Reason.NOT_FOUND) from None

    @api.get("/ui/")
    def slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    @api.get("/ui/static/{file}")
    def static(file: str) -> Response:
        if file == "plotly.min.js":
            return FileResponse(charts.plotly_js(), media_type="text/javascript", headers=_CACHE)
        if file not in _STATIC:
            raise not_found(f"no dashboard file {file!r}", Reason.NOT_FOUND)
        return FileResponse(HERE / "static" / file, media_type=_STATIC[file])

    return api


_CACHE = {"cache-control": "public, max-age=86400"}


def _when(t: datetime | None) -> str:
    return "—" if t is None else f"{t:%Y-%m-%d %H:%M}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"
