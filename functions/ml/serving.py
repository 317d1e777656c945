"""The serving core: the one place that finds, loads, verifies and keeps the versions that score.

Every path that scores (the score function on the bus, the gateway's ``/v2``, batch
scoring) asks one :class:`ModelServer` per process (:func:`shared`):

- :meth:`ModelServer.production` follows the production alias: ``model.deployed`` moves it
  at once (:meth:`~ModelServer.deploy`), and the registry moves it when a process missed
  the event (a replica that lost and regained a partition);
- :meth:`ModelServer.version` serves any registered version (a few non-production ones are
  kept loaded, least recently used out);
- every load checks the artifact's sha256 and the model's input signature, on the
  process's execution providers (a GPU where there is one);
- :func:`align` puts named columns in the model's feature order;
- :meth:`Served.predict` scores a few rows on the caller's thread alone and many on
  onnxruntime's thread pool.

What can go wrong has one typed answer each, whatever the path: no such model
(:class:`UnknownModelError`), no such version (:class:`UnknownVersionError`), nothing in
production yet (:class:`NotServingError`), an artifact that is corrupt or does not fit
(:class:`CorruptModelError`). The gateway answers them 404, 404, 503 and 503; the score
function dead-letters them.

A swap replaces one reference, so a request never sees a half-loaded model, and one that
started on a version finishes on it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from driftline.functions.ml.layout import load_spec
from driftline.functions.ml.spec import ModelSpec
from driftline.functions.ml.training import load_session, predict
from driftline.runtime.errors import (
    CorruptModelError,
    NotServingError,
    ObjectNotFoundError,
    UnknownModelError,
    UnknownVersionError,
    ValidationError,
)

SMALL_ROWS = 64
"""Inputs of up to this many rows run on the calling thread alone (:meth:`Served.predict`)."""


@dataclass(frozen=True)
class Served:
    """One model version ready to score."""

    model: str
    version: int
    spec: ModelSpec
    session: Any
    """The session for small inputs: one intra-op thread (the caller's)."""
    onnx: bytes = field(repr=False)
    """The verified artifact, for the pool session made on the first large input."""
    providers: list[str] | None
    features: list[str] = field(init=False)
    """``spec.feature_names``, made once (each request aligns its inputs to them)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", self.spec.feature_names)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for rows in feature order (an empty input gives an empty answer).

        Up to :data:`SMALL_ROWS` rows run on the calling thread alone: handing a row or two
        to onnxruntime's pool and waking its threads costs more than the row does (7.5 µs a
        row alone, 12 µs through the pool, and on a loaded 2-core gateway 25 µs more CPU
        per ``/v2`` request). Larger inputs (batch chunks, bulk requests) run on the pool,
        about twice as fast on two cores.
        """
        if not len(x):
            return np.zeros(0)
        return predict(self.session if len(x) <= SMALL_ROWS else self.pool, self.spec, x)

    @cached_property
    def pool(self) -> Any:
        """The session for large inputs, on onnxruntime's thread pool (made on the first)."""
        return load_session(self.onnx, self.spec, providers=self.providers)


class ModelServer:
    """The loaded versions of every model this process serves. See the module docstring.

    ``registry`` (a :class:`~driftline.runtime.registry.Registry`) may be None for a process
    that only follows ``model.deployed``; ``providers`` are onnxruntime's execution
    providers, best first (None: the CPU); ``keep`` is how many non-production versions
    stay loaded.
    """

    def __init__(
        self,
        store: Any,
        registry: Any = None,
        providers: list[str] | None = None,
        keep: int = 4,
    ):
        self.store = store
        self.registry = registry
        self.providers = providers
        self.keep = keep
        self._production: dict[str, Served] = {}
        self._followed: dict[str, int | None] = {}
        """Per model, the registry's production version when this process last looked."""
        self._pinned: OrderedDict[tuple[str, int], Served] = OrderedDict()
        self._lock = threading.Lock()

    # --- the production alias -----------------------------------------------------------

    def deploy(self, model: str, version: int, artifact_key: str, sha256: str) -> Served:
        """Serve ``version`` as production (on ``model.deployed``); loaded before the swap."""
        self._followed[model] = self._registry_production(model)
        current = self._production.get(model)
        if current is not None and current.version == version:
            return current
        served = self._load(model, version, artifact_key, sha256)
        with self._lock:
            self._production[model] = served
        return served

    def production(self, model: str) -> Served:
        """The production version of ``model``, following the registry when it moved.

        Looking only at *changes* of the registry's alias keeps a fresh ``model.deployed``
        from being undone by a registry that has not caught up with it yet.
        """
        served = self._production.get(model)
        registry = self.registry
        current = registry.production(model) if registry is not None else None
        moved = current is not None and self._followed.get(model) != current.version
        if served is not None and not moved:
            return served
        if current is None:
            if registry is not None and registry.entry(model) is None:
                raise UnknownModelError(model, registry.models())
            raise NotServingError(f"model {model!r} has no production version yet")
        return self.deploy(model, current.version, current.artifact_key, current.sha256)

    # --- any version --------------------------------------------------------------------

    def version(self, model: str, version: int) -> Served:
        """A registered version of ``model``: the production session when it is production."""
        entry = self.registry.entry(model) if self.registry is not None else None
        if entry is None or not entry.versions:
            raise UnknownModelError(model, self.registry.models() if self.registry else [])
        registered = entry.versions.get(version)
        if registered is None:
            raise UnknownVersionError(model, version, sorted(entry.versions))
        if version == entry.production:
            return self.production(model)
        with self._lock:
            served = self._pinned.get((model, version))
            if served is not None:
                self._pinned.move_to_end((model, version))
                return served
        served = self._load(model, version, registered.artifact_key, registered.sha256)
        with self._lock:
            self._pinned[(model, version)] = served
            while len(self._pinned) > self.keep:
                self._pinned.popitem(last=False)
        return served

    # --- loading ------------------------------------------------------------------------

    def _load(self, model: str, version: int, artifact_key: str, sha256: str) -> Served:
        spec = load_spec(self.store, model)
        try:
            data = self.store.get(artifact_key)
        except ObjectNotFoundError as exc:
            raise CorruptModelError(f"model {model} v{version}: artifact is gone ({exc})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CorruptModelError(
                f"model {model} v{version}: artifact {artifact_key} has sha256 {actual[:12]}..., "
                f"the registry says {sha256[:12]}... (corrupted or replaced)"
            )
        try:
            session = load_session(data, spec, providers=self.providers, intra_op_threads=1)
        except ValidationError as exc:
            raise CorruptModelError(f"model {model} v{version}: {exc}") from None
        return Served(model, version, spec, session, data, self.providers)

    def _registry_production(self, model: str) -> int | None:
        current = self.registry.production(model) if self.registry is not None else None
        return current.version if current is not None else None


_SHARED: dict[tuple[int, int, tuple[str, ...]], ModelServer] = {}
_SHARED_LOCK = threading.Lock()


def shared(store: Any, registry: Any = None, providers: list[str] | None = None) -> ModelServer:
    """The process's one :class:`ModelServer` on ``store`` and ``registry``: the score and
    batch functions (and the gateway, which takes the score function's) ask for it, so a
    version is loaded and verified once per process whichever path scores with it."""
    key = (id(store), id(registry), tuple(providers or ()))
    with _SHARED_LOCK:
        server = _SHARED.get(key)
        if server is None or server.store is not store or server.registry is not registry:
            server = _SHARED[key] = ModelServer(store, registry, providers=providers)
        return server


def align(spec: ModelSpec, columns: list[str], x: np.ndarray) -> np.ndarray:
    """Rows ``x`` whose columns are named ``columns``, in the spec's feature order.

    Extra columns are ignored; a missing feature, or a row length that is not the number
    of names, is a :class:`ValidationError` naming what is wrong.
    """
    if x.ndim != 2 or x.shape[1] != len(columns):
        raise ValidationError(
            f"model {spec.name}: rows have {x.shape[-1] if x.ndim else 0} values but "
            f"{len(columns)} columns are named"
        )
    if columns == spec.feature_names:
        return x
    index = {c: i for i, c in enumerate(columns)}
    missing = [f for f in spec.feature_names if f not in index]
    if missing:
        raise ValidationError(
            f"model {spec.name}: feature(s) {missing} missing (expected {spec.feature_names})"
        )
    return x[:, [index[f] for f in spec.feature_names]]
