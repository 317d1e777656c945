"""The model spec: TOML in, validated spec out; raw frames split into good and bad rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.functions.ml.spec import (
    TIME,
    DriftPolicy,
    ModelSpec,
    build_estimator,
    is_worse,
    score,
    validate_frame,
)
from driftline.runtime.errors import ConfigError, ValidationError

SAMPLE = Path(__file__).resolve().parents[3] / "runtime" / "replay" / "sample"

SPEC = """
name = "demo"
task = "regression"
target = "y"
features = ["a", {name = "b", kind = "numeric"}]
[time]
column = "day"
format = "%d/%m/%y"
hour_column = "hr"
[estimator]
class = "sklearn.linear_model.Ridge"
params = { alpha = 0.5 }
"""


def spec_with(extra: str = "", **replace: str) -> str:
    text = SPEC
    for old, new in replace.items():
        text = text.replace(old, new)
    return text + extra


def test_bundled_bike_spec_loads_with_default_policy() -> None:
    spec = ModelSpec.from_toml(SAMPLE / "bike_sharing.toml")
    assert spec.name == "bike-sharing" and spec.task == "regression" and spec.target == "cnt"
    assert spec.drift == DriftPolicy()  # the bundled spec runs on the defaults
    assert spec.metric_name == "mae"
    assert not {"casual", "registered", "yr"} & set(spec.feature_names)


def test_text_spec_fields_and_estimator() -> None:
    spec = ModelSpec.from_toml(SPEC)
    assert spec.feature_names == ["a", "b"]
    assert spec.time.hour_column == "hr"
    est = build_estimator(spec)
    assert type(est).__name__ == "Ridge" and est.alpha == 0.5


def test_preprocessing_builds_a_pipeline() -> None:
    extra = '[[estimator.preprocessing]]\nclass = "sklearn.preprocessing.StandardScaler"\n'
    est = build_estimator(ModelSpec.from_toml(spec_with(extra)))
    assert [type(step).__name__ for _, step in est.steps] == ["StandardScaler", "Ridge"]


def test_spec_is_frozen() -> None:
    spec = ModelSpec.from_toml(SPEC)
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            spec_with("[drift]\nwindow_days = 0\n"),
            "drift.window_days: Input should be greater than 0",
        ),
        (spec_with(**{'task = "regression"': 'task = "ranking"'}), "task: Input should be"),
        (spec_with(**{'"sklearn.linear_model.Ridge"': '"os.system"'}), "only scikit-learn classes"),
        (spec_with(**{"Ridge": "Nope"}), "no such class in scikit-learn"),
        (spec_with(**{"alpha = 0.5": "alpha = -1"}), "alpha"),
        (spec_with(**{"alpha = 0.5": "wings = 2"}), "unexpected keyword argument 'wings'"),
        (
            spec_with(**{"Ridge": "LogisticRegression", "alpha = 0.5": ""}),
            "not a regression estimator",
        ),
        (
            spec_with('[gate]\nmetric = "accuracy"\n'),
            "gate.metric 'accuracy' does not fit task regression",
        ),
        (spec_with(**{'"a", {': '"a", "a", {'}), "duplicate names"),
        (spec_with(**{'target = "y"': 'target = "a"'}), "target 'a' is also listed as a feature"),
        (
            spec_with(**{'kind = "numeric"': 'kind = "categorical"'}),
            "categorical features are not supported",
        ),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_specs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelSpec.from_toml(text)


def test_missing_spec_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ModelSpec.from_toml("/nonexistent/model.toml")


def raw_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": ["01/01/11", "01/01/11", "02/01/11", "31/02/11", "03/01/11", "03/01/11"],
            "hr": [0, 5, 23, 1, 30, 2],
            "a": [1.0, "x", 3.0, 4.0, 5.0, None],
            "b": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            "y": [1.0, 2.0, np.inf, 4.0, 5.0, 6.0],
            "extra": list("uvwxyz"),
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def test_validate_frame_splits_good_and_bad_rows() -> None:
    good, bad = validate_frame(ModelSpec.from_toml(SPEC), raw_frame())
    assert list(good.index) == [10]
    assert list(good.columns) == ["a", "b", "y", TIME]
    assert good[TIME].iloc[0] == pd.Timestamp("2011-01-01 00:00", tz="UTC")
    reasons = dict(zip(bad.index, bad["reason"], strict=True))
    assert reasons[11] == "feature 'a': not a number (x)"
    assert reasons[12] == "target 'y': not finite"
    assert "cannot parse (31/02/11) as %d/%m/%y" in reasons[13]
    assert reasons[14] == "hour column 'hr': not an hour 0-23"
    assert reasons[15] == "feature 'a': missing value"
    assert bad.loc[11, "extra"] == "v"  # refused rows are kept as given


def test_hour_column_is_added_to_the_date() -> None:
    frame = raw_frame().iloc[[0]].assign(hr=[7])
    good, _ = validate_frame(ModelSpec.from_toml(SPEC), frame)
    assert good[TIME].iloc[0] == pd.Timestamp("2011-01-01 07:00", tz="UTC")


def test_missing_columns_refuse_the_whole_file() -> None:
    with pytest.raises(ValidationError) as err:
        validate_frame(
            ModelSpec.from_toml(SPEC),
            raw_frame().drop(columns=["b", "y"]),
            source="s3://raw/jan.csv",
        )
    assert str(err.value) == (
        "s3://raw/jan.csv: columns 'b', 'y' missing (expected 2 features: a, b; time column 'day'; target 'y')"
    )


def test_scoring_rows_need_no_target() -> None:
    good, bad = validate_frame(
        ModelSpec.from_toml(SPEC), raw_frame().drop(columns=["y"]), with_target=False
    )
    assert "y" not in good.columns and len(good) == 2 and len(bad) == 4


def test_iso_times_by_default_and_integer_class_labels() -> None:
    text = spec_with(
        **{
            'format = "%d/%m/%y"\nhour_column = "hr"': "",
            "Ridge": "LogisticRegression",
            "alpha = 0.5": "C = 1.0",
            '"regression"': '"classification"',
        }
    )
    frame = pd.DataFrame(
        {
            "day": ["2024-03-01T10:00:00Z", "2024-03-01 11:30", "soon"],
            "a": [1, 2, 3],
            "b": [1, 2, 3],
            "y": [0, 1.5, 1],
        }
    )
    good, bad = validate_frame(ModelSpec.from_toml(text), frame)
    assert list(good[TIME]) == [pd.Timestamp("2024-03-01 10:00", tz="UTC")]
    assert list(bad["reason"]) == [
        "target 'y': class labels must be integer codes",
        "time 'day': cannot parse (soon) as ISO8601",
    ]


def test_metrics_and_direction() -> None:
    assert score("mae", [1, 2, 3], [1, 2, 6]) == 1.0
    assert score("rmse", [0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5))
    assert score("accuracy", [1, 0, 1, 1], [1, 1, 1, 1]) == 0.75
    assert score("f1", [0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert np.isnan(score("mae", [], []))
    assert is_worse("mae", 13.0, 10.0, 0.25) and not is_worse("mae", 12.4, 10.0, 0.25)
    assert is_worse("accuracy", 0.7, 0.9, 0.1) and not is_worse("accuracy", 0.85, 0.9, 0.1)
    assert not is_worse("mae", float("nan"), 10.0, 0.0)
