"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) on a real ``driftline up``, after a short replay that trained, detected drift
and promoted v2. Screenshots of the pages go to ``build/screenshots/`` (or
``$DRIFTLINE_TEST_SCREENSHOTS``).

Chromium is found as ``$DRIFTLINE_TEST_CHROMIUM``, else ``chromium`` on the PATH; ``make
test`` installs Debian's package when it is missing and it can (root, apt-get). A missing
browser fails these tests: it never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftline.runtime.http.gateway import ADDRESS_FILE, running_gateway
from driftline.runtime.replay.run import replay
from driftline.runtime.settings import Settings
from tests.fixtures.kafka import free_port
from tests.functions.synthetic import SPEC_TOML, frame

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[3]
TOKEN = "browser-token"
MODEL = "synth"
WAIT_MS = 30_000


def _chromium() -> str:
    found = os.environ.get("DRIFTLINE_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "the browser tests need Chromium: `apt-get install chromium` (make test does it "
            "as root), or point DRIFTLINE_TEST_CHROMIUM at a Chromium or Chrome binary"
        )
    return found


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home after a 32-day replay: v1 trained, x1 shifts on day 25, v2 promoted."""
    work = tmp_path_factory.mktemp("replay")
    before = frame(24 * 24, seed=2)
    after = frame(24 * 8, seed=3, start="2024-01-25", shift=2.0, coef=6.0)
    pd.concat([before, after], ignore_index=True).to_csv(work / "data.csv", index=False)
    (work / "synth.toml").write_text(SPEC_TOML)
    summary = replay(
        work / "data.csv",
        work / "synth.toml",
        Settings(home=work / "home"),
        out=work / "out",
        progress=False,
    )
    assert summary["versions_served"] == [1, 2], summary
    # up's upload watcher has no checkpoint for the replay's training file: it would ingest
    # it again and train v3 while the tests look at v2
    shutil.rmtree(work / "home" / "store" / "uploads")
    return work / "home"


@pytest.fixture(scope="module")
def gateway(home: Path) -> Iterator[str]:
    """``driftline up`` on the replayed home, with an API token; yields its URL."""
    env = {**os.environ, "DRIFTLINE_API_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    args = ["up", "--home", str(home), "--port", str(free_port())]
    up = subprocess.Popen(
        [sys.executable, "-m", "driftline.runtime.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while (url := running_gateway(home)) is None:
            assert up.poll() is None, f"driftline up exited: {up.stdout.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "driftline up did not start in 90 s"
            time.sleep(0.2)
        yield url
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        assert up.stdout is not None
        up.stdout.close()
    assert not (home / ADDRESS_FILE).exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        yield chromium
        chromium.close()


class Page:
    """A browser tab on the gateway that keeps every console error and uncaught exception."""

    def __init__(self, browser: Any, base: str):
        self.base = base
        self.tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.tab.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.tab.on("dialog", lambda d: d.accept())

    def open(self, path: str) -> Any:
        answer = self.tab.goto(self.base + path)
        assert answer is not None and answer.ok, path
        return self.tab

    def shot(self, name: str) -> None:
        folder = Path(
            os.environ.get("DRIFTLINE_TEST_SCREENSHOTS") or ROOT / "build" / "screenshots"
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture
def page(browser: Any, gateway: str) -> Iterator[Page]:
    tab = Page(browser, gateway)
    yield tab
    tab.tab.close()


def _post(url: str, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (the test's own)
        return int(answer.status)


def test_the_models_page_shows_the_model_and_its_production_version(page: Page) -> None:
    tab = page.open("/ui")
    row = tab.locator(f'tr.model-row[data-model="{MODEL}"]')
    assert row.locator("td").nth(1).inner_text() == "v2"
    assert row.locator("td").nth(4).inner_text() == "2", "two versions"
    page.shot("models")
    assert page.errors == []


def test_the_model_page_lists_the_versions_and_draws_the_monitoring_chart(page: Page) -> None:
    tab = page.open(f"/ui/models/{MODEL}")
    assert tab.locator("tr.version-row").count() == 2
    assert tab.locator("tr.run-row").count() == 2, "v1's and v2's training runs"
    assert (
        tab.locator('tr.version-row[data-version="2"] td').nth(2).inner_text().startswith("drift:")
    ), "v2 was trained because of drift"
    tab.wait_for_selector("#monitoring .main-svg", timeout=WAIT_MS)
    lines = tab.locator("#monitoring .scatterlayer .trace path.js-line")
    assert lines.count() >= 2, "the metric and its baseline are drawn"
    assert all(
        len(d or "") > 10 for d in lines.evaluate_all("ps => ps.map(p => p.getAttribute('d'))")
    )
    assert (tab.locator("#monitoring .xtitle").text_content() or "").startswith("window end")
    assert "v2 promotion" in tab.locator("#monitoring .annotation").all_text_contents()
    legend = tab.locator("#monitoring .legendtext").all_text_contents()
    assert "drift.detected" in legend and "drift share" in legend, legend
    assert tab.locator("#monitoring .scatterlayer .trace .point").count() >= 5, "windows, detection"
    tab.wait_for_selector("#features .main-svg", timeout=WAIT_MS)
    bars = tab.locator("#features .barlayer .point")
    assert bars.count() == 3, "one bar per feature: its importance to the version"
    assert "importance to v" in (tab.locator("#features .xtitle").text_content() or "")
    assert "per 1,000 predictions" in tab.locator("#scoring").inner_text()
    page.shot("model")
    assert page.errors == []


def test_the_platform_page_shows_the_runners_and_a_new_dead_letter_without_a_reload(
    page: Page, gateway: str
) -> None:
    tab = page.open("/ui/platform")
    # up's own runner, and its drift-check child's (DRIFTLINE_MONITOR_PROCESS, on by
    # default), which beats a moment later: the page shows it when it does
    rows = tab.locator("tr.runner-row")
    rows.filter(has_text="drift-check").first.wait_for(timeout=WAIT_MS)
    assert rows.count() == 2, rows.all_inner_texts()
    serves = sorted(row.locator("td").nth(6).inner_text() for row in rows.all())
    assert serves == ["batch, ingest, notify, register, retrain, score", "drift-check"], serves
    assert tab.locator("tr.dlq-row").count() == 0
    bad = {"model": MODEL, "request_id": "poison", "columns": ["nope"], "rows": [[1.0]]}
    assert _post(gateway, "/v1/events/score.requested", bad) == 202
    row = tab.wait_for_selector("tr.dlq-row", timeout=WAIT_MS)  # the page refreshes itself
    assert row is not None
    text = row.inner_text()  # topic, partition, offset, function, the error and its type
    assert text.startswith("score.requested") and "\tscore\tValidationError: " in text, text
    page.shot("platform")
    assert page.errors == []


def test_the_replay_report_draws_its_charts_from_the_file_alone(browser: Any, home: Path) -> None:
    """report.html carries plotly.js: opened from disk, it draws both charts and asks
    nothing of any server."""
    tab = Page(browser, (home.parent / "out" / "report.html").as_uri())
    elsewhere: list[str] = []
    tab.tab.on("request", lambda r: r.url.startswith("file:") or elsewhere.append(r.url))
    tab.open("")
    for chart in ("#error", "#drift"):
        tab.tab.wait_for_selector(f"{chart} .main-svg", timeout=WAIT_MS)
        assert tab.tab.locator(f"{chart} .scatterlayer .trace path.js-line").count() >= 2
    legend = tab.tab.locator("#error .legendtext").all_text_contents()
    assert legend == ["served by the loop", "v1 never retrained", "deploys"], legend
    assert "units of y" in (tab.tab.locator("#error .ytitle").text_content() or "")
    tab.shot("replay-report")
    assert tab.errors == [] and elsewhere == []
    tab.tab.close()


def test_rollback_is_refused_without_the_token_and_moves_production_with_it(page: Page) -> None:
    tab = page.open(f"/ui/models/{MODEL}")
    production = tab.locator("#production")
    assert production.inner_text() == "v2"
    tab.get_by_role("button", name="Roll back to v1").click()
    tab.wait_for_selector("#status.bad", timeout=WAIT_MS)
    assert "refused (401)" in tab.locator("#status").inner_text()
    assert page.errors and all("401" in e for e in page.errors), "only the refused call failed"
    page.errors.clear()
    tab.fill("#token", TOKEN)
    tab.get_by_role("button", name="Roll back to v1").click()
    tab.wait_for_selector("#status.ok", timeout=WAIT_MS)
    tab.wait_for_function(
        "document.getElementById('production').textContent === 'v1'", timeout=WAIT_MS
    )
    assert tab.get_by_role("button", name="Roll back to v2").is_visible()
    page.shot("model-after-rollback")
    assert page.errors == []


def test_a_year_of_windows_and_300_versions_draw_a_readable_chart(browser: Any) -> None:
    """The model page over 5,000 windows and 300 versions (test_ui's a_year_app): the chart
    is drawn summarised, its deploy names do not overlap, and nothing fails."""
    from tests.runtime.http.helpers import live
    from tests.runtime.http.test_ui import a_year_app

    with live(a_year_app()) as base:
        page = Page(browser, base)
        tab = page.open(f"/ui/models/{MODEL}")
        tab.wait_for_selector("#monitoring .main-svg", timeout=WAIT_MS)
        tab.wait_for_selector("#features .main-svg", timeout=WAIT_MS)
        assert tab.locator("tr.drifted-row").count() == 20
        boxes = [
            b
            for b in tab.locator("#monitoring .annotation").evaluate_all(
                "as => as.map(a => { const r = a.getBoundingClientRect(); return [r.left, r.right]; })"
            )
        ]
        assert len(boxes) > 1
        boxes.sort()
        assert all(a[1] <= b[0] for a, b in zip(boxes, boxes[1:], strict=False)), boxes
        page.shot("model-a-year")
        assert page.errors == []
        page.tab.close()
