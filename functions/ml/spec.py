"""The model spec: what a model is, read from a small TOML file.

A spec names the task, the target, the features (in the order the ONNX input takes them),
the time column, the scikit-learn estimator, the training window, the drift policy and the
promotion gate. Nothing here is specific to one data set. Example::

    name = "bike-sharing"
    task = "regression"
    target = "cnt"
    features = ["hr", "temp", {name = "weathersit", kind = "numeric"}]

    [time]
    column = "dteday"
    format = "%d/%m/%y"
    hour_column = "hr"

    [estimator]
    class = "sklearn.ensemble.HistGradientBoostingRegressor"
    params = { max_iter = 200 }

:func:`validate_frame` turns a raw table into rows the spec accepts (with the parsed event
time in :data:`TIME`) and rows it refuses (with a ``reason``). The task metrics live here
too, numpy only, so the drift monitor can use them without importing the trainer.
"""

from __future__ import annotations

import importlib
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from driftline.runtime.errors import ConfigError, ValidationError

TIME = "__time__"
"""Column that :func:`validate_frame` adds: the parsed event time (UTC-aware)."""

Task = Literal["regression", "classification"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


# --- metrics -----------------------------------------------------------------------------


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p))


def _f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    scores = []
    for label in np.unique(np.concatenate([y, p])):
        tp = np.sum((p == label) & (y == label))
        denom = np.sum(p == label) + np.sum(y == label)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def _abs_error(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.abs(y - p)


def _sq_error(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (y - p) ** 2


def _miss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (y != p).astype(np.float64)


@dataclass(frozen=True)
class Metric:
    """A task metric, which way is better, and the per-row loss behind it.

    The loss is what performance drift tests: its mean over a window against the version's
    validation loss. For ``mae`` it is the absolute error (its mean *is* the metric), for
    ``rmse`` the squared error, for the classification metrics a miss (0 or 1; its mean is the
    error rate, one minus accuracy).
    """

    name: str
    task: Task
    lower_is_better: bool
    fn: Callable[[np.ndarray, np.ndarray], float]
    loss: Callable[[np.ndarray, np.ndarray], np.ndarray]


METRICS: dict[str, Metric] = {
    "mae": Metric("mae", "regression", True, _mae, _abs_error),
    "rmse": Metric("rmse", "regression", True, _rmse, _sq_error),
    "accuracy": Metric("accuracy", "classification", False, _accuracy, _miss),
    # macro-averaged over labels; its row loss is a miss, like accuracy's
    "f1": Metric("f1", "classification", False, _f1_macro, _miss),
}
DEFAULT_METRIC: dict[str, str] = {"regression": "mae", "classification": "accuracy"}


def score(name: str, y_true: Any, y_pred: Any) -> float:
    """The metric ``name`` of predictions against true values (NaN for no rows)."""
    y, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(y) != len(p):
        raise ValidationError(f"metric {name}: {len(y)} true values but {len(p)} predictions")
    if len(y) == 0:
        return math.nan
    if METRICS[name].task == "regression":
        y, p = y.astype(np.float64), p.astype(np.float64)
    return METRICS[name].fn(y, p)


def is_worse(name: str, value: float, baseline: float, tolerance: float) -> bool:
    """Whether ``value`` is worse than ``baseline`` by more than ``tolerance`` (relative).

    For a lower-is-better metric that is ``value > baseline * (1 + tolerance)``; for a
    higher-is-better one ``value < baseline * (1 - tolerance)``. NaNs are never worse.
    """
    if math.isnan(value) or math.isnan(baseline):
        return False
    if METRICS[name].lower_is_better:
        return value > baseline * (1.0 + tolerance)
    return value < baseline * (1.0 - tolerance)


def row_loss(name: str, y_true: Any, y_pred: Any) -> np.ndarray:
    """The per-row loss of metric ``name`` (see :class:`Metric`), as float64."""
    y, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if METRICS[name].task == "regression":
        y, p = y.astype(np.float64), p.astype(np.float64)
    return METRICS[name].loss(y, p)


# --- spec parts --------------------------------------------------------------------------


class Feature(BaseModel):
    """One model input column."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    """Column name in the data."""
    kind: Literal["numeric", "categorical"] = "numeric"
    """Only ``numeric`` is supported: the ONNX model takes one float32 tensor."""

    @field_validator("kind")
    @classmethod
    def _numeric_only(cls, kind: str) -> str:
        if kind == "categorical":
            raise ValueError(
                "categorical features are not supported: models are exported to ONNX with a "
                "single float32 input; encode the column as numbers (integer codes or one-hot "
                "columns) and declare it numeric"
            )
        return kind


class TimeSpec(BaseModel):
    """Where the event time of a row comes from."""

    model_config = _FROZEN
    column: str = Field(min_length=1)
    """Column holding the event time (a date or a timestamp)."""
    format: str | None = None
    """``strptime`` format of ``column`` (e.g. ``%d/%m/%y``); ISO 8601 when left out."""
    hour_column: str | None = None
    """Optional column of hours (0-23) added to ``column``, for data with date and hour apart."""


class EstimatorStep(BaseModel):
    """A scikit-learn class and its constructor parameters."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, populate_by_name=True
    )
    class_path: str = Field(alias="class")
    """Dotted path of a scikit-learn class, e.g. ``sklearn.ensemble.HistGradientBoostingRegressor``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the class."""

    @model_validator(mode="after")
    def _resolves(self) -> EstimatorStep:
        build_step(self)
        return self


class EstimatorSpec(EstimatorStep):
    """The estimator, optionally behind preprocessing steps (a scikit-learn Pipeline)."""

    preprocessing: tuple[EstimatorStep, ...] = ()
    """Transformers applied before the estimator, in order (e.g. a StandardScaler)."""


class Search(BaseModel):
    """A small hyperparameter search on the validation split (``[training.search]``)::

        [training.search]
        params = { max_iter = [100, 300], learning_rate = [0.05, 0.1] }
        estimators = [{ class = "sklearn.ensemble.RandomForestRegressor", params = { n_estimators = 200 } }]
        max_trials = 6
        budget_s = 120

    The spec's own estimator is always the first trial; then each extra estimator class, then
    combinations of ``params`` (in a seeded random order) until ``max_trials`` or the time
    budget. Every trial is fitted on the same rows and scored on the same holdout; the best
    is exported, and the run records every trial and its figure.
    """

    model_config = _FROZEN
    params: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    """Values to try per parameter of the spec's estimator."""
    estimators: tuple[EstimatorStep, ...] = ()
    """Other estimator classes to try (behind the same preprocessing)."""
    max_trials: int = Field(default=8, ge=1)
    """Most trials, the spec's own estimator included."""
    budget_s: float = Field(default=120.0, gt=0)
    """No new trial starts after this many seconds of the run."""
    seed: int = 0
    """Order of the parameter combinations."""


class TrainingWindow(BaseModel):
    """Which labeled rows a training run uses and how it validates."""

    model_config = _FROZEN
    days: float = Field(default=28.0, gt=0)
    """Trailing event-time days of labeled data to train on (ending at the newest row)."""
    min_rows: int = Field(default=200, ge=10)
    """Fewest rows in the window for a run to go ahead."""
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    """Most recent share of the window held out (time-ordered) for validation and the gate."""
    min_holdout_rows: int = Field(default=100, ge=1)
    """Fewest rows held out (up to half the window): a short window after a change point
    still gets a holdout large enough to compare candidates and to serve as a baseline."""
    reference_rows: int = Field(default=2000, ge=100)
    """Most rows in the reference sample stored with a version (drift baseline)."""
    longer: tuple[Annotated[float, Field(gt=1)], ...] = (2.0, 4.0)
    """Longer trailing windows tried too, in multiples of ``days`` (while the data reaches
    that far back); the holdout picks the window. More history helps while the relation
    holds (more weather, more weekdays); after a change it loses on the holdout. Empty: the
    trailing ``days`` only."""
    refit: bool = True
    """Fit the winning candidate again on its rows and the holdout, so the model that ships
    has learned the most recent rows too; its figures stay those measured on the holdout."""
    search: Search | None = None
    """Optional hyperparameter search (None: fit the spec's estimator as it is)."""


class DriftPolicy(BaseModel):
    """When the drift check says "retrain". Every duration is in event-time days.

    Performance drift is a statistical question: is the mean per-row loss of the labeled
    rows worse than the version's validation loss by at least ``min_effect``, beyond what
    chance explains (a one-sided z-test at ``significance``, with the uncertainty of both)?
    A window whose worsening is at least ``severe_factor`` times the minimum effect acts at
    once; a milder one needs ``consecutive`` drifted windows in a row. Between window
    closes, an online change detector (ADWIN, from river) watches the per-row loss as labels
    arrive, so a severe change is acted on within the window it starts in. A retrain after
    a change learns only from rows after the estimated change point; while the new version
    has seen less than the training window of the new concept, it is refreshed as data
    arrives. A version that serves long without a drift meets a challenger on a schedule.
    Data drift (Evidently) decides only windows without enough labels.

    The defaults were judged on a battery of synthetic streams and seeds
    (``tests/bench/policy_scorecard.py``), not fitted to one data set. A window closes once
    every row in it has its label, or ``label_wait_days`` after its end, whichever comes
    first: until then late labels still count.
    """

    model_config = _FROZEN
    window_days: float = Field(default=7.0, gt=0)
    """Length of a drift window; windows are aligned to the Unix epoch. A week covers daily
    and weekly cycles, so a window is comparable with the reference."""
    min_window_rows: int = Field(default=100, ge=1)
    """Fewest rows of the current version in a window for it to be judged at all."""
    max_window_rows: int = Field(default=50_000, ge=100)
    """Most rows a window keeps. Past it the window keeps a uniform sample of its rows
    (reservoir sampling, each draw decided by a hash of the row's request id and position,
    so a replay or a restore keeps the same rows), so memory and saved state stay bounded
    under steady traffic; rows not kept are not monitored (``sampled_out``)."""
    min_labeled_rows: int = Field(default=50, ge=2)
    """Fewest labeled rows for the performance test (in a window, or since a change point)."""
    min_effect: float | None = Field(default=None, gt=0)
    """Smallest worsening of the mean per-row loss that counts as performance drift. For
    classification metrics an absolute error rate (0.05: five points of accuracy); for
    regression metrics relative to the version's validation loss (0.15: 15% worse). None:
    those defaults."""
    significance: float = Field(default=0.01, gt=0, lt=0.5)
    """One-sided level of the tests: that a version's loss is worse than its validation loss
    (drift), that a promoted version does worse than the one it replaced (probation), and
    that a refresh or challenger does better than production (the gate)."""
    severe_factor: float = Field(default=1.5, ge=1)
    """A worsening of at least this many times ``min_effect`` acts without waiting for
    ``consecutive`` windows (and the online detector acts only on one this large)."""
    consecutive: int = Field(default=2, ge=1)
    """Drifted windows in a row needed for a milder drift: a change that lasts, not a
    holiday week or a storm."""
    online: bool = True
    """Run the online change detector on the per-row loss between window closes."""
    online_delta: float = Field(default=0.002, gt=0, lt=1)
    """ADWIN's confidence parameter (smaller: fewer, later alarms)."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """Share of features that must drift (Evidently's per-column tests) for data drift."""
    stattest: str | None = None
    """Evidently's per-column drift method (``ks``, ``wasserstein``, ``psi``, ...); None lets
    Evidently choose by column type and reference size."""
    stattest_threshold: float | None = Field(default=None, gt=0)
    """Threshold of ``stattest`` (None: the method's default)."""
    data_drift_when_labeled: bool = False
    """Whether data drift counts in a window that also has enough labels to judge the model.
    False: with labels, the labels show how the model does on these very inputs, so inputs
    that move while the model stays right cause no retrain."""
    cooldown_days: float = Field(default=0.0, ge=0)
    """No window-based detection in windows that end within this long after a deploy."""
    label_wait_days: float = Field(default=2.0, ge=0)
    """How long after its end a window waits for delayed labels before closing anyway (labels
    due within a day or two still count; a window never waits for labels that never come)."""
    retrain_timeout_days: float | None = Field(default=3.0, gt=0)
    """Forget a retrain in flight after this long with no deploy or rejection (None: never),
    so a lost retrain cannot stop the loop from acting on a later change."""
    refresh: bool = True
    """After a retrain that started at a change point, retrain again as the new concept's
    data grows (each time as much again as the version learned is labeled), until a version
    learned a full training window of it."""
    challenge: bool = True
    """Champion/challenger on a schedule: a version that has served ``challenge_days`` since
    the newest row it learned from (or since its last challenge) meets a challenger trained
    on the trailing window, and the gate deploys the challenger only when it is clearly
    better (by more than ``gate.tolerance``, and beyond chance at ``significance``). A drift
    test compares a version with its own validation loss; only a challenger shows that a
    fresh model would now do better (a slow drift, or a baseline measured on unusual rows)."""
    challenge_days: float | None = Field(default=None, gt=0)
    """How long a version serves before it is challenged, and between challenges (None: the
    spec's ``training.days``, so the challenger has learned only rows the version never saw)."""


class Gate(BaseModel):
    """The promotion gate: a candidate must not be worse than production."""

    model_config = _FROZEN
    metric: str | None = None
    """Metric compared on the most recent labeled holdout (default: mae or accuracy)."""
    tolerance: float = Field(default=0.05, ge=0)
    """Relative slack: a candidate at most this much worse than the champion still wins, since
    it has seen fresher data."""
    history: int = Field(default=4, ge=0)
    """Earlier versions (the most recent ones, besides production) that compete with the
    candidate on the same rows: when one of them fits best, it is deployed again, so a
    concept that returns brings its version back."""
    rollback: bool = True
    """After a promotion, compare the new version with the one it replaced on its first
    labeled window; when it does clearly worse, roll back."""


class ScheduledBatch(BaseModel):
    """A stored file scored on a schedule (``[[batch]]``): each period, ``driftline up``
    asks for a batch job on the file at ``key`` as it is then, with the production version
    (the cold path beside real-time scoring: a nightly drop of rows to predict)."""

    model_config = _FROZEN
    key: str = Field(min_length=1)
    """Object-store key of the CSV or Parquet file to score (replaced between runs, usually)."""
    every_hours: float = Field(gt=0)
    """The period. Runs start on its multiples from 1970-01-01 UTC (24: at 00:00 UTC each
    day), and the first as soon as ``driftline up`` runs within a period not yet scored; a
    period missed while nothing ran is not made up."""
    name: str = Field(default="scheduled", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Names the schedule; each run's batch id is ``<name>-<period start, UTC>``."""
    chunk_rows: int = Field(default=50_000, gt=0)
    """Rows read and scored at a time."""


class ModelSpec(BaseModel):
    """A model: its data, its estimator, and the policies of its loop."""

    model_config = _FROZEN
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Model name: the partition key of its events and the prefix of its objects."""
    task: Task
    """``regression`` or ``classification``."""
    target: str = Field(min_length=1)
    """Column to predict."""
    time: TimeSpec
    """Event time of a row."""
    features: tuple[Feature, ...] = Field(min_length=1)
    """Model inputs, in the order of the ONNX input tensor; a bare string is a numeric feature."""
    estimator: EstimatorSpec
    """The scikit-learn estimator (and preprocessing) to fit."""
    training: TrainingWindow = TrainingWindow()
    """Training window and validation split."""
    drift: DriftPolicy = DriftPolicy()
    """Drift windows and the guards against retrain storms."""
    gate: Gate = Gate()
    """Promotion gate."""
    batch: tuple[ScheduledBatch, ...] = ()
    """Files scored on a schedule (``[[batch]]`` tables), besides batch jobs on demand."""

    @field_validator("features", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError(f"features: duplicate names in {names}")
        schedules = [b.name for b in self.batch]
        if len(set(schedules)) != len(schedules):
            raise ValueError(f"batch: give each schedule its own name (got {schedules})")
        if self.target in names:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if self.time.column in names or self.time.column == self.target:
            raise ValueError(f"time column {self.time.column!r} cannot be a feature or the target")
        metric = self.metric_name
        if metric not in METRICS or METRICS[metric].task != self.task:
            valid = sorted(m for m, v in METRICS.items() if v.task == self.task)
            raise ValueError(
                f"gate.metric {metric!r} does not fit task {self.task} (use one of {valid})"
            )
        est = build_step(self.estimator)
        if not _fits_task(est, self.task):
            raise ValueError(
                f"estimator {self.estimator.class_path} is not a {self.task} estimator"
            )
        search = self.training.search
        if search is not None:
            unknown = sorted(set(search.params) - set(est.get_params()))
            if unknown:
                raise ValueError(
                    f"training.search.params: {unknown} are not parameters of "
                    f"{self.estimator.class_path}"
                )
            for step in search.estimators:
                if not _fits_task(build_step(step), self.task):
                    raise ValueError(
                        f"training.search.estimators: {step.class_path} is not a {self.task} estimator"
                    )
        return self

    def with_days(self, days: float) -> ModelSpec:
        """This spec with a training window of ``days``."""
        return self.model_copy(update={"training": self.training.model_copy(update={"days": days})})

    @property
    def feature_names(self) -> list[str]:
        """Feature names in input order."""
        return [f.name for f in self.features]

    @property
    def metric_name(self) -> str:
        """The task metric used by the gate and by performance drift."""
        return self.gate.metric or DEFAULT_METRIC[self.task]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "spec") -> ModelSpec:
        """Validate a parsed spec; any problem is a ConfigError naming the field."""
        try:
            return cls.model_validate(data)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(f"{source}: invalid model spec: {problems}") from None

    @classmethod
    def from_toml(cls, source: str | Path) -> ModelSpec:
        """Read a spec from a ``.toml`` file path or from TOML text."""
        is_path = isinstance(source, Path) or ("\n" not in source and source.endswith(".toml"))
        name = str(source) if is_path else "spec"
        try:
            text = Path(source).read_text(encoding="utf-8") if is_path else str(source)
            data = tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read the spec ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source=name)


def _fits_task(estimator: Any, task: str) -> bool:
    from sklearn.base import is_classifier, is_regressor

    return bool(is_classifier(estimator) if task == "classification" else is_regressor(estimator))


def build_step(step: EstimatorStep) -> Any:
    """Instantiate one scikit-learn class from a spec step; ValueError names what is wrong."""
    path = step.class_path
    module_name, _, class_name = path.rpartition(".")
    if not module_name.startswith("sklearn") or module_name.split(".")[0] != "sklearn":
        raise ValueError(
            f"estimator class {path!r}: only scikit-learn classes (sklearn.*) are allowed"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ValueError(f"estimator class {path!r}: no such class in scikit-learn") from None
    from sklearn.base import BaseEstimator

    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ValueError(f"estimator class {path!r} is not a scikit-learn estimator")
    try:
        instance = cls(**step.params)
        instance._validate_params()  # sklearn's own check; otherwise bad values surface at fit
    except (TypeError, ValueError) as exc:
        raise ValueError(f"estimator {path}: bad params {step.params}: {exc}") from None
    return instance


def build_estimator(spec: ModelSpec) -> Any:
    """A fresh, unfitted estimator (a Pipeline when the spec has preprocessing)."""
    final = build_step(spec.estimator)
    if not spec.estimator.preprocessing:
        return final
    from sklearn.pipeline import Pipeline

    steps = [(f"step{i}", build_step(s)) for i, s in enumerate(spec.estimator.preprocessing)]
    return Pipeline([*steps, ("estimator", final)])


# --- rows --------------------------------------------------------------------------------


def _numeric(raw: pd.Series, what: str, reasons: pd.Series) -> pd.Series:
    values = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    missing = raw.isna()
    bad = values.isna() & ~missing
    infinite = np.isinf(values)
    reasons[missing] += f"{what}: missing value; "
    reasons[bad] += what + ": not a number (" + raw[bad].astype(str).str.slice(0, 40) + "); "
    reasons[infinite] += f"{what}: not finite; "
    return values


def _times(spec: ModelSpec, df: pd.DataFrame, reasons: pd.Series) -> pd.Series:
    raw = df[spec.time.column]
    what = f"time {spec.time.column!r}"
    if pd.api.types.is_datetime64_any_dtype(raw):
        times = pd.to_datetime(raw, utc=True)
    else:
        fmt = spec.time.format or "ISO8601"
        times = pd.to_datetime(raw.astype("string"), format=fmt, errors="coerce", utc=True)
        bad = times.isna() & raw.notna()
        reasons[bad] += f"{what}: cannot parse (" + raw[bad].astype(str) + f") as {fmt}; "
    reasons[raw.isna()] += f"{what}: missing value; "
    if spec.time.hour_column:
        hours = _numeric(
            df[spec.time.hour_column], f"hour column {spec.time.hour_column!r}", reasons
        )
        out_of_range = (hours < 0) | (hours >= 24)
        reasons[out_of_range] += f"hour column {spec.time.hour_column!r}: not an hour 0-23; "
        times = times + pd.to_timedelta(hours.where(~out_of_range), unit="h")
    return times


def required_columns(spec: ModelSpec, *, with_target: bool = True) -> list[str]:
    """Columns a data file must have, in a stable order."""
    cols = [*spec.feature_names, spec.time.column]
    if spec.time.hour_column and spec.time.hour_column not in cols:
        cols.append(spec.time.hour_column)
    return [*cols, spec.target] if with_target else cols


def validate_frame(
    spec: ModelSpec, df: pd.DataFrame, *, with_target: bool = True, source: str = "dataset"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a raw table into accepted and refused rows.

    Returns ``(good, bad)``. ``good`` has the features (float64), the target when
    ``with_target`` (float64; class labels as integer codes), and :data:`TIME`; ``bad`` has the refused rows as given plus a
    ``reason`` column. Both keep the input's index. A missing column refuses the whole file:
    it raises :class:`ValidationError` naming the column and what the spec expects.
    """
    expected = required_columns(spec, with_target=with_target)
    missing = [c for c in expected if c not in df.columns]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise ValidationError(
            f"{source}: {noun} {', '.join(repr(c) for c in missing)} missing (expected "
            f"{len(spec.features)} features: {', '.join(spec.feature_names)}; time column "
            f"{spec.time.column!r}" + (f"; target {spec.target!r})" if with_target else ")")
        )
    reasons = pd.Series("", index=df.index, dtype=object)
    good = pd.DataFrame(index=df.index)
    for name in spec.feature_names:
        good[name] = _numeric(df[name], f"feature {name!r}", reasons)
    if with_target:
        good[spec.target] = _target(spec, df[spec.target], reasons)
    good[TIME] = _times(spec, df, reasons)
    refused = reasons != ""
    bad = df.loc[refused].copy()
    bad["reason"] = reasons[refused].str.rstrip("; ")
    return good.loc[~refused], bad


def _target(spec: ModelSpec, raw: pd.Series, reasons: pd.Series) -> pd.Series:
    # Predictions travel as floats, so class labels must be integer codes.
    values = _numeric(raw, f"target {spec.target!r}", reasons)
    if spec.task == "classification":
        reasons[values.notna() & (values != values.round())] += (
            f"target {spec.target!r}: class labels must be integer codes; "
        )
    return values
