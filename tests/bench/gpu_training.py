"""CPU vs GPU retraining on the same data: scikit-learn, XGBoost on the CPU, XGBoost on CUDA.

    .venv/bin/python -m tests.bench.gpu_training [--days 365] [--rounds 500] [--repeat 3]

Trains the bundled bike-sharing spec (HistGradientBoostingRegressor) on the trailing
``--days`` of the bundled data with each trainer through ``training.train`` (fit, ONNX
export, parity check), ``--repeat`` times, and reports the best wall time, the holdout MAE
and the ONNX parity of each. The CUDA row needs the ``[gpu]`` extra and a GPU; without
them it is reported as skipped, with why. The data is small (the whole set is 17k rows), so
``--rows-factor`` repeats it, jittered, to give the GPU something to chew on. Last line:
JSON ``{"device", "rows", "results": {trainer: {"seconds", "mae", "parity"}}}``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.functions.ml.gpu_training import XGBoostTrainer
from driftline.functions.ml.spec import TIME, ModelSpec, validate_frame
from driftline.functions.ml.training import SklearnTrainer, train
from driftline.runtime.cluster.capabilities import detect

SAMPLE = Path(__file__).resolve().parents[2] / "runtime" / "replay" / "sample"


def _data(days: float, factor: int) -> tuple[ModelSpec, pd.DataFrame, Any]:
    spec = ModelSpec.from_toml(SAMPLE / "bike_sharing.toml")
    good, _ = validate_frame(spec, pd.read_csv(SAMPLE / "bike_sharing_hour.csv"))
    now = good[TIME].max()
    good = good[good[TIME] > now - timedelta(days=days)]
    if factor > 1:  # more rows in the same window: copies with a little noise on the weather
        rng = np.random.default_rng(0)
        copies = [good]
        for _ in range(factor - 1):
            copy = good.copy()
            for col in ("temp", "atemp", "hum", "windspeed"):
                copy[col] = copy[col] + rng.normal(0, 0.01, len(copy))
            copies.append(copy)
        good = pd.concat(copies).sort_values(TIME, kind="stable")
    days_spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"days": days})}
    )
    return days_spec, good, now


def _run(spec: ModelSpec, df: pd.DataFrame, now: Any, trainer: Any, repeat: int) -> dict[str, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = train(spec, df, now=now, trainer=trainer)
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return {
        "seconds": round(best, 3),
        "mae": round(result.metrics["mae"], 3),
        "parity": result.parity,
        "trainer": result.trainer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--rounds", type=int, default=500, help="boosting rounds (max_iter)")
    parser.add_argument("--rows-factor", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec, df, now = _data(args.days, args.rows_factor)
    params = {**spec.estimator.params, "max_iter": args.rounds}
    spec = spec.model_copy(
        update={"estimator": spec.estimator.model_copy(update={"params": params})}
    )
    caps = detect()
    results: dict[str, Any] = {}
    trainers: list[tuple[str, Any]] = [("sklearn-cpu", SklearnTrainer())]
    try:
        import onnxmltools  # noqa: F401
        import xgboost  # noqa: F401

        trainers.append(("xgboost-cpu", XGBoostTrainer("cpu")))
        if caps.gpu_trainer:
            trainers.append(("xgboost-cuda", XGBoostTrainer("cuda")))
        else:
            results["xgboost-cuda"] = {"skipped": caps.sources.get("gpu_trainer", "no GPU trainer")}
    except ImportError as exc:
        results["xgboost"] = {"skipped": f"{exc} (pip install 'driftline[gpu]')"}
    for name, trainer in trainers:
        results[name] = _run(spec, df, now, trainer, args.repeat)
        print(f"{name:14s} {results[name]}", flush=True)
    device = ", ".join(g.name for g in caps.gpus) or f"CPU only ({caps.cpu_cores} cores)"
    print(json.dumps({"device": device, "rows": len(df), "results": results}))


if __name__ == "__main__":
    main()
