"""register: the promotion gate, then registration and deployment, or a rejection.

The candidate's ONNX is loaded from the store, its sha256 and signature checked; it is then
compared with the production version on the same most recent labeled rows (the candidate's
holdout, which it was not trained on). Not worse within the spec's tolerance: it becomes
the next version and the production alias; otherwise ``model.rejected`` says why. A
corrupt or mismatched artifact is rejected the same way, with the reason.

One register consumer handles all of a model's events (they share a partition), so version
numbers are assigned by a single writer per model.
"""

from __future__ import annotations

import hashlib

from driftline.events import Event, ModelDeployed, ModelRegistered, ModelRejected, ModelTrained
from driftline.functions.ml.layout import get_table, load_spec
from driftline.functions.ml.spec import ModelSpec
from driftline.functions.ml.training import gate, load_session, predict
from driftline.runtime.context import Context
from driftline.runtime.errors import ObjectNotFoundError, ValidationError
from driftline.runtime.function import function


@function(
    subscribes="model.trained", emits=("model.registered", "model.deployed", "model.rejected")
)
def register(event: ModelTrained, ctx: Context) -> list[Event]:
    registry = ctx.registry
    known = _registered_run(ctx, event)
    if known is not None:  # a redelivered trigger: say the same thing again
        return known
    spec = load_spec(ctx.store, event.model)
    try:
        candidate = _load_checked(ctx, spec, event.artifact_key, event.sha256)
    except (ValidationError, ObjectNotFoundError) as exc:
        return [ModelRejected(model=event.model, run_id=event.run_id, reason=str(exc))]
    holdout = get_table(ctx.store, event.holdout_key)
    champion = registry.production(event.model) if registry is not None else None
    champion_pred = None
    if champion is not None:
        champion_session = _load_checked(ctx, spec, champion.artifact_key, champion.sha256)
        champion_pred = predict(champion_session, spec, holdout)
    decision = gate(
        spec, holdout[spec.target].to_numpy(), predict(candidate, spec, holdout), champion_pred
    )
    if not decision.passed:
        return [
            ModelRejected(
                model=event.model,
                run_id=event.run_id,
                reason=decision.reason,
                metric=decision.metric,
                candidate=decision.candidate,
                champion=decision.champion,
            )
        ]
    version = registry.next_version(event.model) if registry is not None else 1
    registered = ModelRegistered(
        model=event.model,
        version=version,
        run_id=event.run_id,
        artifact_key=event.artifact_key,
        sha256=event.sha256,
        reference_key=event.reference_key,
        metrics=event.metrics,
        dataset_versions=event.dataset_versions,
        parent_version=champion.version if champion else None,
        trigger=event.trigger,
        train_start=event.train_start,
        train_end=event.train_end,
        input_signature=event.input_signature,
        gate=decision.reason,
    )
    deployed = ModelDeployed(
        model=event.model,
        version=version,
        artifact_key=event.artifact_key,
        sha256=event.sha256,
        previous_version=champion.version if champion else None,
        effective_time=event.train_end,
    )
    if registry is not None:  # our own next decision must see this one at once
        registry.apply(registered)
        registry.apply(deployed)
    return [registered, deployed]


def _registered_run(ctx: Context, event: ModelTrained) -> list[Event] | None:
    entry = ctx.registry.entry(event.model) if ctx.registry is not None else None
    if entry is None:
        return None
    for version in entry.versions.values():
        if version.run_id == event.run_id:
            deployed = next((d for d in entry.deployments if d.version == version.version), None)
            return [version, deployed] if deployed else [version]
    for rejection in entry.rejections:
        if rejection.run_id == event.run_id:
            return [rejection]
    return None


def _load_checked(ctx: Context, spec: ModelSpec, key: str, sha256: str):  # type: ignore[no-untyped-def]
    data = ctx.store.get(key)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValidationError(
            f"model {spec.name}: artifact {ctx.store.uri(key)} has sha256 {actual[:12]}..., "
            f"the event says {sha256[:12]}... (corrupted or replaced)"
        )
    return load_session(data, spec)
