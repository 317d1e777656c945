"""Training: fit on the trailing window, export to ONNX, and refuse anything unverified."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from driftline.functions.ml import training
from driftline.functions.ml.spec import TIME, ModelSpec
from driftline.functions.ml.training import gate, load_session, metric, predict, signature, train
from driftline.runtime.errors import ValidationError

REGRESSION = """
name = "synth"
task = "regression"
target = "y"
features = ["x1", "x2", "x3"]
[time]
column = "t"
[estimator]
class = "sklearn.ensemble.HistGradientBoostingRegressor"
params = { max_iter = 30, random_state = 0 }
[training]
days = 10
min_rows = 50
validation_fraction = 0.25
min_holdout_rows = 20
reference_rows = 100
longer = []  # the trailing 10 days only; longer windows are tested on their own
"""
CLASSIFICATION = REGRESSION.replace('"regression"', '"classification"').replace(
    "HistGradientBoostingRegressor", "HistGradientBoostingClassifier"
)


def frame(n_days: int = 20, seed: int = 0, classes: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_days * 24
    x = rng.normal(size=(n, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.3, size=n)
    df = pd.DataFrame(x, columns=["x1", "x2", "x3"])
    df["y"] = (y > 0).astype(float) if classes else y
    df[TIME] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h")
    return df


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec.from_toml(REGRESSION)


@pytest.fixture(scope="module")
def trained(spec: ModelSpec) -> training.TrainResult:
    return train(spec, frame())


def test_train_uses_the_trailing_window_and_a_time_ordered_holdout(
    spec: ModelSpec, trained: training.TrainResult
) -> None:
    assert trained.train_end == datetime(2024, 1, 20, 23, tzinfo=UTC)
    assert trained.train_start == datetime(2024, 1, 11, tzinfo=UTC)  # 10 days back
    assert trained.n_rows == 240  # refitted on the holdout too
    assert len(trained.holdout) == 60  # the most recent quarter
    assert trained.holdout[TIME].min() > pd.Timestamp("2024-01-18 11:00", tz="UTC")
    assert set(trained.metrics) == {
        "mae",
        "rmse",
        "holdout_rows",
        "mae_loss",
        "mae_loss_sd",
        "mae_loss_se",
    }
    assert trained.metrics["mae"] < 1.0 and trained.metrics["holdout_rows"] == 60
    assert list(trained.reference.columns) == spec.feature_names and len(trained.reference) == 100
    assert trained.sha256 == training.hashlib.sha256(trained.onnx).hexdigest()
    assert trained.parity["max_abs_diff"] < 1e-4
    assert trained.trainer.startswith("HistGradientBoostingRegressor")


def test_now_moves_the_window(spec: ModelSpec) -> None:
    result = train(spec, frame(), now=datetime(2024, 1, 12, 12))
    assert result.train_end == datetime(2024, 1, 12, 12, tzinfo=UTC)
    assert result.train_start == datetime(2024, 1, 2, 13, tzinfo=UTC)


def test_onnx_matches_sklearn_and_the_signature(
    spec: ModelSpec, trained: training.TrainResult
) -> None:
    session = load_session(trained.onnx, spec)
    (tensor,) = session.get_inputs()
    assert (tensor.name, tensor.type, tensor.shape[1]) == ("input", "tensor(float)", 3)
    assert signature(spec) == {
        "input": "input",
        "dtype": "float32",
        "shape": [None, 3],
        "features": ["x1", "x2", "x3"],
    }
    hold = trained.holdout
    pred = predict(session, spec, hold)
    # The figures are the held-out fit's; the shipped model was refitted on these rows too.
    heldout = metric(spec, hold["y"], hold[training.HELDOUT])
    assert heldout == pytest.approx(trained.metrics["mae"], rel=1e-9)
    assert metric(spec, hold["y"], pred) < heldout
    rows = hold[spec.feature_names].to_numpy().tolist()
    assert np.allclose(predict(session, spec, rows), pred)


def test_hist_gradient_boosting_thresholds_agree_with_onnx_on_float32_edges(
    spec: ModelSpec,
) -> None:
    # scikit-learn compares float32 inputs with float64 thresholds; a threshold just below a
    # float32 value v sends v right, but rounded to the nearest float32 (v itself) it sends
    # v left in ONNX. Seen on the bike data (hum = 0.6); forced here on the root split.
    df = frame()
    x = df[spec.feature_names].to_numpy(dtype=np.float32)
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(x, df["y"])
    root = model._predictors[0][0].nodes[0]
    v = np.float32(
        x[np.argmin(np.abs(x[:, root["feature_idx"]] - root["num_threshold"])), root["feature_idx"]]
    )
    below = np.float64(np.nextafter(v, np.float32(-np.inf)))
    edge = np.float64(v) - (np.float64(v) - below) / 4  # nearest float32: v itself
    model._predictors[0][0].nodes["num_threshold"][0] = edge
    probe = np.repeat(x[:1], 2, axis=0)
    probe[:, root["feature_idx"]] = v
    expected = model.predict(probe)
    naive = training._run(load_session(training._export(spec, model), spec), spec, probe)
    assert np.abs(naive - expected).max() > 1e-3  # the converter alone gets this row wrong
    training._float32_thresholds(model)
    assert np.array_equal(model.predict(probe), expected)  # same model on float32 inputs
    fixed = training._run(load_session(training._export(spec, model), spec), spec, probe)
    assert np.abs(fixed - expected).max() < 1e-5


def test_poisson_regressor_exports_its_inverse_link() -> None:
    # skl2onnx alone exports log-predictions for a log-link HistGradientBoostingRegressor.
    spec = ModelSpec.from_toml(
        REGRESSION.replace("max_iter = 30", 'max_iter = 30, loss = "poisson"').replace(
            "longer = []", "longer = []\nrefit = false"
        )
    )
    df = frame()
    df["y"] = np.exp(df["x1"])  # positive, like counts
    result = train(spec, df)
    assert result.parity["max_abs_diff"] < 1e-3
    pred = predict(load_session(result.onnx, spec), spec, result.holdout)
    assert pred.min() > 0 and metric(spec, result.holdout["y"], pred) == pytest.approx(
        result.metrics["mae"]
    )


def test_classifier_exports_labels_without_zipmap() -> None:
    spec = ModelSpec.from_toml(CLASSIFICATION)
    result = train(spec, frame(classes=True))
    session = load_session(result.onnx, spec)
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    labels = predict(session, spec, result.holdout)
    assert set(np.unique(labels)) <= {0, 1}
    assert set(result.metrics) == {
        "accuracy",
        "f1",
        "holdout_rows",
        "accuracy_loss",
        "accuracy_loss_se",
    }
    assert result.metrics["accuracy"] > 0.85
    assert result.parity["mismatches"] == 0


def test_too_few_rows_is_refused(spec: ModelSpec) -> None:
    with pytest.raises(
        ValidationError, match=r"40 labeled rows in the last 10 days, need at least 50"
    ):
        train(spec, frame().iloc[:40])


def test_frame_without_parsed_time_is_refused(spec: ModelSpec) -> None:
    with pytest.raises(ValidationError, match="validate_frame"):
        train(spec, frame().drop(columns=[TIME]))


def test_disagreeing_export_is_refused(spec: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    real = training._run
    monkeypatch.setattr(training, "_run", lambda session, s, x: real(session, s, x) + 0.5)
    with pytest.raises(ValidationError, match="ONNX predictions differ from scikit-learn"):
        train(spec, frame())


def test_corrupt_onnx_bytes(spec: ModelSpec, trained: training.TrainResult) -> None:
    for blob in (b"", b"not a model", trained.onnx[: len(trained.onnx) // 2]):
        with pytest.raises(ValidationError, match="model synth: not a loadable ONNX file"):
            load_session(blob, spec)


def test_wrong_signature(spec: ModelSpec, trained: training.TrainResult) -> None:
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    model = LinearRegression().fit(x, x[:, 0])
    two = to_onnx(model, initial_types=[("input", FloatTensorType([None, 2]))]).SerializeToString()
    with pytest.raises(
        ValidationError, match=r"wrong signature: input shape \[None, 2\], expected \[N, 3\]"
    ):
        load_session(two, spec)
    renamed = to_onnx(model, initial_types=[("X", FloatTensorType([None, 2]))]).SerializeToString()
    with pytest.raises(ValidationError, match="input 'X' of tensor\\(float\\), expected 'input'"):
        load_session(renamed, spec)
    other = spec.model_copy(update={"features": tuple(reversed(spec.features))})
    with pytest.raises(ValidationError, match=r"trained on features \['x1', 'x2', 'x3'\]"):
        load_session(trained.onnx, other)


def test_gate(spec: ModelSpec) -> None:
    y = np.array([10.0, 20.0, 30.0])
    win = gate(spec, y, y + 1.0, y + 2.0)
    assert win.passed and (win.candidate, win.champion) == (1.0, 2.0)
    assert "not worse than" in win.reason
    assert gate(spec, y, y + 1.04, y + 1.0).passed  # within the 5% tolerance
    lose = gate(spec, y, y + 3.0, y + 1.0)
    assert not lose.passed and "candidate mae 3 is worse than production's 1" in lose.reason
    assert gate(spec, y, y, None).passed


def test_a_refresh_must_be_clearly_better_than_production(spec: ModelSpec) -> None:
    """A refresh challenges a version nobody found wanting: it must do better by more than
    the tolerance."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=200) * 10
    err = np.abs(rng.normal(size=200))
    cand = y + err
    assert gate(spec, y, cand, y + err + 0.5, challenger=True).passed  # clearly better
    barely = gate(spec, y, cand, y + err * 1.03, challenger=True)  # 3%: within the tolerance
    assert not barely.passed and barely.redeploy is None
    assert "challenger mae" in barely.reason and "not clearly better" in barely.reason
    ups_and_downs = y + err * np.where(np.arange(200) % 2, 1.3, 0.7)  # as good on average
    assert not gate(spec, y, cand, ups_and_downs, challenger=True).passed
    assert gate(spec, y, cand, ups_and_downs).passed  # a retrain after drift passes


