"""What the lifecycle tests share: a spec file, a data file, and ONNX models trained elsewhere
(scikit-learn, converted with skl2onnx), right and wrong."""

from __future__ import annotations

from pathlib import Path

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from tests.functions.synthetic import SPEC_TOML, frame


def spec_file(folder: Path, text: str = SPEC_TOML) -> Path:
    path = folder / "synth.toml"
    path.write_text(text)
    return path


def data_file(folder: Path, hours: int = 24 * 14, **kw: object) -> Path:
    path = folder / "train.csv"
    frame(hours, **kw).to_csv(path, index=False)  # type: ignore[arg-type]
    return path


def external_onnx(folder: Path, features: tuple[str, ...] = ("x1", "x2", "x3")) -> Path:
    """A linear model fitted on the synthetic rows outside Driftline, as ONNX."""
    rows = frame(24 * 14, seed=5)
    model = LinearRegression().fit(rows[list(features)].to_numpy(), rows["y"].to_numpy())
    onnx = convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, len(features)]))], target_opset=17
    )
    path = folder / f"external-{len(features)}.onnx"
    path.write_bytes(onnx.SerializeToString())
    return path
