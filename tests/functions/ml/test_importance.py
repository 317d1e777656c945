"""Permutation importance at training time: the features a model leans on rank first, the
figure is in the gate metric's units, and its cost stays bounded."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from driftline.functions.ml import importance
from driftline.functions.ml.spec import ModelSpec
from driftline.functions.ml.training import train
from tests.functions.ml.test_training import CLASSIFICATION, REGRESSION, frame


def test_train_records_which_features_matter() -> None:
    result = train(ModelSpec.from_toml(REGRESSION), frame())
    imp = result.importance
    assert list(imp) == ["x1", "x2", "x3"]  # spec order
    assert imp["x1"] > imp["x2"] > 0.5  # y = 3 x1 - 2 x2 + noise: MAE rises when shuffled
    assert abs(imp["x3"]) < 0.1  # x3 is noise


def test_classification_counts_lost_accuracy() -> None:
    spec = ModelSpec.from_toml(CLASSIFICATION)
    imp = train(spec, frame(classes=True)).importance
    assert imp["x1"] > 0.1 and imp["x1"] > abs(imp["x3"])
    assert imp["x1"] <= 1.0  # a share of rows (accuracy), not an error in y's units


def test_a_large_holdout_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec.from_toml(REGRESSION)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50_000, 3)).astype(np.float32)
    y = 3 * x[:, 0]
    model = LinearRegression().fit(x, y)
    seen: list[int] = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda xs: seen.append(len(xs)) or predict(xs))
    imp = importance.permutation(spec, model, x, y)
    assert max(seen) == importance.MAX_ROWS
    assert len(seen) == 1 + 3 * importance.REPEATS  # the baseline, then each shuffle
    assert imp["x1"] > 1.0 and abs(imp["x2"]) < 1e-6


def test_too_few_rows_or_an_unscorable_model_give_nothing() -> None:
    spec = ModelSpec.from_toml(REGRESSION)
    x = np.zeros((1, 3), dtype=np.float32)
    assert importance.permutation(spec, LinearRegression(), x, np.zeros(1)) == {}
    unfitted = LogisticRegression()  # predict raises: the run is not failed for it
    assert importance.permutation(spec, unfitted, np.ones((5, 3)), np.zeros(5)) == {}
