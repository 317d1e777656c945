"""Training: fit the spec's estimator, export it to ONNX, and prove the export right.

:func:`train` fits on the spec's trailing training window, holds out the most recent rows
(time-ordered), converts the fitted model with skl2onnx (one float32 input named
``input``, features in spec order, no ZipMap) and compares the ONNX predictions with
scikit-learn's on the holdout: a model whose export disagrees never leaves this module.
Only ONNX bytes come out; no pickle crosses the platform.

:func:`load_session` is the one way to open a model for scoring: it turns a corrupt file or
a model built for other features into a :class:`ValidationError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import sklearn
from onnx import ModelProto
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

from driftline.functions.ml.importance import permutation
from driftline.functions.ml.performance import loss_figures, paired_z
from driftline.functions.ml.spec import (
    METRICS,
    TIME,
    EstimatorSpec,
    ModelSpec,
    Search,
    build_estimator,
    is_worse,
    row_loss,
    score,
)
from driftline.runtime.errors import ValidationError

INPUT_NAME = "input"
"""Name of the single input tensor of every exported model."""

REGRESSION_RTOL = 1e-4
"""ONNX vs scikit-learn: relative tolerance on regression outputs (float32 arithmetic)."""
CLASS_MARGIN = 1e-3
"""A class label may differ only where scikit-learn's top two probabilities are this close."""
HELDOUT = "__heldout_prediction__"
"""Column of a training holdout: the prediction of the fit that had not seen the row."""


@dataclass(frozen=True)
class TrainResult:
    """A trained, exported and verified model, with what the registry keeps beside it."""

    onnx: bytes
    """The ONNX model."""
    sha256: str
    """sha256 of ``onnx`` (hex)."""
    metrics: dict[str, float]
    """Every task metric on the holdout."""
    holdout: pd.DataFrame
    """The most recent rows of the window (features, target, time), not trained on."""
    reference: pd.DataFrame
    """Feature sample of the training window: the drift baseline of this version."""
    n_rows: int
    """Rows trained on (the holdout excluded)."""
    train_start: datetime
    """First event time in the window."""
    train_end: datetime
    """Last event time in the window."""
    trainer: str
    """Estimator, library version and device."""
    seconds: float
    """Wall time of fit, export and check."""
    parity: dict[str, float] = field(default_factory=dict)
    """How close ONNX came to scikit-learn on the holdout (max_abs_diff or mismatches)."""
    trials: list[str] = field(default_factory=list)
    """What was tried (training windows, ``[training.search]`` trials) and its figure."""
    importance: dict[str, float] = field(default_factory=dict)
    """Permutation importance per feature on the holdout, of the fit that had not seen it."""


def signature(spec: ModelSpec) -> dict[str, Any]:
    """The input signature every model of ``spec`` has."""
    return {
        "input": INPUT_NAME,
        "dtype": "float32",
        "shape": [None, len(spec.features)],
        "features": spec.feature_names,
    }


def metric(spec: ModelSpec, y_true: Any, y_pred: Any, name: str | None = None) -> float:
    """A task metric (default: the spec's gate metric); see ``METRICS`` for which is lower-better."""
    name = name or spec.metric_name
    if name not in METRICS or METRICS[name].task != spec.task:
        raise ValidationError(f"metric {name!r} does not apply to a {spec.task} model")
    return score(name, y_true, y_pred)


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def training_window(
    spec: ModelSpec, df: pd.DataFrame, now: datetime | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """Labeled rows of the trailing training window ending at ``now`` (default: newest row).

    ``since`` (a change point) drops older rows, keeping at least ``training.min_rows``.
    """
    if TIME not in df.columns:
        raise ValidationError(
            f"training data has no {TIME!r} column: pass it through validate_frame"
        )
    end = _utc(now) if now is not None else df[TIME].max()
    start = end - timedelta(days=spec.training.days)
    rows = df[(df[TIME] > start) & (df[TIME] <= end) & df[spec.target].notna()]
    rows = rows.sort_values(TIME, kind="stable")
    if since is not None:
        recent = int((rows[TIME] >= _utc(since)).sum())
        rows = rows.iloc[-max(recent, spec.training.min_rows) :]
    return rows


class Trainer(Protocol):
    """Fits and exports one kind of model; :func:`train` does the rest (window, holdout, checks)."""

    def fit(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Any:
        """A fitted model with scikit-learn's ``predict`` (and ``predict_proba`` for classifiers)."""

    def export(self, spec: ModelSpec, model: Any) -> ModelProto:
        """The fitted model as ONNX: one float32 input named ``input``, no ZipMap."""

    def describe(self, model: Any) -> str:
        """Estimator, library version and device, for the registry's lineage."""


class SklearnTrainer:
    """The spec's scikit-learn estimator, on the CPU, exported with skl2onnx."""

    def fit(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Any:
        estimator = build_estimator(spec)
        estimator.fit(x, y)
        _float32_thresholds(estimator)
        return estimator

    def export(self, spec: ModelSpec, model: Any) -> ModelProto:
        options = {"zipmap": False} if spec.task == "classification" else None
        proto: ModelProto = to_onnx(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, len(spec.features)]))],
            options=options,
        )
        if _log_link(model):
            _append_exp(proto)
        return proto

    def describe(self, model: Any) -> str:
        return f"{type(model).__name__} (scikit-learn {sklearn.__version__}, cpu)"


