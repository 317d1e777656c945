"""The installed package is the tested package.

The wheel is built from the tracked files (a copy: no stale ``build/`` output can slip in),
installed into a fresh virtual environment outside the checkout, and used there: it
decodes every frozen event fixture (events written with older schemas included) and runs
a short ``driftline demo``. The fresh environment gets its dependencies from the test
environment (a path in a ``.pth`` file: no network here); ``driftline`` itself comes only
from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: object, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def test_the_wheel_installed_elsewhere_decodes_old_events_and_runs_the_demo(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    tracked = _run("git", "ls-files", "-z", cwd=ROOT).split("\0")
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         tmp_path / "dist", source, cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("driftline-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "events" / "schemas").rglob("*.avsc"):
        assert f"driftline/{path.relative_to(ROOT).as_posix()}" in shipped, path.name
    assert "driftline/runtime/replay/sample/bike_sharing_hour.csv" in shipped
    for path in (ROOT / "runtime" / "http" / "ui").glob("*/*.*"):  # the dashboard's pages
        assert f"driftline/{path.relative_to(ROOT).as_posix()}" in shipped, path.name

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                   cwd=tmp_path).strip()  # fmt: skip
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    fixtures = tmp_path / "fixtures"
    shutil.copytree(ROOT / "tests" / "events" / "fixtures", fixtures)
    decoded = _run(python, "-c", _DECODE, fixtures, cwd=tmp_path)
    where, count = json.loads(decoded)
    assert where.startswith(purelib) and count == len(list(fixtures.glob("*.avro")))

    out = tmp_path / "demo"
    _run(venv / "bin" / "driftline", "demo", "--out", out, "--days", "33", "--quiet", cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions_served"][0] == 1 and summary["rows"] > 0


_DECODE = """
import json, sys
from pathlib import Path
import driftline.events as events
from driftline.events import Codec
codec, count = Codec(), 0
for path in sorted(Path(sys.argv[1]).glob("*.avro")):
    event_type = path.name.split("@")[0].removesuffix(".avro")
    assert codec.decode_value(path.read_bytes(), event_type).TYPE == event_type
    count += 1
print(json.dumps([events.__file__, count]))
"""
