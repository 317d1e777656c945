"""GPU retraining: XGBoost with ``device="cuda"``, exported to ONNX and checked like any candidate.

A spec names a scikit-learn estimator. Where a runner has this GPU trainer
(``ctx.capabilities.gpu_trainer == GPU_TRAINER``, which the runtime's capabilities detect)
and the spec's estimator is gradient-boosted trees, :func:`choose_trainer` maps it to the
closest XGBoost model (same number of rounds, learning rate, tree size, regularisation,
seed) and fits it on the GPU; :func:`train_for` falls back to the scikit-learn path on the
CPU whenever the GPU path cannot be used or fails. Either way the model leaves through
``training.train``: ONNX export (onnxmltools), parity check on the holdout, metrics.

xgboost and onnxmltools are the ``[gpu]`` extra: nothing here imports them until a GPU
trainer is chosen. The two paths fit comparable, not identical, models (XGBoost's
histogram splits and regularisation differ from scikit-learn's); the promotion gate judges
the candidate whichever trained it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from onnx import ModelProto

from driftline.functions.ml.spec import ModelSpec
from driftline.functions.ml.training import INPUT_NAME, Trainer, TrainResult, train

log = logging.getLogger("driftline.fn.gpu_training")

GPU_TRAINER = "xgboost-cuda"
"""The name of this trainer, as a runner's capabilities announce it (``gpu_trainer``)."""

_HGB = (
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.ensemble.HistGradientBoostingClassifier",
)
_GB = ("sklearn.ensemble.GradientBoostingRegressor", "sklearn.ensemble.GradientBoostingClassifier")
_OBJECTIVES = {
    "squared_error": "reg:squarederror",
    "absolute_error": "reg:absoluteerror",
    "poisson": "count:poisson",
    "log_loss": None,
}
# scikit-learn parameters that only steer fitting bookkeeping; anything else unmapped means
# the XGBoost model would differ in kind, and the CPU path is used instead.
_IGNORED = {
    "verbose",
    "warm_start",
    "early_stopping",
    "scoring",
    "validation_fraction",
    "n_iter_no_change",
    "tol",
    "loss",
    "criterion",
}


class GpuTrainerError(Exception):
    """The GPU path cannot train this spec or this data; the CPU path is used."""


def xgboost_params(spec: ModelSpec) -> dict[str, Any] | None:
    """XGBoost parameters equivalent to the spec's estimator, or None when there are none."""
    est = spec.estimator
    if est.preprocessing or est.class_path not in (*_HGB, *_GB):
        return None
    p = dict(est.params)
    loss = p.get("loss", "squared_error" if spec.task == "regression" else "log_loss")
    if loss not in _OBJECTIVES:
        return None
    if est.class_path in _HGB:
        out = {
            "n_estimators": p.pop("max_iter", 100),
            "max_leaves": p.pop("max_leaf_nodes", 31) or 0,
            "max_depth": p.pop("max_depth", None) or 0,
            "grow_policy": "lossguide",
            "reg_lambda": p.pop("l2_regularization", 0.0),
            "max_bin": p.pop("max_bins", 255),
            "colsample_bynode": p.pop("max_features", 1.0),
            "min_child_weight": p.pop("min_samples_leaf", 20) if spec.task == "regression" else 1,
        }
    else:
        leaf = p.pop("min_samples_leaf", 1)
        out = {
            "n_estimators": p.pop("n_estimators", 100),
            "max_depth": p.pop("max_depth", 3) or 0,
            "subsample": p.pop("subsample", 1.0),
            "reg_lambda": 0.0,
            "grow_policy": "depthwise",
            "min_child_weight": leaf if isinstance(leaf, int) and spec.task == "regression" else 1,
        }
    out["learning_rate"] = p.pop("learning_rate", 0.1)
    out["random_state"] = p.pop("random_state", None) or 0
    if set(p) - _IGNORED:
        return None  # e.g. monotonic_cst, class_weight, categorical_features
    if _OBJECTIVES[loss]:
        out["objective"] = _OBJECTIVES[loss]
    return out


class XGBoostTrainer:
    """Fits the XGBoost equivalent of a spec on ``device`` and exports it with onnxmltools."""

    def __init__(self, device: str = "cuda"):
        self.device = device

    def fit(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Any:
        import xgboost

        params = xgboost_params(spec)
        if params is None:
            raise GpuTrainerError(
                f"no XGBoost equivalent of {spec.estimator.class_path} with these params"
            )
        if spec.task == "classification":
            classes = np.unique(y)
            if not np.array_equal(classes, np.arange(len(classes))):
                raise GpuTrainerError(
                    f"class codes {classes.tolist()} are not 0..{len(classes) - 1}"
                )
            model = xgboost.XGBClassifier(**params, tree_method="hist", device=self.device)
        else:
            model = xgboost.XGBRegressor(**params, tree_method="hist", device=self.device)
        model.fit(x, y)
        # Predict (the parity check, the metrics) on the CPU: the holdout is a numpy array,
        # and a CUDA model fed host data warns and copies it anyway.
        model.set_params(device="cpu")
        return model

    def export(self, spec: ModelSpec, model: Any) -> ModelProto:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        proto: ModelProto = onnxmltools.convert_xgboost(
            model, initial_types=[(INPUT_NAME, FloatTensorType([None, len(spec.features)]))]
        )
        return proto

    def describe(self, model: Any) -> str:
        import xgboost

        return f"{type(model).__name__} (xgboost {xgboost.__version__}, {self.device})"


def choose_trainer(spec: ModelSpec, capabilities: Any) -> Trainer | None:
    """The GPU trainer when this runner has one and the spec maps to it; None: the CPU path."""
    if getattr(capabilities, "gpu_trainer", None) != GPU_TRAINER:
        return None
    if xgboost_params(spec) is None:
        log.info(
            "%s: %s has no XGBoost equivalent; training on the CPU",
            spec.name,
            spec.estimator.class_path,
        )
        return None
    return XGBoostTrainer("cuda")


def train_for(
    spec: ModelSpec,
    df: pd.DataFrame,
    *,
    capabilities: Any,
    now: datetime | None = None,
    since: datetime | None = None,
) -> TrainResult:
    """``training.train`` on the GPU when this runner can, else (or if that fails) on the CPU."""
    trainer = choose_trainer(spec, capabilities)
    if trainer is not None:
        try:
            return train(spec, df, now=now, since=since, trainer=trainer)
        except Exception as exc:  # CUDA out of memory, a failed parity check, unmappable classes...
            log.warning(
                "%s: GPU training failed (%s: %s); training on the CPU instead",
                spec.name,
                type(exc).__name__,
                exc,
            )
    return train(spec, df, now=now, since=since)