def train(
    spec: ModelSpec,
    df: pd.DataFrame,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
    trainer: Trainer | None = None,
) -> TrainResult:
    """Fit, export and verify a model on the training window of ``df`` (a validated frame).

    The window is the trailing ``training.days`` up to ``now``; its most recent
    ``training.validation_fraction`` is held out. Candidate training windows compete on
    that holdout (Klinkenberg and Joachims's window selection): the trailing window, and
    longer trailing windows (``training.longer``, in multiples of ``training.days``) while
    the data reaches further back. With ``since`` (a change point) the window and its
    holdout start there (see :func:`training_window`), and the rows since the change point
    and the most recent half and quarter of them (while they hold ``training.min_rows``)
    compete too. After an abrupt change the rows since it win (older rows teach the old
    concept); when the older rows still hold (a seasonal change, or none) a longer window
    wins; in the middle of a gradual change a recent stretch wins: the data decides, not a
    guess about the kind of change.

    The winner (and the ``[training.search]`` winner on its rows) is then fitted again on
    its rows *and* the holdout (``training.refit``), so the model that ships has learned
    the most recent rows too. Its metrics, the baseline the drift check judges it by, and
    the predictions the promotion gate compares (``HELDOUT`` in the returned holdout) are
    those of the fit that had not seen the holdout: honest figures, a little pessimistic.
    ``trainer`` defaults to :class:`SklearnTrainer`; whatever fits the model, its ONNX export
    is checked the same way.
    """
    trainer = trainer or SklearnTrainer()
    started = time.perf_counter()
    window = training_window(spec, df, now, since)
    if len(window) < spec.training.min_rows:
        raise ValidationError(
            f"model {spec.name}: {len(window)} labeled rows in the last {spec.training.days:g} days, "
            f"need at least {spec.training.min_rows} (training.min_rows)"
        )
    n_hold = max(
        1,
        math.ceil(len(window) * spec.training.validation_fraction),
        min(spec.training.min_holdout_rows, len(window) // 2),
    )
    holdout = window.iloc[-n_hold:]
    candidates = _candidates(spec, df, now, since, window.iloc[:-n_hold], holdout)
    x_hold, y_hold = _features(spec, holdout), holdout[spec.target].to_numpy()
    fits = [(name, rows, _fit(spec, trainer, rows)) for name, rows in candidates.items()]
    fits = [(name, rows, est) for name, rows, est in fits if est is not None]
    if not fits:
        raise ValidationError(f"model {spec.name}: one class only in the training window")
    tried = {name: metric(spec, y_hold, est.predict(x_hold)) for name, _, est in fits}
    lower = METRICS[spec.metric_name].lower_is_better
    name, fit_rows, estimator = (min if lower else max)(fits, key=lambda f: tried[f[0]])
    trials = [
        f"{_label(spec.estimator)} on {n}: {spec.metric_name} {v:.4g}" for n, v in tried.items()
    ]
    chosen, step = list(tried).index(name), spec.estimator
    if spec.training.search is not None and isinstance(trainer, SklearnTrainer):
        estimator, chosen, step = _search(
            spec,
            trainer,
            fit_rows,
            x_hold,
            y_hold,
            (estimator, tried[name], chosen, step),
            trials,
            started,
        )
    if len(trials) > 1:
        trials[chosen] += "  <- chosen"
    heldout = estimator.predict(x_hold)
    importance = permutation(spec, estimator, x_hold, y_hold)
    used = pd.concat([fit_rows, holdout])
    if spec.training.refit:
        final = _fit(spec.model_copy(update={"estimator": step}), trainer, used)
        if final is not None:
            estimator, fit_rows = final, used
            trials.append(f"refitted on those rows and the {len(holdout)} held out")
    onnx_bytes = _with_metadata(spec, trainer.export(spec, estimator))
    expected = estimator.predict(x_hold)
    parity = _check_parity(spec, estimator, x_hold, expected, load_session(onnx_bytes, spec))
    kept = holdout[[*spec.feature_names, spec.target, TIME]].reset_index(drop=True)
    kept[HELDOUT] = heldout
    return TrainResult(
        onnx=onnx_bytes,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        metrics={
            **{n: score(n, y_hold, heldout) for n, m in METRICS.items() if m.task == spec.task},
            **loss_figures(spec.metric_name, row_loss(spec.metric_name, y_hold, heldout)),
        },
        holdout=kept,
        reference=_reference(spec, used),
        n_rows=len(fit_rows),
        train_start=used[TIME].iloc[0].to_pydatetime(),
        train_end=used[TIME].iloc[-1].to_pydatetime(),
        trainer=trainer.describe(estimator),
        seconds=time.perf_counter() - started,
        parity=parity,
        trials=trials,
        importance=importance,
    )


def _candidates(
    spec: ModelSpec,
    df: pd.DataFrame,
    now: datetime | None,
    since: datetime | None,
    rows: pd.DataFrame,
    holdout: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """The candidate training windows, by name: ``rows`` (the window before the holdout),
    then the longer trailing windows that hold more rows than the last one, then (after a
    change point) the most recent stretches of ``rows``. Each ends where the holdout starts."""
    out = {"since the change point" if since else "the trailing window": rows}
    end = now if now is not None else df[TIME].max()
    before = df[df[TIME] < holdout[TIME].iloc[0]]
    longest = len(rows)
    for days in ([spec.training.days] if since is not None else []) + [
        spec.training.days * m for m in spec.training.longer
    ]:
        longer = training_window(spec.with_days(days), before, end)
        if len(longer) > longest:
            out[f"the trailing {days:g} days"] = longer
            longest = len(longer)
    if since is not None:
        out.update(_recent_stretches(spec, rows))
    return out


def _recent_stretches(spec: ModelSpec, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The most recent half and quarter of the rows since a change point, each while it
    holds ``training.min_rows``: candidate windows of decreasing size, the best chosen on
    the holdout. When the change point fell early in a gradual change, the rows right after
    it still mix the two concepts; a shorter, more recent stretch then wins, and the
    version learns the new concept only."""
    out = {}
    for share in (2, 4):
        n = len(rows) // share
        if n < spec.training.min_rows:
            break
        part = rows.iloc[-n:]
        days = (part[TIME].iloc[-1] - part[TIME].iloc[0]).total_seconds() / 86_400
        out[f"the most recent {days:.1f} days"] = part
    return out


def _label(step: EstimatorSpec) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in sorted(step.params.items()))
    return f"{step.class_path.rpartition('.')[2]}({params})"


def _trials(spec: ModelSpec, search: Search) -> list[EstimatorSpec]:
    """The spec's estimator, each extra class, then parameter combinations (seeded order)."""
    base = spec.estimator
    out = [base]
    out += [
        EstimatorSpec.model_validate(
            {"class": s.class_path, "params": s.params, "preprocessing": base.preprocessing}
        )
        for s in search.estimators
    ]
    keys = list(search.params)
    combos = list(itertools.product(*search.params.values()))
    random.Random(search.seed).shuffle(combos)
    out += [
        base.model_copy(update={"params": {**base.params, **dict(zip(keys, c, strict=True))}})
        for c in combos
    ]
    return out[: search.max_trials]


def _search(
    spec: ModelSpec,
    trainer: Trainer,
    rows: pd.DataFrame,
    x_hold: np.ndarray,
    y_hold: np.ndarray,
    incumbent: tuple[Any, float, int, EstimatorSpec],
    trials: list[str],
    started: float,
) -> tuple[Any, int, EstimatorSpec]:
    """Fit every trial of ``[training.search]`` on ``rows``; the best on the holdout wins.

    ``incumbent`` is the estimator fitted so far, its figure, its line in ``trials`` and
    its estimator spec; ``trials`` gets one line per further trial. A trial that fails to
    fit is recorded, not fatal. Returns the winner, its line and its estimator spec.
    """
    assert spec.training.search is not None
    search, lower = spec.training.search, METRICS[spec.metric_name].lower_is_better
    best, best_value, winner, best_step = incumbent
    for step in _trials(spec, search)[1:]:
        if time.perf_counter() - started > search.budget_s:
            trials.append(f"time budget of {search.budget_s:g} s reached: no more trials")
            break
        t0 = time.perf_counter()
        try:
            est = _fit(spec.model_copy(update={"estimator": step}), trainer, rows)
        except Exception as exc:  # a bad combination of parameters: record it, go on
            trials.append(f"{_label(step)}: failed: {exc}")
            continue
        if est is None:
            continue
        value = metric(spec, y_hold, est.predict(x_hold))
        trials.append(
            f"{_label(step)}: {spec.metric_name} {value:.4g} ({time.perf_counter() - t0:.1f} s)"
        )
        if (value < best_value) if lower else (value > best_value):
            best, best_value, winner, best_step = est, value, len(trials) - 1, step
    return best, winner, best_step


def _fit(spec: ModelSpec, trainer: Trainer, rows: pd.DataFrame) -> Any:
    """The trainer's fit on ``rows``; None when a classifier would see one class only."""
    x, y = _features(spec, rows), rows[spec.target].to_numpy()
    if spec.task == "classification":
        y = y.astype(np.int64)
        if len(np.unique(y)) < 2:
            return None
    return trainer.fit(spec, x, y)


def _features(spec: ModelSpec, df: pd.DataFrame) -> np.ndarray:
    # Fit and score on float32 values: the ONNX model sees float32, so tree thresholds agree.
    return df[spec.feature_names].to_numpy(dtype=np.float32)


def _reference(spec: ModelSpec, window: pd.DataFrame) -> pd.DataFrame:
    sample = window[spec.feature_names]
    if len(sample) > spec.training.reference_rows:
        sample = sample.sample(spec.training.reference_rows, random_state=0).sort_index()
    return sample.reset_index(drop=True)


def _float32_thresholds(estimator: Any) -> None:
    """Make HistGradientBoosting split thresholds exact float32 values, rounding down.

    scikit-learn compares a float32 input with a float64 threshold; skl2onnx 1.20 rounds
    HistGradientBoosting thresholds to the *nearest* float32 (it adjusts them for other tree
    models), so an input just above a threshold can go left in ONNX and right in
    scikit-learn. For a float32 ``x``, ``x <= t`` holds exactly when ``x <= t'`` with ``t'``
    the largest float32 not above ``t``: with ``t'`` both agree, and the fitted model gives
    the same predictions on every float32 input as before.
    """
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    for stage in getattr(final, "_predictors", ()):
        for predictor in stage:
            thresholds = predictor.nodes["num_threshold"]
            nearest = thresholds.astype(np.float32)
            below = np.nextafter(nearest, np.float32(-np.inf))
            predictor.nodes["num_threshold"] = np.where(nearest > thresholds, below, nearest)


def _export(spec: ModelSpec, estimator: Any) -> bytes:
    return _with_metadata(spec, SklearnTrainer().export(spec, estimator))


def _with_metadata(spec: ModelSpec, model: ModelProto) -> bytes:
    meta = {
        "driftline.model": spec.name,
        "driftline.task": spec.task,
        "driftline.target": spec.target,
        "driftline.features": json.dumps(spec.feature_names),
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(model.SerializeToString())


def _log_link(estimator: Any) -> bool:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return type(final).__name__ == "HistGradientBoostingRegressor" and final.loss in (
        "poisson",
        "gamma",
    )


def _append_exp(model: Any) -> None:
    """skl2onnx 1.20 exports a log-link HistGradientBoostingRegressor (Poisson, gamma) without
    its inverse link: the graph yields log-predictions. Route the output through ``Exp``."""
    graph = model.graph
    final = graph.output[0].name
    raw = f"{final}_log"
    for node in graph.node:
        node.output[:] = [raw if name == final else name for name in node.output]
    graph.node.append(onnx.helper.make_node("Exp", [raw], [final], name="inverse_log_link"))


def _check_parity(
    spec: ModelSpec,
    estimator: Any,
    x: np.ndarray,
    expected: np.ndarray,
    session: ort.InferenceSession,
) -> dict[str, float]:
    got = _run(session, spec, x)
    if spec.task == "regression":
        diff = np.abs(got - expected.astype(np.float64))
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        if diff.size and float(diff.max()) > REGRESSION_RTOL * scale:
            raise ValidationError(
                f"model {spec.name}: ONNX predictions differ from scikit-learn by up to "
                f"{diff.max():.3g} on the holdout (allowed {REGRESSION_RTOL * scale:.3g}); not exported"
            )
        return {"max_abs_diff": float(diff.max(initial=0.0))}
    differ = got != expected
    if differ.any():
        proba = (
            np.sort(estimator.predict_proba(x[differ]), axis=1)
            if hasattr(estimator, "predict_proba")
            else None
        )
        if proba is None or np.any(proba[:, -1] - proba[:, -2] > CLASS_MARGIN):
            raise ValidationError(
                f"model {spec.name}: ONNX labels differ from scikit-learn on {int(differ.sum())} of "
                f"{len(x)} holdout rows; not exported"
            )
    return {"mismatches": float(differ.sum())}


def load_session(
    onnx_bytes: bytes,
    spec: ModelSpec,
    *,
    providers: list[str] | None = None,
    intra_op_threads: int = 0,
) -> ort.InferenceSession:
    """Open an ONNX model for scoring and check it takes ``spec``'s features.

    ``providers`` defaults to the CPU; ``intra_op_threads`` 0 lets onnxruntime choose.

    Raises :class:`ValidationError` for bytes that are not a loadable ONNX model and for a
    model whose input or outputs do not match the spec.
    """
    options = ort.SessionOptions()
    # Idle threads of onnxruntime's pool spin by default; beside training (OpenMP) on a
    # small machine that spinning steals the cores the fit needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(
            onnx_bytes, sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad bytes
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(
            f"model {spec.name}: not a loadable ONNX file ({first_line[:200]})"
        ) from None
    problem = _signature_problem(session, spec)
    if problem:
        raise ValidationError(f"model {spec.name}: wrong signature: {problem}")
    return session


def _signature_problem(session: ort.InferenceSession, spec: ModelSpec) -> str | None:
    inputs, n = session.get_inputs(), len(spec.features)
    if len(inputs) != 1:
        return f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}), expected one named {INPUT_NAME!r}"
    tensor = inputs[0]
    if tensor.name != INPUT_NAME or tensor.type != "tensor(float)":
        return f"input {tensor.name!r} of {tensor.type}, expected {INPUT_NAME!r} of tensor(float)"
    if len(tensor.shape) != 2 or tensor.shape[1] != n:
        return f"input shape {tensor.shape}, expected [N, {n}] for features {', '.join(spec.feature_names)}"
    stored = session.get_modelmeta().custom_metadata_map.get("driftline.features")
    if stored is not None and json.loads(stored) != spec.feature_names:
        return f"trained on features {json.loads(stored)}, the spec has {spec.feature_names}"
    outputs = [o.name for o in session.get_outputs()]
    if spec.task == "classification" and "label" not in outputs:
        return f"outputs {outputs} have no 'label' (a classifier exported without zipmap=False?)"
    return None


def _run(session: ort.InferenceSession, spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    if spec.task == "classification":
        return np.asarray(session.run(["label"], {INPUT_NAME: x})[0]).ravel()
    return np.asarray(session.run(None, {INPUT_NAME: x})[0], dtype=np.float64).ravel()


def predict(
    session: ort.InferenceSession, spec: ModelSpec, rows: pd.DataFrame | np.ndarray
) -> np.ndarray:
    """Predictions for rows (a frame with the spec's features, or an array in feature order).

    Regression gives float64 values, classification the class labels.
    """
    if isinstance(rows, pd.DataFrame):
        x = rows[spec.feature_names].to_numpy(dtype=np.float32)
    else:
        x = np.asarray(rows, dtype=np.float32).reshape(-1, len(spec.features))
    return _run(session, spec, x)


def _clearly_better(
    spec: ModelSpec, y_true: Any, candidate_pred: Any, champion_pred: Any
) -> tuple[bool, str]:
    """Whether the candidate beats production by more than ``gate.tolerance`` and beyond
    chance: production's per-row loss is higher than the candidate's on the same rows (a
    paired one-sided z-test at the drift policy's ``significance``)."""
    name = spec.metric_name
    cand = metric(spec, y_true, candidate_pred, name)
    champ = metric(spec, y_true, champion_pred, name)
    if not is_worse(name, champ, cand, spec.gate.tolerance):
        return False, f"not better by more than {spec.gate.tolerance:.0%}"
    gain, z, p = paired_z(
        row_loss(name, y_true, champion_pred), row_loss(name, y_true, candidate_pred)
    )
    alpha = spec.drift.significance
    clear = p <= alpha
    verdict = "below" if clear else "not below"
    return clear, f"paired test: loss {gain:+.4g} lower, z {z:.2f}, p {p:.3g} ({verdict} {alpha:g})"


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate."""

    passed: bool
    """The candidate becomes the next version and production."""
    metric: str
    candidate: float
    champion: float | None
    reason: str
    redeploy: int | None = None
    """An earlier version that fit the rows best: deploy it again (the candidate loses)."""
    earlier: dict[int, float] | None = None
    """Each earlier version's metric on the same rows."""


def gate(
    spec: ModelSpec,
    y_true: Any,
    candidate_pred: Any,
    champion_pred: Any | None,
    earlier: dict[int, Any] | None = None,
    *,
    challenger: bool = False,
) -> GateDecision:
    """The candidate against production, and against ``earlier`` versions (version →
    predictions), all on the same most recent labeled rows.

    The candidate wins unless something else is better than it by more than
    ``gate.tolerance`` (relative: it has seen the freshest data). When an earlier version is
    the best of all, and better than production by more than the tolerance, it is deployed
    again: a concept that returns brings its version back. No champion: the candidate passes.

    A ``challenger`` (a refresh or a scheduled challenge: production has not been found
    wanting) must do better than production by more than the tolerance, and beyond chance:
    being about as good, or better on these rows by luck, is no reason to switch.
    """
    name, tol = spec.metric_name, spec.gate.tolerance
    n = len(np.asarray(y_true))
    cand = metric(spec, y_true, candidate_pred, name)
    if champion_pred is None:
        return GateDecision(True, name, cand, None, f"no production version; {name} {cand:.4g}")
    champ = metric(spec, y_true, champion_pred, name)
    others = {v: metric(spec, y_true, p, name) for v, p in (earlier or {}).items()}
    lower = METRICS[name].lower_is_better
    best_v, best = None, champ
    for v, value in others.items():
        if (value < best) if lower else (value > best):
            best_v, best = v, value
    on = f"on the {n} most recent labeled rows (tolerance {tol:.0%})"
    tried = "".join(f", v{v} {value:.4g}" for v, value in sorted(others.items()))
    if not is_worse(name, cand, best, tol):
        if challenger:
            clear, test = _clearly_better(spec, y_true, candidate_pred, champion_pred)
            if not clear:
                reason = (
                    f"challenger {name} {cand:.4g} is not clearly better than production's "
                    f"{champ:.4g}{tried} {on}; {test}: production keeps serving"
                )
                return GateDecision(False, name, cand, champ, reason, None, others)
        reason = (
            f"candidate {name} {cand:.4g} is not worse than production's {champ:.4g}{tried} {on}"
        )
        return GateDecision(True, name, cand, champ, reason, None, others)
    if best_v is not None and is_worse(name, champ, best, tol):
        reason = (
            f"v{best_v} fits best ({name} {best:.4g}; candidate {cand:.4g}, production "
            f"{champ:.4g}{tried}) {on}: v{best_v} is deployed again"
        )
        return GateDecision(False, name, cand, champ, reason, best_v, others)
    reason = f"candidate {name} {cand:.4g} is worse than production's {champ:.4g}{tried} {on}"
    return GateDecision(False, name, cand, champ, reason, None, others)
