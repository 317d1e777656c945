"""register: the promotion gate, then registration and deployment, or a rejection; and
the rollback of a promoted version that does worse than the one it replaced.

The candidate's ONNX is loaded from the store, its sha256 and signature checked; it is then
compared with the production version *and* the most recent earlier versions
(``gate.history``) on the same most recent labeled rows (the candidate's holdout; the
candidate is judged by the predictions of its fit that had not seen those rows). Not
worse than the best of them within the spec's tolerance: it becomes the next version and
the production alias. When an earlier version fits best (a
concept that returned), that version is deployed again (``reason="redeploy"``) and the
candidate is rejected; otherwise ``model.rejected`` says why. A refresh or a scheduled
challenge (production was not found wanting) must beat production by more than the
tolerance and beyond chance (a paired test on the same rows). A corrupt or mismatched
artifact is rejected the same way, with the reason. A candidate marked ``force`` (a model
registered from outside with ``--force``) skips the comparison, not the artifact checks; one
marked ``promote=False`` is registered without becoming production.

On ``drift.checked`` windows marked ``probation`` (a promoted version's first judged
window) the new version and the one it replaced are scored on that window's labeled rows
(the feedback data); when the new one is worse by the drift policy's minimum effect,
beyond chance (a paired test), production rolls back to the one it replaced.

One register consumer handles all of a model's events (they share a partition), so version
numbers are assigned by a single writer per model.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from driftline.events import (
    DriftChecked,
    Event,
    ModelDeployed,
    ModelRegistered,
    ModelRejected,
    ModelTrained,
)
from driftline.functions.ml.layout import feedback_between, get_table, load_spec
from driftline.functions.ml.performance import Baseline, paired_worse
from driftline.functions.ml.spec import ModelSpec, row_loss
from driftline.functions.ml.training import HELDOUT, gate, load_session, predict
from driftline.runtime.context import Context
from driftline.runtime.errors import ObjectNotFoundError, ValidationError
from driftline.runtime.function import function

CHALLENGERS = frozenset({"refresh", "challenge"})
"""Triggers whose candidate must beat production clearly (production was not found wanting)."""


@function(
    subscribes=("model.trained", "drift.checked"),
    emits=("model.registered", "model.deployed", "model.rejected"),
)
def register(event: ModelTrained | DriftChecked, ctx: Context) -> list[Event]:
    if isinstance(event, DriftChecked):
        return _probation(ctx, event)
    known = _registered_run(ctx, event)
    if known is not None:  # a redelivered trigger: say the same thing again
        return known
    spec = load_spec(ctx.store, event.model)
    try:
        candidate = _load_checked(ctx, spec, event.artifact_key, event.sha256)
    except (ValidationError, ObjectNotFoundError) as exc:
        return [ModelRejected(model=event.model, run_id=event.run_id, reason=str(exc))]
    holdout = get_table(ctx.store, event.holdout_key)
    registry = ctx.registry
    champion = registry.production(event.model) if registry is not None else None
    champion_pred, earlier = None, {}
    if champion is not None:
        champion_pred = predict(
            _load_checked(ctx, spec, champion.artifact_key, champion.sha256), spec, holdout
        )
        earlier = _earlier_predictions(ctx, spec, champion.version, holdout)
    y = holdout[spec.target].to_numpy()
    # The candidate's figure is its held-out one (the fit that had not seen these rows; the
    # shipped model was refitted on them); holdouts saved before refitting have no column.
    candidate_pred = (
        holdout[HELDOUT].to_numpy()
        if HELDOUT in holdout.columns
        else predict(candidate, spec, holdout)
    )
    decision = gate(
        spec, y, candidate_pred, champion_pred, earlier, challenger=event.trigger in CHALLENGERS
    )
    if event.force:
        decision = replace(
            decision, passed=True, redeploy=None, reason=f"forced ({decision.reason})"
        )
    if not decision.passed:
        rejected = ModelRejected(
            model=event.model,
            run_id=event.run_id,
            reason=decision.reason,
            metric=decision.metric,
            candidate=decision.candidate,
            champion=decision.champion,
        )
        if decision.redeploy is None or champion is None:
            return [rejected]
        return [
            rejected,
            _deploy(
                ctx, event.model, decision.redeploy, champion.version, "redeploy", event.train_end
            ),
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
    outputs: list[Event] = [registered, deployed] if event.promote else [registered]
    if registry is not None:  # our own next decision must see this one at once
        for output in outputs:
            registry.apply(output)
    return outputs


def _earlier_predictions(
    ctx: Context, spec: ModelSpec, production: int, holdout: Any
) -> dict[int, Any]:
    """Predictions of the most recent earlier versions (``gate.history``); a version whose
    artifact is gone or corrupt just does not compete."""
    entry = ctx.registry.entry(spec.name) if ctx.registry is not None else None
    if entry is None or spec.gate.history == 0:
        return {}
    versions = sorted((v for v in entry.versions if v != production), reverse=True)[
        : spec.gate.history
    ]
    out = {}
    for v in versions:
        reg = entry.versions[v]
        try:
            out[v] = predict(_load_checked(ctx, spec, reg.artifact_key, reg.sha256), spec, holdout)
        except (ValidationError, ObjectNotFoundError) as exc:
            ctx.log.warning("%s v%d left out of the gate: %s", spec.name, v, exc)
    return out


def _deploy(
    ctx: Context, model: str, version: int, previous: int, reason: str, when: Any
) -> ModelDeployed:
    target = ctx.registry.version(model, version)
    deployed = ModelDeployed(
        model=model,
        version=version,
        artifact_key=target.artifact_key,
        sha256=target.sha256,
        previous_version=previous,
        reason=reason,
        effective_time=when,
    )
    ctx.registry.apply(deployed)
    return deployed


def _probation(ctx: Context, event: DriftChecked) -> list[Event]:
    """Roll back a promoted version that does clearly worse than the one it replaced."""
    if not event.probation or ctx.registry is None:
        return []
    spec = load_spec(ctx.store, event.model)
    entry = ctx.registry.entry(event.model)
    if not spec.gate.rollback or entry is None or entry.production != event.version:
        return []  # switched off, or production moved on since (a redelivered window)
    deploy = next((d for d in reversed(entry.deployments) if d.version == event.version), None)
    if deploy is None or deploy.reason != "promotion" or deploy.previous_version is None:
        return []
    new, old = entry.versions[event.version], entry.versions.get(deploy.previous_version)
    if old is None:
        return []
    rows = feedback_between(
        ctx.store, event.model, deploy.effective_time or event.window_start, event.window_end
    )
    if len(rows) < spec.drift.min_labeled_rows:
        return []
    y = rows[spec.target].to_numpy()
    try:
        losses = [
            row_loss(
                spec.metric_name,
                y,
                predict(_load_checked(ctx, spec, v.artifact_key, v.sha256), spec, rows),
            )
            for v in (new, old)
        ]
    except (ValidationError, ObjectNotFoundError) as exc:  # no artifact to compare: keep serving
        ctx.log.warning("%s v%d probation skipped: %s", event.model, event.version, exc)
        return []
    base = Baseline.from_metrics(spec.metric_name, old.metrics)
    worse, why = paired_worse(losses[0], losses[1], spec.drift, spec.task, base)
    ctx.log.info("%s v%d probation on %d rows: %s", event.model, event.version, len(rows), why)
    if not worse:
        return []
    return [_deploy(ctx, event.model, old.version, new.version, "rollback", event.window_end)]


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