def test_a_challenger_better_only_by_chance_keeps_production(spec: ModelSpec) -> None:
    """Better on average by more than the tolerance, but rows that swing both ways: the
    paired test finds no clear gain, so production keeps serving."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=200) * 10
    err = np.abs(rng.normal(size=200))
    swings = y + err * np.where(np.arange(200) % 2, 2.0, 0.2)  # 10% worse on average
    assert np.mean(np.abs(swings - y)) > 1.05 * np.mean(err)
    lucky = gate(spec, y, y + err, swings, challenger=True)
    assert not lucky.passed and "paired test" in lucky.reason and "not below" in lucky.reason
    steady = y + err * 1.1  # as much worse on every row: a clear gain
    assert gate(spec, y, y + err, steady, challenger=True).passed


def _changed(n_days: int = 20, at_day: int = 14, flip: bool = True) -> pd.DataFrame:
    """``frame()``, with y's relation to x1 reversed from ``at_day`` on (when ``flip``)."""
    df = frame(n_days)
    if flip:
        after = df[TIME] >= pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=at_day)
        df.loc[after, "y"] = df.loc[after, "y"] - 6 * df.loc[after, "x1"]
    return df


def test_after_an_abrupt_change_the_rows_since_it_win(spec: ModelSpec) -> None:
    since = datetime(2024, 1, 15, tzinfo=UTC)
    result = train(spec, _changed(), since=since)
    assert result.train_start >= since and result.holdout[TIME].min() >= pd.Timestamp(since)
    assert (
        result.trials[0].endswith("<- chosen") and "on since the change point" in result.trials[0]
    )
    assert "on the trailing 10 days" in result.trials[1]
    assert all("on the most recent" in t for t in result.trials[2:-1])  # fewer rows: they lose
    assert result.trials[-1] == f"refitted on those rows and the {len(result.holdout)} held out"
    assert result.metrics["mae"] < 2.0  # a few days of the new relation, yet far better than mixing


