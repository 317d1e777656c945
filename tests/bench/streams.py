"""Synthetic streams with a known change, for the policy scorecard and for behaviour tests.

Each generator gives a :class:`Stream`: a table (``ts`` as ISO text, the features, ``y``),
the model spec that fits it (no ``[drift]`` section: the default policy), and when the
change starts. Rows come every ``Shape.every_minutes`` from a Thursday midnight UTC, so the
onset falls on the boundary of the drift monitor's epoch-aligned weekly windows (1970-01-01
was a Thursday) and "detected after N windows" is a whole number for a detection in the
first post-onset window.

The scorecard's size is the default :class:`Shape` (140 days, a row every 10 minutes, change
at day 70: 20,160 rows); a behaviour test takes a small one, e.g. ``SMALL`` (6 weeks, a row
every half hour, change at day 21: 2,016 rows)::

    from tests.bench.streams import SMALL, make
    stream = make("sea-abrupt", seed=1, shape=SMALL)
    data, spec = stream.write(tmp_path)

Kinds: ``stationary`` (nothing changes), ``abrupt`` (the concept, or inputs the model
cannot extrapolate to, change at once), ``recurring`` (abrupt, then the old concept returns
``Shape.recur_days`` later), ``gradual`` (the change takes ``Shape.transition_days``) and
``benign`` (inputs move inside the trained support and the relation stays: a model that is
not retrained loses nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-04", tz="UTC")
"""A Thursday: weekly windows aligned to the Unix epoch start here."""


@dataclass(frozen=True)
class Shape:
    """How long a stream is, how dense, and where its change falls (all in event-time days)."""

    days: float = 140.0
    every_minutes: float = 10.0
    onset_day: float = 70.0
    training_days: float = 28.0
    """v1's training window, and every retrain's (the spec's ``training.days``)."""
    recur_days: float = 35.0
    """``recurring``: how long the new concept lasts before the old one returns."""
    transition_days: float = 21.0
    """``gradual``: how long the change takes."""

    @property
    def rows(self) -> int:
        return int(round(self.days * 24 * 60 / self.every_minutes))

    def index(self, day: float) -> int:
        """Row number at ``day`` days from the start."""
        return int(round(day * 24 * 60 / self.every_minutes))

    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(
            START, periods=self.rows, freq=pd.Timedelta(minutes=self.every_minutes)
        )

    def at(self, day: float) -> pd.Timestamp:
        return START + pd.Timedelta(days=day)


SMALL = Shape(
    days=42, every_minutes=30, onset_day=21, training_days=14, recur_days=14, transition_days=7
)
"""A few thousand rows: for behaviour tests of the loop, not for the scorecard."""


@dataclass(frozen=True)
class Stream:
    """A generated stream, its spec, and the truth about its change."""

    name: str
    kind: str
    task: str
    frame: pd.DataFrame
    spec_toml: str
    onset: pd.Timestamp | None
    """First event time of the changed stream (None: stationary)."""
    shape: Shape
    returns: pd.Timestamp | None = None
    """``recurring``: when the old concept is back."""

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.toml`` into ``folder``; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        data, spec = folder / f"{self.name}.csv", folder / f"{self.name}.toml"
        self.frame.to_csv(data, index=False)
        spec.write_text(self.spec_toml)
        return data, spec


ESTIMATORS = {
    "classification": 'class = "sklearn.ensemble.HistGradientBoostingClassifier"\n'
    "params = { max_iter = 100, random_state = 0 }",
    "regression": 'class = "sklearn.ensemble.HistGradientBoostingRegressor"\n'
    "params = { max_iter = 200, random_state = 0 }",
}


def spec_toml(name: str, task: str, features: list[str], training_days: float) -> str:
    """A spec with the default drift policy (no ``[drift]`` section)."""
    quoted = ", ".join(f'"{f}"' for f in features)
    return (
        f'name = "{name}"\ntask = "{task}"\ntarget = "y"\nfeatures = [{quoted}]\n\n'
        f'[time]\ncolumn = "ts"\n\n[estimator]\n{ESTIMATORS[task]}\n\n'
        f"[training]\ndays = {training_days:g}\n"
    )


def _table(shape: Shape, x: np.ndarray, y: np.ndarray, names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(x, columns=names)
    frame.insert(0, "ts", shape.times().strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    frame["y"] = y
    return frame


def _river(dataset: object, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rows = list(itertools.islice(iter(dataset), n))  # type: ignore[call-overload]
    names = [str(k) if not isinstance(k, int) else f"x{k}" for k in rows[0][0]]
    x = np.array([list(r[0].values()) for r in rows], dtype=np.float64)
    y = np.array([float(r[1]) for r in rows], dtype=np.float64)
    return x, y, names


# --- classification ----------------------------------------------------------------------

AGRAWAL_BEFORE, AGRAWAL_AFTER = 1, 5
"""Agrawal classification functions: v1 trained on 1 scores about 70% on 5 (about 98% on 1)."""


def _agrawal(function: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from river.datasets import synth

    # balance_classes alternates the classes row by row: shuffle to keep rows independent
    data = synth.Agrawal(
        classification_function=function, seed=seed, balance_classes=True, perturbation=0.05
    )
    x, y, names = _river(data, n)
    order = np.random.default_rng(seed).permutation(n)
    return x[order], y[order], names


def agrawal(seed: int, shape: Shape, change: bool) -> Stream:
    """Agrawal loan applications; with ``change`` the labelling function switches at onset."""
    cut = shape.index(shape.onset_day) if change else shape.rows
    x, y, names = _agrawal(AGRAWAL_BEFORE, cut, seed)
    if change:
        x2, y2, _ = _agrawal(AGRAWAL_AFTER, shape.rows - cut, seed + 10_000)
        x, y = np.vstack([x, x2]), np.concatenate([y, y2])
    kind = "abrupt" if change else "stationary"
    return _stream(f"agrawal-{kind}", kind, "classification", shape, x, y, names)


def sea(seed: int, shape: Shape, change: bool) -> Stream:
    """SEA (10% label noise); with ``change`` the threshold moves from variant 0 (8) to 3
    (9.5) at onset: about 13% of rows change class."""
    from river.datasets import synth

    cut = shape.index(shape.onset_day) if change else shape.rows
    x, y, names = _river(synth.SEA(variant=0, noise=0.1, seed=seed), cut)
    if change:
        x2, y2, _ = _river(synth.SEA(variant=3, noise=0.1, seed=seed + 10_000), shape.rows - cut)
        x, y = np.vstack([x, x2]), np.concatenate([y, y2])
    kind = "abrupt" if change else "stationary"
    return _stream(f"sea-{kind}", kind, "classification", shape, x, y, names)


HYPERPLANE_DEGREES = 50.0
"""How far the hyperplane turns in all: v1 scores about 67% once the turn is over."""


def hyperplane(seed: int, shape: Shape) -> Stream:
    """A hyperplane through the centre of the unit cube (10 features, 5% label noise) that
    starts turning at onset and turns ``HYPERPLANE_DEGREES`` over ``transition_days``."""
    rng = np.random.default_rng(seed)
    n, d = shape.rows, 10
    x = rng.uniform(0.0, 1.0, (n, d))
    w0 = rng.uniform(0.0, 1.0, d)
    w0 /= np.linalg.norm(w0)
    u = rng.normal(size=d)
    u -= (u @ w0) * w0
    u /= np.linalg.norm(u)
    days = np.arange(n) * shape.every_minutes / (24 * 60)
    progress = np.clip((days - shape.onset_day) / shape.transition_days, 0.0, 1.0)
    angle = np.radians(HYPERPLANE_DEGREES) * progress
    w = np.cos(angle)[:, None] * w0 + np.sin(angle)[:, None] * u
    y = (np.sum(w * (x - 0.5), axis=1) >= 0).astype(np.float64)
    flip = rng.uniform(size=n) < 0.05
    y[flip] = 1.0 - y[flip]
    return _stream(
        "hyperplane-gradual", "gradual", "classification", shape, x, y, [f"x{i}" for i in range(d)]
    )


# --- regression --------------------------------------------------------------------------


def friedman(seed: int, shape: Shape, drift: str | None) -> Stream:
    """Friedman #1 (river; 10 features, 5 relevant, noise sd 1). ``drift``: None (stationary),
    ``abrupt`` (global abrupt, never back), ``recurring`` (global abrupt, back after
    ``recur_days``) or ``gradual`` (global and slow gradual, over ``transition_days``)."""
    from river.datasets import synth

    n, onset = shape.rows, shape.index(shape.onset_day)
    if drift is None:
        data: object = synth.Friedman(seed=seed)
    elif drift == "abrupt":
        data = synth.FriedmanDrift("gra", position=(onset, n + 1), seed=seed)
    elif drift == "recurring":
        back = shape.index(shape.onset_day + shape.recur_days)
        data = synth.FriedmanDrift("gra", position=(onset, back), seed=seed)
    elif drift == "gradual":
        width = shape.index(shape.transition_days)
        data = synth.FriedmanDrift(
            "gsg", position=(onset, n + width + 1), transition_window=width, seed=seed
        )
    else:
        raise ValueError(f"friedman drift {drift!r}: use None, abrupt, recurring or gradual")
    x, y, names = _river(data, n)
    kind = drift or "stationary"
    return _stream(f"friedman-{kind}", kind, "regression", shape, x, y, names)


def _friedman_y(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (
        10 * np.sin(np.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
        + rng.normal(0.0, 1.0, len(x))
    )


def covariate(seed: int, shape: Shape, harmful: bool) -> Stream:
    """Friedman #1 with the same relation throughout, and inputs that move at onset.

    ``harmful``: x3 and x4 (linear terms) move from [0, 1] to [1, 2], where the target keeps
    rising but trees predict the flat value at the edge of what they saw (two of ten
    features: too few for the data-drift share). Otherwise six features (x0, x1, x3 relevant;
    x5-x7 not) narrow to half of their range: inside the trained support, same relation.
    """
    rng = np.random.default_rng(seed)
    n, onset = shape.rows, shape.index(shape.onset_day)
    x = rng.uniform(0.0, 1.0, (n, 10))
    if harmful:
        x[onset:, 3:5] += 1.0
    else:
        x[onset:, [0, 1, 5, 6]] *= 0.5
        x[onset:, [3, 7]] = 0.5 + 0.5 * x[onset:, [3, 7]]
    y = _friedman_y(x, rng)
    name, kind = ("covariate-harmful", "abrupt") if harmful else ("covariate-benign", "benign")
    return _stream(name, kind, "regression", shape, x, y, [f"x{i}" for i in range(10)])


def _stream(
    name: str, kind: str, task: str, shape: Shape, x: np.ndarray, y: np.ndarray, names: list[str]
) -> Stream:
    onset = None if kind == "stationary" else shape.at(shape.onset_day)
    returns = shape.at(shape.onset_day + shape.recur_days) if kind == "recurring" else None
    return Stream(
        name=name,
        kind=kind,
        task=task,
        frame=_table(shape, x, y, names),
        spec_toml=spec_toml(name, task, names, shape.training_days),
        onset=onset,
        shape=shape,
        returns=returns,
    )


STREAMS: dict[str, Callable[[int, Shape], Stream]] = {
    "agrawal-abrupt": lambda seed, shape: agrawal(seed, shape, change=True),
    "sea-abrupt": lambda seed, shape: sea(seed, shape, change=True),
    "hyperplane-gradual": hyperplane,
    "agrawal-stationary": lambda seed, shape: agrawal(seed, shape, change=False),
    "sea-stationary": lambda seed, shape: sea(seed, shape, change=False),
    "friedman-abrupt": lambda seed, shape: friedman(seed, shape, "abrupt"),
    "friedman-recurring": lambda seed, shape: friedman(seed, shape, "recurring"),
    "friedman-gradual": lambda seed, shape: friedman(seed, shape, "gradual"),
    "friedman-stationary": lambda seed, shape: friedman(seed, shape, None),
    "covariate-harmful": lambda seed, shape: covariate(seed, shape, harmful=True),
    "covariate-benign": lambda seed, shape: covariate(seed, shape, harmful=False),
}
"""Every stream of the battery, by name, in the scorecard's order."""


def make(name: str, seed: int, shape: Shape = Shape()) -> Stream:
    """The stream ``name`` (a key of :data:`STREAMS`) for ``seed`` and ``shape``."""
    if name not in STREAMS:
        raise KeyError(f"stream {name!r}: use one of {', '.join(STREAMS)}")
    return STREAMS[name](seed, shape)
