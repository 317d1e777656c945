"""A small synthetic regression problem and spec, for function tests and loop tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from driftline.functions.ml.layout import spec_key
from driftline.functions.ml.spec import ModelSpec
from driftline.runtime.context import Context
from driftline.runtime.registry import Registry
from driftline.runtime.store import LocalStore

SPEC_TOML = """
name = "synth"
task = "regression"
target = "y"
features = ["x1", "x2", "x3"]

[time]
column = "ts"

[estimator]
class = "sklearn.linear_model.Ridge"
params = { alpha = 1.0 }

[training]
days = 14
min_rows = 50

[drift]
window_days = 3
min_window_rows = 48
min_labeled_rows = 24
consecutive = 1
cooldown_days = 3
"""


def spec() -> ModelSpec:
    return ModelSpec.from_toml(SPEC_TOML)


def frame(
    hours: int, *, start: str = "2024-01-01", seed: int = 0, shift: float = 0.0, coef: float = 3.0
) -> pd.DataFrame:
    """Hourly rows; ``shift`` moves x1's distribution, ``coef`` changes y's relation to x1."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, hours)
    x2 = rng.normal(0, 1.0, hours)
    x3 = rng.uniform(0, 1, hours)
    y = coef * x1 - 2 * x2 + x3 + rng.normal(0, 0.3, hours) + 10
    ts = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    return pd.DataFrame(
        {"ts": ts.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "x1": x1, "x2": x2, "x3": x3, "y": y}
    )


def context(tmp_path: Any, function: str = "test", registry: Registry | None = None) -> Context:
    store = LocalStore(tmp_path / "store")
    store.put(spec_key("synth"), SPEC_TOML.encode())
    return Context(function=function, store=store, registry=registry or Registry())


def with_production(ctx: Context, hours: int = 24 * 14) -> Context:
    """``ctx`` after the real functions made synth v1 production: an upload of ``hours`` of
    rows ingested, trained on and registered."""
    from driftline.events import DatasetUploaded
    from driftline.functions.ingest import ingest
    from driftline.functions.register import register
    from driftline.functions.retrain import retrain

    ctx.store.put("uploads/a.csv", frame(hours).to_csv(index=False).encode())
    ctx.begin("upload-1", "dataset.uploaded", None, None)
    ingested = ingest(DatasetUploaded(model="synth", key="uploads/a.csv"), ctx)
    ctx.begin("ingested-1", "dataset.ingested", None, None)
    trained = retrain(ingested, ctx)
    assert trained is not None
    register(trained, ctx)
    return ctx
