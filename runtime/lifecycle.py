"""The model lifecycle a person drives: create from a spec, upload data, ask for a retrain,
register an ONNX model trained elsewhere. Promotion and rollback are the registry's
(:meth:`~driftline.runtime.registry.ModelEntry.promote_event`).

Each step checks its input here, writes what it must to the store and gives back the event
to publish (if any); the CLI (its own home) and the gateway (``runtime.http.lifecycle``)
both call these, so the checks and the errors are the same on both paths:

- a spec that does not validate: :class:`ConfigError`
- an unknown model, an upload that is not CSV or Parquet, an ONNX file that does not load or
  whose input is not the spec's features, no labeled rows to gate on: :class:`ValidationError`
  (:class:`UnknownModelError` for the unknown model)
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from driftline.events import ModelTrained, RetrainRequested
from driftline.functions.ml.layout import labeled_rows, load_spec, put_table, spec_key
from driftline.functions.ml.performance import loss_figures
from driftline.functions.ml.spec import METRICS, TIME, ModelSpec, row_loss, score
from driftline.functions.ml.training import load_session, predict
from driftline.runtime.errors import UnknownModelError, ValidationError
from driftline.runtime.triggers.uploads import DATA_SUFFIXES, FEEDBACK_DIR, UPLOAD_PREFIX

SPEC_HISTORY = "spec-history/"
"""Every version of every spec: ``spec-history/<model>/v<N>.toml`` (the newest is also at
``specs/<model>.toml``, where the functions read it)."""
EXTERNAL_NAMESPACE = uuid.UUID("5d0f7b0a-1f7e-4c57-9d0e-8a3c1c6f4b11")
Kind = Literal["training", "feedback"]


@dataclass(frozen=True)
class SpecSaved:
    model: str
    version: int
    changed: bool
    """False when the same spec was saved already (nothing new recorded)."""
    key: str


def save_spec(store: Any, text: str) -> SpecSaved:
    """Validate a TOML spec and save it; a changed spec becomes the model's next version."""
    spec = ModelSpec.from_toml(text)  # ConfigError naming what is wrong
    history = f"{SPEC_HISTORY}{spec.name}/"
    versions = sorted(
        int(m.group(1))
        for info in store.list(history)
        if (m := re.fullmatch(r"v(\d+)\.toml", info.key.removeprefix(history)))
    )
    key = spec_key(spec.name)
    if versions and store.exists(key) and store.get(key).decode() == text:
        return SpecSaved(spec.name, versions[-1], False, key)
    version = (versions[-1] if versions else 0) + 1
    store.put(f"{history}v{version}.toml", text.encode(), "application/toml")
    store.put(key, text.encode(), "application/toml")
    return SpecSaved(spec.name, version, True, key)


def spec_of(store: Any, model: str) -> ModelSpec:
    """The model's spec; :class:`UnknownModelError` naming the known ones when it has none."""
    if not store.exists(spec_key(model)):
        known = sorted(i.key[len("specs/") : -len(".toml")] for i in store.list("specs/"))
        raise UnknownModelError(
            f"no model named {model!r} (no spec saved; known: {known}): "
            "create it first with `driftline models create SPEC.toml`"
        )
    return load_spec(store, model)


def metrics_of(text: str | None, name: str = "metrics") -> dict[str, float]:
    """The figures a user gives with an external model (``{"r2": 0.9}``); ``name`` says
    where they came from in the error."""
    if not text:
        return {}
    try:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
        return {str(k): float(v) for k, v in found.items()}
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            f"{name} {text[:80]!r}: expected a JSON object of numbers ({exc})"
        ) from None


def upload_key(store: Any, model: str, filename: str, kind: Kind = "training") -> str:
    """Where an upload goes (``uploads/<model>/[feedback/]<time>-<file>``): the upload watcher
    turns it into ``dataset.uploaded``. Checks the model exists and the file's type."""
    spec_of(store, model)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filename.rsplit("/", 1)[-1])
    if not name.lower().endswith(DATA_SUFFIXES):
        raise ValidationError(f"upload {filename!r}: not a CSV or Parquet file ({DATA_SUFFIXES})")
    if kind not in ("training", "feedback"):
        raise ValidationError(f"upload kind {kind!r}: training or feedback")
    folder = f"{model}/{FEEDBACK_DIR}/" if kind == "feedback" else f"{model}/"
    return f"{UPLOAD_PREFIX}{folder}{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{name}"


def retrain_request(store: Any, model: str, reason: str = "", by: str = "") -> RetrainRequested:
    """The event asking the retrain function for a manual run of ``model``."""
    spec_of(store, model)
    return RetrainRequested(model=model, reason=reason, requested_by=by)


def external_candidate(
    store: Any,
    registry: Any,
    model: str,
    onnx: bytes,
    metrics: dict[str, float] | None = None,
    *,
    promote: bool = False,
    force: bool = False,
) -> ModelTrained:
    """An ONNX model trained elsewhere, checked and stored as a candidate for the register
    function's gate: it must load, take the spec's features, and there must be labeled rows
    (its holdout is the most recent of them, its reference sample drawn from them)."""
    spec = spec_of(store, model)
    session = load_session(onnx, spec)  # ValidationError: not ONNX, or the wrong input
    rows = labeled_rows(store, model)
    if rows.empty:
        raise ValidationError(
            f"model {model}: no labeled rows to check the candidate on; upload a dataset "
            "first (driftline upload FILE --model NAME)"
        )
    rows = rows.drop_duplicates(subset=[TIME, *spec.feature_names, spec.target])
    rows = rows.sort_values(TIME).reset_index(drop=True)
    n_hold = max(1, min(spec.training.min_holdout_rows, len(rows)))
    holdout = rows.iloc[-n_hold:][[*spec.feature_names, spec.target, TIME]]
    measured = _measured(spec, session, holdout)
    sha = hashlib.sha256(onnx).hexdigest()
    run_id = str(uuid.uuid5(EXTERNAL_NAMESPACE, f"{model}:{sha}:{promote}:{force}"))
    base = f"models/{model}/{run_id}"
    store.put(f"{base}/model.onnx", onnx, "application/onnx")
    put_table(store, f"{base}/holdout.parquet", holdout.reset_index(drop=True))
    reference = rows[spec.feature_names]
    if len(reference) > spec.training.reference_rows:
        reference = reference.sample(spec.training.reference_rows, random_state=0).sort_index()
    put_table(store, f"{base}/reference.parquet", reference.reset_index(drop=True))
    production = registry.production(model) if registry is not None else None
    return ModelTrained(
        model=model,
        run_id=run_id,
        artifact_key=f"{base}/model.onnx",
        sha256=sha,
        reference_key=f"{base}/reference.parquet",
        holdout_key=f"{base}/holdout.parquet",
        metrics={**(metrics or {}), **measured},
        parent_version=production.version if production else None,
        trigger="external",
        train_start=rows[TIME].iloc[0].to_pydatetime(),
        train_end=rows[TIME].iloc[-1].to_pydatetime(),
        trainer="external",
        input_signature=spec.feature_names,
        promote=promote,
        force=force,
    )


def _measured(spec: ModelSpec, session: Any, holdout: Any) -> dict[str, float]:
    """The candidate's figures on the holdout, measured here (not taken on trust): the drift
    check judges the version against them."""
    y, pred = holdout[spec.target].to_numpy(), predict(session, spec, holdout)
    return {
        **{n: score(n, y, pred) for n, m in METRICS.items() if m.task == spec.task},
        **loss_figures(spec.metric_name, row_loss(spec.metric_name, y, pred)),
    }
