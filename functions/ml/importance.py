"""Permutation importance of a fitted model on its holdout (the interpretability figure the
dashboard sets beside each drifted feature).

scikit-learn's :func:`~sklearn.inspection.permutation_importance` shuffles one feature at a
time on the holdout and measures how much the spec's gate metric gets worse: a feature the
model leans on costs a lot when shuffled, one it ignores costs nothing. Figures are in the
metric's own units (``mae`` 12.5: shuffling the feature raises the MAE by 12.5), a mean over
:data:`REPEATS` shuffles. The cost is bounded: at most :data:`MAX_ROWS` holdout rows (a
seeded sample) and ``REPEATS`` predictions per feature, whatever the window's size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from driftline.functions.ml.spec import METRICS, ModelSpec, score

log = logging.getLogger("driftline.importance")

REPEATS = 3
"""Shuffles per feature."""
MAX_ROWS = 1_000
"""Holdout rows shuffled at most (a seeded sample of a larger holdout)."""


def permutation(spec: ModelSpec, model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Per feature (spec order), how much shuffling it worsens the gate metric on ``x, y``.
    ``{}`` when there are too few rows to shuffle or the model cannot be scored so."""
    from sklearn.inspection import permutation_importance

    if len(x) < 2:
        return {}
    if len(x) > MAX_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(x), MAX_ROWS, replace=False))
        x, y = x[keep], y[keep]
    name = spec.metric_name
    sign = -1.0 if METRICS[name].lower_is_better else 1.0

    def scorer(estimator: Any, xs: np.ndarray, ys: np.ndarray) -> float:
        return sign * score(name, ys, estimator.predict(xs))

    try:
        result = permutation_importance(
            model, x, y, scoring=scorer, n_repeats=REPEATS, random_state=0
        )
    except Exception as exc:  # an interpretability figure never fails a training run
        log.warning("%s: permutation importance not computed: %s", spec.name, exc)
        return {}
    means = result["importances_mean"]
    return {f: float(f"{m:.4g}") for f, m in zip(spec.feature_names, means, strict=True)}
