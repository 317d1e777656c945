"""score: predictions from the production version, hot-swapped on ``model.deployed``.

One onnxruntime session per model version, built once (in the init hook's cache) and
swapped by replacing a single reference, so a request never sees a half-loaded model.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.events import Matrix, ModelDeployed, ScoreCompleted, ScoreRequested
from driftline.functions.ml.layout import load_spec
from driftline.functions.ml.spec import ModelSpec
from driftline.functions.ml.training import load_session, predict
from driftline.runtime.context import Context
from driftline.runtime.errors import PermanentError, ValidationError
from driftline.runtime.function import function


@dataclass(frozen=True)
class Served:
    """One model version ready to score."""

    version: int
    spec: ModelSpec
    session: Any


class Sessions:
    """The served version of each model; shared by the score function and the HTTP edge.

    ``model.deployed`` moves a model's session (:meth:`deploy`), but with replicas a process
    only reads the partitions its group gives it: a replica that held a model's partition,
    lost it in a rebalance and got it back has missed the deployments in between. So
    :meth:`get` also follows the registry: when the registry's production version of a model
    has changed since this process last looked, that version is served. Looking only at
    *changes* keeps a fresh ``model.deployed`` from being undone by a registry that has not
    caught up with it yet.
    """

    def __init__(self, store: Any, registry: Any = None, providers: list[str] | None = None):
        self.store = store
        self.registry = registry
        self.providers = providers
        """onnxruntime execution providers, best first (default: the CPU)."""
        self._served: dict[str, Served] = {}
        self._followed: dict[str, int | None] = {}
        """Per model, the registry's production version when this process last looked."""
        self._lock = threading.Lock()

    def deploy(self, model: str, version: int, artifact_key: str, sha256: str) -> Served:
        self._followed[model] = self._production_version(model)
        current = self._served.get(model)
        if current is not None and current.version == version:
            return current
        spec = load_spec(self.store, model)
        data = self.store.get(artifact_key)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValidationError(
                f"model {model} v{version}: artifact {artifact_key} does not match its sha256"
            )
        session = load_session(data, spec, providers=self.providers)  # built before the swap
        served = Served(version, spec, session)
        with self._lock:
            self._served[model] = served
        return served

    def get(self, model: str) -> Served:
        served = self._served.get(model)
        production = self.registry.production(model) if self.registry is not None else None
        moved = production is not None and self._followed.get(model) != production.version
        if served is not None and not moved:
            return served
        if production is None:
            raise PermanentError(
                f"model {model!r} has no production version yet; nothing can score it"
            )
        return self.deploy(model, production.version, production.artifact_key, production.sha256)

    def _production_version(self, model: str) -> int | None:
        production = self.registry.production(model) if self.registry is not None else None
        return production.version if production is not None else None


def matrix(spec: ModelSpec, columns: list[str], rows: Matrix) -> np.ndarray:
    """Rows as an array in the spec's feature order; missing features are an error."""
    x = rows.array
    if x.shape[1] != len(columns):
        raise ValidationError(
            f"model {spec.name}: rows have {x.shape[1]} values but {len(columns)} columns are named"
        )
    if columns == spec.feature_names:
        return x
    index = {c: i for i, c in enumerate(columns)}
    missing = [f for f in spec.feature_names if f not in index]
    if missing:
        raise ValidationError(
            f"model {spec.name}: feature(s) {missing} missing from the request "
            f"(expected {spec.feature_names})"
        )
    return x[:, [index[f] for f in spec.feature_names]]


def _sessions(ctx: Context) -> Sessions:
    caps = ctx.capabilities
    providers = caps.scoring_providers() if caps is not None else None  # None: the CPU
    return Sessions(ctx.store, ctx.registry, providers=providers)


@function(
    subscribes=("score.requested", "model.deployed"),
    emits="score.completed",
    gpu="preferred",
    init=_sessions,
)
def score(event: ScoreRequested | ModelDeployed, ctx: Context) -> ScoreCompleted | None:
    sessions: Sessions = ctx.state
    if isinstance(event, ModelDeployed):
        sessions.deploy(event.model, event.version, event.artifact_key, event.sha256)
        return None
    served = sessions.get(event.model)
    x = matrix(served.spec, event.columns, event.rows)
    predictions = predict(served.session, served.spec, x) if len(x) else np.zeros(0)
    return ScoreCompleted(
        model=event.model,
        request_id=event.request_id,
        version=served.version,
        predictions=predictions.astype(float).tolist(),
        columns=served.spec.feature_names,
        rows=Matrix(x),
        event_time=event.event_time,
    )
