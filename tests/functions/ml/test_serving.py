"""The serving core's sessions: a few rows on the caller's thread, many on onnxruntime's pool,
the same answers either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftline.functions.ml.serving import SMALL_ROWS, ModelServer
from driftline.runtime.platform import Platform
from driftline.runtime.settings import Settings
from tests.runtime.http.helpers import MODEL, new_home, trained


def test_small_inputs_score_on_one_thread_and_large_ones_on_the_pool(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    model = trained(tmp_path_factory)
    platform = Platform.open(Settings(home=new_home(model, tmp_path / "home", model.v1)))
    try:
        served = ModelServer(platform.store, platform.registry).production(MODEL)
        options = served.session.get_session_options()
        assert options.intra_op_num_threads == 1, "a request's rows run on its own thread"
        rows = np.random.default_rng(3).normal(size=(SMALL_ROWS * 4, 3)).astype(np.float32)

        small = served.predict(rows[:SMALL_ROWS])
        assert "pool" not in vars(served), "no pool session until a large input comes"
        large = served.predict(rows)
        assert "pool" in vars(served), "the large input made the pool session"
        pool = served.pool
        assert pool is not served.session
        assert pool.get_session_options().intra_op_num_threads == 0, "onnxruntime's choice"
        np.testing.assert_allclose(large[:SMALL_ROWS], small, rtol=1e-6)
        assert large.shape == (len(rows),) and served.predict(rows[:0]).shape == (0,)
        served.predict(rows)
        assert served.pool is pool, "made once"
    finally:
        platform.close()