def test_in_a_gradual_change_a_recent_stretch_wins(spec: ModelSpec) -> None:
    """The change point fell at the start of a week-long change: the rows right after it
    mix the two relations, and the most recent stretch (nearly all new) fits best."""
    df = frame(20, seed=3)
    start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=10)
    share_new = ((df[TIME] - start) / pd.Timedelta(days=7)).clip(0, 1)
    new = np.random.default_rng(4).random(len(df)) < share_new
    df.loc[new, "y"] = df.loc[new, "y"] - 6 * df.loc[new, "x1"]
    result = train(spec, df, since=start.to_pydatetime())
    names = [t.split(" on ")[1].split(":")[0] for t in result.trials]
    assert names[0] == "since the change point" and names[1].startswith("the most recent")
    assert result.trials[1].endswith("<- chosen")
    assert result.train_start >= start + pd.Timedelta(days=3)


def test_when_nothing_changed_the_whole_trailing_window_competes_and_can_win(
    spec: ModelSpec,
) -> None:
    since = datetime(2024, 1, 19, 12, tzinfo=UTC)  # a false change point: 36 rows after it
    result = train(spec, _changed(flip=False), since=since)
    assert [t.split(":")[0] for t in result.trials] == [
        "HistGradientBoostingRegressor(max_iter=30, random_state=0) on since the change point",
        "HistGradientBoostingRegressor(max_iter=30, random_state=0) on the trailing 10 days",
        "refitted on those rows and the 20 held out",
    ]
    assert result.trials[1].endswith("<- chosen")  # more rows of the same concept
    assert result.train_start < since


