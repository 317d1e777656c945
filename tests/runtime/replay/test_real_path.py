"""``driftline demo`` on Kafka and S3 as a new user runs it: a fresh broker, default settings.

The demo is ``driftline replay`` on the bundled bike data. Its consumer groups (one per
function, the replay's watch, the readers of the summary) join with the bus's *default*
group settings, not the fast ones of the other Kafka tests: joins take seconds on this
broker. A replay that judged "settled" before its groups had joined found no first version
("no version was deployed from the initial window").
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.kafka import TansuBroker
from tests.fixtures.s3 import S3Endpoint

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.slow]


def test_the_demo_on_a_fresh_broker_and_s3_serves_and_checks_drift(
    tansu_broker: TansuBroker, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    bucket = f"demo-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "driftline.runtime.cli",
        "demo",
        "--bus",
        f"kafka://{tansu_broker.bootstrap}",
        "--store",
        s3_endpoint.url(bucket),
        "--home",
        str(tmp_path / "home"),
        "--out",
        str(out),
        "--days",
        "38",
        "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions_served"][0] == 1, "v1 trained on the first 28 days and served"
    assert summary["rows"] > 200 and summary["rows_not_scored"] == 0
    assert summary["windows_checked"] >= 1, "drift-check judged the closed windows"
    assert summary["dead_lettered"] == 0
