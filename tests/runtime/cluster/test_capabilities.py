"""Capabilities: detection and its overrides, and the GPU or CPU paths they select.

No GPU is needed: detection is driven by settings overrides and by a stand-in ``nvidia-smi``;
the GPU trainer is replaced by a recording stand-in where a test checks that retrain picks
it. Where xgboost and onnxmltools are installed (the ``[gpu]`` extra), the XGBoost export
path also runs for real, on the CPU.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.events import DatasetUploaded
from driftline.functions.ingest import ingest
from driftline.functions.ml import gpu_training, serving
from driftline.functions.ml.gpu_training import (
    XGBoostTrainer,
    choose_trainer,
    train_for,
    xgboost_params,
)
from driftline.functions.ml.layout import spec_key
from driftline.functions.ml.spec import ModelSpec, validate_frame
from driftline.functions.ml.training import SklearnTrainer, train
from driftline.functions.retrain import retrain
from driftline.runtime.cluster import capabilities as caps_mod
from driftline.runtime.cluster.capabilities import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    GPU_TRAINER,
    Capabilities,
    GpuInfo,
    detect,
    parse_smi,
    scoring_providers,
)
from driftline.runtime.context import Context
from driftline.runtime.errors import ConfigError
from driftline.runtime.settings import Settings
from tests.functions.synthetic import SPEC_TOML, context, frame

score = importlib.import_module(
    "driftline.functions.score"
)  # the package exports the function by that name
CPU = Capabilities(cpu_cores=2)
GPU = Capabilities(
    cpu_cores=8,
    gpus=(GpuInfo(0, "H100", 81_559),),
    onnx_providers=(CUDA_PROVIDER, CPU_PROVIDER),
    gpu_trainer=GPU_TRAINER,
)
HGB_TOML = SPEC_TOML.replace(
    'class = "sklearn.linear_model.Ridge"\nparams = { alpha = 1.0 }',
    'class = "sklearn.ensemble.HistGradientBoostingRegressor"\n'
    "params = { max_iter = 40, learning_rate = 0.2, random_state = 0 }",
)
SMI_OUTPUT = """0, NVIDIA H100 80GB HBM3, 81559, GPU-5a3c0f6e-1111-2222-3333-444455556666
1, NVIDIA H100 80GB HBM3, 81559, GPU-77aa0f6e-1111-2222-3333-444455556666
"""


@pytest.fixture
def no_gpu_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A PATH with no nvidia-smi, no NVML, and no CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(caps_mod, "_nvml_gpus", lambda: None)
    for name in list(os.environ):
        if name.startswith("DRIFTLINE_"):
            monkeypatch.delenv(name)
    return tmp_path


def _fake_smi(folder: Path, output: str = SMI_OUTPUT) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(
        f"#!/bin/sh\nprintf '%s' '{output}'\n"
    )  # a shell builtin: PATH holds nothing else
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)


# -- detection ------------------------------------------------------------------------------


def test_a_machine_without_gpu_tools_reports_cpus_memory_and_no_gpu(no_gpu_tools: Path) -> None:
    caps = detect(Settings())
    assert caps.cpu_cores >= 1 and caps.memory_mb > 0
    assert not caps.has_gpu and caps.sources["gpus"] == "none"
    assert caps.gpu_trainer is None and caps.sources["gpu_trainer"] == "no GPU"
    assert CPU_PROVIDER in caps.onnx_providers


def test_gpus_are_found_with_nvidia_smi(no_gpu_tools: Path) -> None:
    _fake_smi(no_gpu_tools)
    caps = detect(Settings())
    assert caps.sources["gpus"] == "nvidia-smi"
    assert [(g.index, g.name, g.memory_mb) for g in caps.gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 81559),
        (1, "NVIDIA H100 80GB HBM3", 81559),
    ]


def test_cuda_visible_devices_narrows_the_gpus(
    no_gpu_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_smi(no_gpu_tools)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-77aa")
    assert [g.index for g in detect(Settings()).gpus] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect(Settings()).gpus == ()


def test_settings_pin_the_gpu_count(no_gpu_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(no_gpu_tools)
    assert detect(Settings(gpus=0)).gpus == ()
    monkeypatch.setenv("DRIFTLINE_GPUS", "3")
    claimed = detect(Settings())
    assert len(claimed.gpus) == 3 and claimed.gpus[0].name.startswith("NVIDIA")  # real ones first
    assert claimed.sources["gpus"] == "override"


def test_a_cpu_machine_can_play_a_gpu_runner(no_gpu_tools: Path) -> None:
    caps = detect(Settings(gpus=1))
    assert caps.has_gpu and caps.gpus[0].name == "pinned by DRIFTLINE_GPUS"
    assert caps.gpu_trainer is None or caps.gpu_trainer == GPU_TRAINER  # only if xgboost has CUDA


def test_the_override_replaces_fields_and_refuses_unknown_ones(
    no_gpu_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DRIFTLINE_CAPABILITIES_OVERRIDE",
        '{"cpu_cores": 64, "gpus": [{"name": "A100", "memory_mb": 40960}], "gpu_trainer": "xgboost-cuda"}',
    )
    caps = detect(Settings())
    assert (
        caps.cpu_cores == 64
        and caps.gpus == (GpuInfo(0, "A100", 40960),)
        and caps.gpu_trainer == GPU_TRAINER
    )
    assert caps.sources["cpu_cores"] == "override"
    with pytest.raises(ConfigError, match="unknown field"):
        detect(Settings(capabilities_override={"tpus": 8}))


def test_parse_smi_skips_what_is_not_a_gpu_line() -> None:
    assert parse_smi("No devices were found\n") == ()
    assert parse_smi("0, Tesla T4, [N/A], GPU-x\n") == (GpuInfo(0, "Tesla T4", 0, "GPU-x"),)


def test_capabilities_round_trip_as_dicts() -> None:
    assert Capabilities.from_dict(GPU.as_dict()) == GPU


def test_the_gpu_trainer_needs_a_gpu_xgboost_with_cuda_and_onnxmltools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert caps_mod.gpu_trainer(CPU) == (None, "no GPU")
    found = {"xgboost", "onnxmltools"}
    monkeypatch.setattr(
        caps_mod.importlib.util, "find_spec", lambda name: object() if name in found else None
    )
    monkeypatch.setitem(
        sys.modules, "xgboost", types.SimpleNamespace(build_info=lambda: {"USE_CUDA": True})
    )
    assert caps_mod.gpu_trainer(GPU) == (GPU_TRAINER, "xgboost with CUDA")
    monkeypatch.setitem(
        sys.modules, "xgboost", types.SimpleNamespace(build_info=lambda: {"USE_CUDA": False})
    )
    assert caps_mod.gpu_trainer(GPU)[0] is None
    found.discard("onnxmltools")
    assert "onnxmltools is not installed" in caps_mod.gpu_trainer(GPU)[1]


def test_the_cpu_build_of_xgboost_is_not_taken_for_a_gpu_trainer() -> None:
    """The installed xgboost itself (the suite has the xgboost-cpu build): a runner with a GPU
    but this build trains on the CPU path, and says why."""
    xgboost = pytest.importorskip("xgboost")
    if xgboost.build_info().get("USE_CUDA"):
        pytest.skip("this xgboost is built with CUDA")
    assert caps_mod.gpu_trainer(GPU) == (None, "xgboost was built without CUDA (xgboost-cpu?)")


# -- scoring: CUDA provider only where there is a GPU and onnxruntime has it -----------------


def test_scoring_providers_follow_the_capabilities() -> None:
    assert scoring_providers(None) == [CPU_PROVIDER]
    assert scoring_providers(CPU) == [CPU_PROVIDER]
    assert scoring_providers(GPU) == [CUDA_PROVIDER, CPU_PROVIDER]
    cuda_build_no_gpu = Capabilities(onnx_providers=(CUDA_PROVIDER, CPU_PROVIDER))
    assert scoring_providers(cuda_build_no_gpu) == [CPU_PROVIDER]


@pytest.mark.parametrize(
    ("caps", "expected"), [(CPU, [CPU_PROVIDER]), (GPU, [CUDA_PROVIDER, CPU_PROVIDER])]
)
def test_the_score_function_builds_its_sessions_for_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caps: Capabilities, expected: list[str]
) -> None:
    ctx = context(tmp_path)
    ctx.capabilities = caps
    sessions = score.score.spec.init(ctx)  # type: ignore[attr-defined]
    assert sessions.providers == expected
    result = train(ModelSpec.from_toml(SPEC_TOML), _validated(frame(24 * 14)))
    ctx.store.put("models/synth/a/model.onnx", result.onnx)
    used: list[Any] = []
    monkeypatch.setattr(
        serving,
        "load_session",
        lambda data, spec, providers=None, intra_op_threads=0: used.append(providers),
    )
    sessions.deploy("synth", 1, "models/synth/a/model.onnx", result.sha256)
    assert used == [expected]


# -- training: the GPU trainer where the capabilities have it, the CPU otherwise --------------


def test_the_gpu_trainer_is_chosen_only_with_a_gpu_trainer_and_a_boosted_tree_spec() -> None:
    hgb, ridge = ModelSpec.from_toml(HGB_TOML), ModelSpec.from_toml(SPEC_TOML)
    chosen = choose_trainer(hgb, GPU)
    assert isinstance(chosen, XGBoostTrainer) and chosen.device == "cuda"
    assert choose_trainer(hgb, CPU) is None
    assert choose_trainer(hgb, None) is None
    assert choose_trainer(ridge, GPU) is None, "no XGBoost equivalent of a linear model"


def test_xgboost_params_mirror_the_spec() -> None:
    params = xgboost_params(ModelSpec.from_toml(HGB_TOML))
    assert params == {
        "n_estimators": 40,
        "learning_rate": 0.2,
        "random_state": 0,
        "max_leaves": 31,
        "max_depth": 0,
        "grow_policy": "lossguide",
        "reg_lambda": 0.0,
        "max_bin": 255,
        "colsample_bynode": 1.0,
        "min_child_weight": 20,
        "objective": "reg:squarederror",
    }
    odd = HGB_TOML.replace("random_state = 0", "random_state = 0, monotonic_cst = [1, 0, 0]")
    assert xgboost_params(ModelSpec.from_toml(odd)) is None


class _RecordingGpuTrainer(SklearnTrainer):
    """Stands in for XGBoost on CUDA: fits with scikit-learn, but says it ran on the GPU."""

    calls: list[str] = []

    def __init__(self, device: str = "cuda"):
        self.device = device

    def fit(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Any:
        self.calls.append(self.device)
        return super().fit(spec, x, y)

    def describe(self, model: Any) -> str:
        return f"stand-in ({self.device})"


def _retrain(tmp_path: Path, caps: Capabilities) -> Any:
    ctx: Context = context(tmp_path)
    ctx.store.put(spec_key("synth"), HGB_TOML.encode())
    ctx.capabilities = caps
    ctx.store.put("uploads/a.csv", frame(24 * 14).to_csv(index=False).encode())
    ctx.begin("upload-1", "dataset.uploaded", None, None)
    ingested = ingest(DatasetUploaded(model="synth", key="uploads/a.csv"), ctx)
    ctx.begin("ingested-1", "dataset.ingested", None, None)
    return retrain(ingested, ctx)


def test_retrain_trains_on_the_gpu_when_the_runner_has_a_gpu_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_training, "XGBoostTrainer", _RecordingGpuTrainer)
    _RecordingGpuTrainer.calls = []
    trained = _retrain(tmp_path, GPU)
    # fitted on the chosen window, then refitted with the holdout: both on the GPU
    assert _RecordingGpuTrainer.calls == ["cuda", "cuda"] and trained.trainer == "stand-in (cuda)"


def test_retrain_trains_on_the_cpu_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_training, "XGBoostTrainer", _RecordingGpuTrainer)
    _RecordingGpuTrainer.calls = []
    trained = _retrain(tmp_path, CPU)
    assert (
        _RecordingGpuTrainer.calls == []
        and "scikit-learn" in trained.trainer
        and trained.trainer.endswith("cpu)")
    )


def test_a_failing_gpu_trainer_falls_back_to_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def out_of_memory(self: Any, spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Any:
        raise MemoryError("CUDA out of memory")

    monkeypatch.setattr(XGBoostTrainer, "fit", out_of_memory)
    with caplog.at_level(logging.WARNING, logger="driftline.fn.gpu_training"):
        result = train_for(
            ModelSpec.from_toml(HGB_TOML), _validated(frame(24 * 14)), capabilities=GPU
        )
    assert "scikit-learn" in result.trainer
    assert (
        "GPU training failed (MemoryError: CUDA out of memory); training on the CPU" in caplog.text
    )


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_xgboost_path_exports_onnx_that_passes_the_parity_check(task: str) -> None:
    """The real XGBoost → onnxmltools path, on the CPU (the GPU only changes where it fits)."""
    pytest.importorskip("xgboost")
    pytest.importorskip("onnxmltools")
    toml, df = HGB_TOML, frame(24 * 14)
    if task == "classification":
        toml = toml.replace('task = "regression"', 'task = "classification"').replace(
            "HistGradientBoostingRegressor", "HistGradientBoostingClassifier"
        )
        df["y"] = (df["y"] > df["y"].median()).astype(int)
    spec = ModelSpec.from_toml(toml)
    result = train(spec, _validated(df), trainer=XGBoostTrainer(device="cpu"))
    assert result.trainer.startswith(
        ("XGBRegressor (xgboost", "XGBClassifier (xgboost")
    ) and result.trainer.endswith("cpu)")
    key = "max_abs_diff" if task == "regression" else "mismatches"
    assert key in result.parity


def _validated(df: Any) -> Any:
    good, _bad = validate_frame(ModelSpec.from_toml(SPEC_TOML), df)
    return good


def test_the_runner_and_the_trainer_name_the_gpu_trainer_alike() -> None:
    assert GPU_TRAINER == gpu_training.GPU_TRAINER