def test_a_search_tries_parameters_and_estimators_and_records_them() -> None:
    text = REGRESSION + (
        "[training.search]\n"
        "params = { max_iter = [3, 100], learning_rate = [0.1, -1.0] }\n"
        'estimators = [{ class = "sklearn.linear_model.Ridge" }]\n'
        "max_trials = 6\n"
    )
    spec = ModelSpec.from_toml(text)
    result = train(spec, frame())
    assert len(result.trials) == 7  # the spec's estimator, Ridge, four combinations, the refit
    assert result.trials[-1] == "refitted on those rows and the 60 held out"
    assert result.trainer.startswith("Ridge")  # the refit is of the winner
    assert result.trials[1].startswith("Ridge(): mae ")
    failed = [t for t in result.trials if ": failed: " in t]
    assert len(failed) == 2 and all("learning_rate=-1.0" in t for t in failed)
    (chosen,) = [t for t in result.trials if t.endswith("<- chosen")]
    assert "Ridge" in chosen  # y is linear in x: the linear model fits it best
    assert result.metrics["mae"] < 0.5
    assert load_session(result.onnx, spec) is not None


def test_a_search_over_unknown_parameters_is_refused() -> None:
    from driftline.runtime.errors import ConfigError

    bad = REGRESSION + "[training.search]\nparams = { max_leaves = [3] }\n"
    with pytest.raises(ConfigError, match=r"\['max_leaves'\] are not parameters of"):
        ModelSpec.from_toml(bad)


def test_longer_windows_compete_and_win_while_the_relation_holds() -> None:
    spec = ModelSpec.from_toml(REGRESSION.replace("longer = []", "longer = [2, 4]"))
    result = train(spec, frame(30))  # 30 days: the 20-day window fits, the 40-day one is cut
    names = [t.split(" on ")[1].split(":")[0] for t in result.trials[:-1]]
    assert names == ["the trailing window", "the trailing 20 days", "the trailing 40 days"]
    assert result.trials[2].endswith("<- chosen")  # all 30 days: the most rows of one relation
    assert result.train_start == datetime(2024, 1, 1, tzinfo=UTC)


def test_after_an_abrupt_change_longer_windows_lose() -> None:
    spec = ModelSpec.from_toml(REGRESSION.replace("longer = []", "longer = [2, 4]"))
    since = datetime(2024, 1, 22, tzinfo=UTC)
    result = train(spec, _changed(30, at_day=21), since=since)
    assert "on since the change point" in result.trials[0]
    assert "on the trailing 20 days" in " ".join(result.trials)
    assert not any("trailing" in t and t.endswith("<- chosen") for t in result.trials)
    assert result.train_start >= since


def test_without_refit_the_shipped_model_is_the_held_out_fit() -> None:
    spec = ModelSpec.from_toml(REGRESSION.replace("longer = []", "longer = []\nrefit = false"))
    result = train(spec, frame())
    pred = predict(load_session(result.onnx, spec), spec, result.holdout)
    assert np.allclose(pred, result.holdout[training.HELDOUT], atol=1e-4)
    assert result.n_rows == 180 and not any(t.startswith("refitted") for t in result.trials)
