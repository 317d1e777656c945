"""score: predictions from the production version, hot-swapped on ``model.deployed``.

Scores with the process's :class:`~driftline.functions.ml.serving.ModelServer` (the
serving core the gateway's ``/v2`` and batch scoring share): one onnxruntime session per
version, built before the swap, swapped by replacing a single reference, so a request
never sees a half-loaded model.
"""

from __future__ import annotations

import time

from driftline.events import Matrix, ModelDeployed, ScoreCompleted, ScoreRequested
from driftline.functions.ml.serving import ModelServer, align, shared
from driftline.runtime.context import Context
from driftline.runtime.function import function


def _server(ctx: Context) -> ModelServer:
    caps = ctx.capabilities
    providers = caps.scoring_providers() if caps is not None else None  # None: the CPU
    return shared(ctx.store, ctx.registry, providers=providers)


@function(
    subscribes=("score.requested", "model.deployed"),
    emits="score.completed",
    gpu="preferred",
    init=_server,
)
def score(event: ScoreRequested | ModelDeployed, ctx: Context) -> ScoreCompleted | None:
    server: ModelServer = ctx.state
    if isinstance(event, ModelDeployed):
        server.deploy(event.model, event.version, event.artifact_key, event.sha256)
        return None
    started = time.perf_counter()
    served = server.production(event.model)
    x = align(served.spec, event.columns, event.rows.array)
    predictions = served.predict(x)
    return ScoreCompleted(
        model=event.model,
        request_id=event.request_id,
        version=served.version,
        predictions=predictions.astype(float).tolist(),
        columns=served.spec.feature_names,
        rows=Matrix(x),
        event_time=event.event_time,
        row_times=event.row_times,
        seconds=round(time.perf_counter() - started, 6),
    )
