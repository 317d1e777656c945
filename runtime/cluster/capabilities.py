"""What a runner has: CPU cores, memory, GPUs, onnxruntime providers, a GPU trainer.

:func:`detect` looks at the machine once, at start-up:

- CPU cores: the cores this process may run on, capped by a cgroup CPU quota (a
  Kubernetes ``limits.cpu``);
- memory: physical memory, capped by a cgroup memory limit;
- GPUs: NVML (``nvidia-ml-py``, the ``[gpu]`` extra) when importable, else
  ``nvidia-smi``; ``CUDA_VISIBLE_DEVICES`` narrows what either finds;
- onnxruntime's available execution providers (``CUDAExecutionProvider`` only with the
  ``onnxruntime-gpu`` build);
- a GPU trainer: ``xgboost-cuda`` when xgboost was built with CUDA, onnxmltools can
  export its models, and there is a GPU.

Settings override any of it (tests, and pinning a runner): ``DRIFTLINE_GPUS=0`` hides the
GPUs of a machine, ``DRIFTLINE_GPUS=1`` claims one on a machine without any, and
``DRIFTLINE_CAPABILITIES_OVERRIDE='{"cpu_cores": 4, "gpu_trainer": null}'`` replaces fields.
Detection never raises: what cannot be probed is reported as absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("driftline.capabilities")

GPU_TRAINER = "xgboost-cuda"
"""The GPU trainer this runner offers when xgboost has CUDA; the same name as
``driftline.functions.ml.gpu_training.GPU_TRAINER`` (a test holds them equal). Not imported
from there: that would load every built-in function into each runner's capability probe."""
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GpuInfo:
    """One GPU this runner may use."""

    index: int
    name: str
    memory_mb: int = 0
    uuid: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What one runner process has; announced in its heartbeats."""

    host: str = ""
    cpu_cores: int = 1
    memory_mb: int = 0
    gpus: tuple[GpuInfo, ...] = ()
    onnx_providers: tuple[str, ...] = (CPU_PROVIDER,)
    gpu_trainer: str | None = None
    """``xgboost-cuda`` when retraining can run on a GPU here, else None."""
    sources: dict[str, str] = field(default_factory=dict)
    """How each part was found: ``gpus: nvml | nvidia-smi | override | none`` and so on."""

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def scoring_providers(self) -> list[str]:
        """onnxruntime providers for scoring: CUDA first when this runner has both it and a GPU.

        ``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` even on a machine without a GPU,
        so the provider alone does not say the GPU path can run.
        """
        if self.has_gpu and CUDA_PROVIDER in self.onnx_providers:
            return [CUDA_PROVIDER, CPU_PROVIDER]
        return [CPU_PROVIDER]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpus"] = [asdict(g) for g in self.gpus]
        data["onnx_providers"] = list(self.onnx_providers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capabilities:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["gpus"] = _gpus(known.get("gpus", ()))
        if "onnx_providers" in known:
            known["onnx_providers"] = tuple(known["onnx_providers"])
        return cls(**known)


def scoring_providers(caps: Capabilities | None) -> list[str]:
    """:meth:`Capabilities.scoring_providers`, or the CPU alone when there are no capabilities."""
    return caps.scoring_providers() if caps is not None else [CPU_PROVIDER]


def detect(settings: Any = None) -> Capabilities:
    """Probe this machine, then apply the overrides in ``settings`` (a :class:`Settings`)."""
    sources: dict[str, str] = {}
    gpus, sources["gpus"] = _detect_gpus()
    caps = Capabilities(
        host=socket.gethostname(),
        cpu_cores=cpu_cores(),
        memory_mb=memory_mb(),
        gpus=gpus,
        onnx_providers=onnx_providers(),
        sources=sources,
    )
    caps = _override(caps, settings)
    trainer, why = gpu_trainer(caps)
    if "gpu_trainer" not in caps.sources:
        caps = replace(caps, gpu_trainer=trainer, sources={**caps.sources, "gpu_trainer": why})
    return caps


def _override(caps: Capabilities, settings: Any) -> Capabilities:
    pinned = getattr(settings, "gpus", None)
    if pinned is not None:
        found = list(caps.gpus[:pinned])
        found += [
            GpuInfo(index=i, name="pinned by DRIFTLINE_GPUS") for i in range(len(found), pinned)
        ]
        caps = replace(caps, gpus=tuple(found), sources={**caps.sources, "gpus": "override"})
    extra: dict[str, Any] = dict(getattr(settings, "capabilities_override", None) or {})
    if not extra:
        return caps
    unknown = sorted(set(extra) - set(Capabilities.__dataclass_fields__) - {"sources"})
    if unknown:
        from driftline.runtime.errors import ConfigError

        raise ConfigError(
            f"capabilities_override: unknown field(s) {unknown}; "
            f"known: {sorted(set(Capabilities.__dataclass_fields__) - {'sources'})}"
        )
    merged = {**caps.as_dict(), **extra}
    merged["sources"] = {**caps.sources, **{k: "override" for k in extra}}
    return Capabilities.from_dict(merged)


def _gpus(value: Any) -> tuple[GpuInfo, ...]:
    """GPUs from an override or a heartbeat: a count, or a list of dicts."""
    if isinstance(value, int):
        return tuple(GpuInfo(index=i, name="override") for i in range(value))
    return tuple(
        g if isinstance(g, GpuInfo) else GpuInfo(**{"index": i, **g}) for i, g in enumerate(value)
    )


# --- probes ------------------------------------------------------------------------------


def cpu_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _read("/sys/fs/cgroup/cpu.max").split()
    if len(quota) == 2 and quota[0] != "max":
        try:
            cores = min(cores, max(1, int(int(quota[0]) / int(quota[1]) + 0.999)))
        except ValueError:
            pass
    return cores


def memory_mb() -> int:
    """Physical memory in MiB, capped by a cgroup v2 memory limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    limit = _read("/sys/fs/cgroup/memory.max")
    if limit.isdigit():
        total = min(total, int(limit)) if total else int(limit)
    return int(total // (1024 * 1024))


def onnx_providers() -> tuple[str, ...]:
    try:
        import onnxruntime
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def _detect_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    gpus, source = _nvml_gpus(), "nvml"
    if gpus is None:
        gpus, source = _smi_gpus(), "nvidia-smi"
    if gpus is None:
        return (), "none"
    return _visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES")), source


def _nvml_gpus() -> tuple[GpuInfo, ...] | None:
    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        pynvml: Any = importlib.import_module("pynvml")
        pynvml.nvmlInit()
    except Exception:  # no driver, or no libnvidia-ml: NVML says nothing
        return None
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            found.append(GpuInfo(i, _text(name), int(memory), _text(uuid)))
        return tuple(found)
    except Exception:
        log.warning("NVML found a driver but listing GPUs failed", exc_info=True)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _smi_gpus() -> tuple[GpuInfo, ...] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        log.warning("nvidia-smi is installed but failed; reporting no GPU", exc_info=True)
        return None
    return parse_smi(out)


def parse_smi(text: str) -> tuple[GpuInfo, ...]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits``."""
    found = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        memory = int(parts[2]) if parts[2].isdigit() else 0
        found.append(GpuInfo(int(parts[0]), parts[1], memory, parts[3] if len(parts) > 3 else ""))
    return tuple(found)


def _visible(gpus: tuple[GpuInfo, ...], visible: str | None) -> tuple[GpuInfo, ...]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` (indexes or UUIDs) leaves to this process."""
    if visible is None:
        return gpus
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if not wanted or wanted[0] in ("-1", "none", "NoDevFiles"):
        return ()
    kept = [
        g for w in wanted for g in gpus if str(g.index) == w or (g.uuid and g.uuid.startswith(w))
    ]
    return tuple(dict.fromkeys(kept))


def gpu_trainer(caps: Capabilities) -> tuple[str | None, str]:
    """Whether the GPU trainer can run here, and why not when it cannot."""
    if not caps.has_gpu:
        return None, "no GPU"
    for module in ("xgboost", "onnxmltools"):
        if importlib.util.find_spec(module) is None:
            return None, f"{module} is not installed (pip install 'driftline[gpu]')"
    try:
        import xgboost

        built_with_cuda = bool(xgboost.build_info().get("USE_CUDA"))
    except Exception as exc:  # a broken install must not stop the runner
        return None, f"xgboost failed to load: {exc}"
    if not built_with_cuda:
        return None, "xgboost was built without CUDA (xgboost-cpu?)"
    return GPU_TRAINER, "xgboost with CUDA"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
