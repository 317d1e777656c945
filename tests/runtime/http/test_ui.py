"""The dashboard's pages over a real embedded home: synth v1 and v2 trained by the real
functions, three checked windows on the bus; no browser (tests/runtime/http/test_ui_browser.py
drives one)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftline.events import (
    DriftChecked,
    DriftDetected,
    Event,
    ModelDeployed,
    ModelRejected,
    ModelTrained,
    ScoreCompleted,
)
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.http.app import create_app
from driftline.runtime.http.ui import charts, plotly_js, views
from driftline.runtime.platform import Platform
from driftline.runtime.settings import Settings
from tests.conftest import wait_for
from tests.runtime.http.helpers import MODEL, new_home, trained

TOKEN = "ui-token"
PAGES = ["/ui", f"/ui/models/{MODEL}", "/ui/platform"]
START = datetime(2024, 2, 1, tzinfo=UTC)


REPORT_KEY = f"reports/{MODEL}/v2/20240203T0000.html"
REPORT = b"<html><body>an Evidently report</body></html>"


def _window(i: int, mae: float, *, detected: bool = False) -> DriftChecked:
    start = START + timedelta(days=i)
    return DriftChecked(
        model=MODEL,
        version=2,
        window=start.isoformat(),
        window_start=start,
        window_end=start + timedelta(days=1),
        rows=24,
        labeled_rows=24,
        drift_share=0.5 if detected else 0.0,
        metric="mae",
        metric_value=mae,
        baseline_metric=1.25,
        drifted=detected,
        detected=detected,
        cause="performance" if detected else None,
        report_key=REPORT_KEY if detected else None,
        drifted_features=["x2", "x1"] if detected else [],
        feature_drift={"x1": 0.001, "x2": 0.02, "x3": 0.4} if detected else {},
    )


WINDOWS = [_window(0, 1.5), _window(1, 2.5), _window(2, 9.75, detected=True)]
DETECTED = DriftDetected(
    model=MODEL,
    version=2,
    cause="performance",
    window=WINDOWS[2].window,
    window_end=WINDOWS[2].window_end + timedelta(hours=5),
    metric_value=9.5,
    idempotency_key="synth:2:3",
)


LOST = ModelTrained(
    model=MODEL,
    run_id="lost-run-0001",
    artifact_key="models/synth/lost.onnx",
    sha256="0" * 64,
    reference_key="models/synth/lost-reference.parquet",
    holdout_key="models/synth/lost-holdout.parquet",
    metrics={"mae": 3.25},
    trigger="drift:performance",
    rows=240,
    trainer="Ridge on the CPU",
    trials=["14 days: mae 3.25 (chosen)", "7 days: mae 3.5"],
)
REJECTED = ModelRejected(
    model=MODEL,
    run_id=LOST.run_id,
    reason="candidate mae 3.25 is worse than 1.5 (<b>champion</b>)",
    metric="mae",
)


def _trained(registered: Event) -> ModelTrained:
    """The model.trained a registered version came from (the helpers keep only the latter)."""
    fields = registered.model_dump(include=set(ModelTrained.model_fields))
    return ModelTrained(
        **fields,
        holdout_key="holdout.parquet",
        trainer="Ridge on the CPU",
        train_seconds=1.5,
        feature_importance=IMPORTANCE,
    )


IMPORTANCE = {"x1": 2.5, "x2": 1.25, "x3": 0.0}
SCORED = [
    ScoreCompleted(model=MODEL, request_id=f"r{i}", version=2, predictions=[1.0] * 4, seconds=0.002)
    for i in range(5)
] + [ScoreCompleted(model=MODEL, request_id="v2-endpoint", version=2, predictions=[1.0])]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Platform]]:
    model = trained(tmp_path_factory)
    runs = [_trained(model.v1[0]), _trained(model.v2[0]), LOST]
    events: list[Event] = [*model.v1, *model.v2, *WINDOWS, DETECTED, *runs, REJECTED, *SCORED]
    home = new_home(model, tmp_path_factory.mktemp("ui") / "home", events)
    platform = Platform.open(Settings(home=home, api_token=TOKEN))
    platform.store.put(REPORT_KEY, REPORT, "text/html")
    try:
        app = create_app(platform, ModelServer(platform.store, platform.registry))
        with TestClient(app) as c:
            yield c, platform
    finally:
        platform.close()


def _get(c: TestClient, path: str) -> str:
    answer = c.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def _figure(page: str) -> dict:  # type: ignore[type-arg]
    found = re.search(r"data-figure='([^']*)'", page)
    assert found, "the model page carries its chart's figure"
    return json.loads(found.group(1).replace("&#39;", "'"))


def test_the_models_page_lists_each_model_with_its_production_version(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    wait_for(lambda: "drift detected" in _get(c, "/ui"), timeout_s=10)
    row = re.search(r'<tr class="model-row" data-model="synth">(.*?)</tr>', _get(c, "/ui"), re.S)
    assert row, "synth has a row"
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    assert 'href="/ui/models/synth"' in cells[0]
    assert cells[1:3] == ["v2", "v1"], "production, previous"
    assert "mae 9.75 / 1.25" in row.group(1), "the last window's metric against its baseline"


def test_the_model_page_shows_every_version_with_lineage_and_gate(
    client: tuple[TestClient, Platform],
) -> None:
    c, platform = client
    page = _get(c, f"/ui/models/{MODEL}")
    entry = platform.registry.entry(MODEL)
    assert entry is not None
    for version in entry.versions.values():
        row = re.search(rf'data-version="{version.version}">(.*?)</tr>', page, re.S)
        assert row, f"v{version.version} is listed"
        assert version.sha256[:12] in row.group(1) and version.trigger in row.group(1)
        for name in version.metrics:
            assert name in row.group(1)
    assert entry.versions[2].gate and entry.versions[2].gate in page.replace("&#39;", "'")
    assert 'data-action="/v1/models/synth/rollback"' in page


def test_the_model_page_lists_training_runs_with_what_became_of_each(
    client: tuple[TestClient, Platform],
) -> None:
    c, platform = client
    wait_for(lambda: LOST.run_id in _get(c, f"/ui/models/{MODEL}"), timeout_s=10)
    page = _get(c, f"/ui/models/{MODEL}")
    runs = re.findall(r'<tr class="run-row" data-run="([^"]*)">(.*?)</tr>', page, re.S)
    entry = platform.registry.entry(MODEL)
    assert entry is not None
    assert [run for run, _ in runs] == [
        LOST.run_id,
        entry.versions[2].run_id,
        entry.versions[1].run_id,
    ]
    lost, v2 = runs[0][1], runs[1][1]
    assert "rejected</span>: candidate mae 3.25 is worse than 1.5 (&lt;b&gt;champion" in lost
    assert "Ridge on the CPU" in lost and "<td>240</td>" in lost and "2 tried" in lost
    assert "registered as v2" in v2


def test_the_monitoring_chart_plots_each_window_against_the_baseline_and_the_deploys(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    wait_for(lambda: "9.5" in _get(c, f"/ui/models/{MODEL}"), timeout_s=10)
    figure = _figure(_get(c, f"/ui/models/{MODEL}"))
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["mae (served version)"]["y"] == [1.5, 2.5, 9.75]
    assert traces["mae baseline (validation)"]["y"] == [1.25] * 3
    assert traces["drift.detected"]["y"] == [9.5]
    assert traces["drift.detected"]["x"] == [DETECTED.window_end.isoformat()]
    assert traces["drift share"]["yaxis"] == "y2"
    assert figure["layout"]["yaxis"]["title"]["text"] == "mae"
    labels = [a["text"] for a in figure["layout"]["annotations"]]
    assert labels == ["v1 promotion", "v2 promotion"], "each deploy is marked at its event time"


def test_no_page_refers_to_anything_outside_the_gateway(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    for path in PAGES:
        page = _get(c, path)
        assert not re.search(r"https?:|//[a-z]", page, re.I), f"{path} refers outside"
        for url in re.findall(r'(?:src|href)="([^"]*)"', page):
            assert url.startswith("/") and not url.startswith("//"), (path, url)
        for asset in re.findall(r'src="([^"]*)"|rel="stylesheet" href="([^"]*)"', page):
            assert c.get(next(a for a in asset if a)).status_code == 200
    for own in ("dashboard.js", "dashboard.css"):
        text = c.get(f"/ui/static/{own}").text
        assert not re.search(r"https?:", text), own


def test_plotly_js_is_the_installed_packages_file(client: tuple[TestClient, Platform]) -> None:
    c, _ = client
    answer = c.get("/ui/static/plotly.min.js")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(
        "text/javascript"
    )
    assert answer.content == plotly_js().read_bytes()
    assert c.get("/ui/static/other.js").status_code == 404


def test_an_unknown_model_is_a_404_naming_the_known_ones(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    answer = c.get("/ui/models/nope")
    assert answer.status_code == 404 and "known: ['synth']" in answer.json()["error"]


def test_the_platform_page_lists_functions_and_says_the_dlq_is_empty(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    page = _get(c, "/ui/platform")
    for name in ("ingest", "retrain", "register", "score", "drift-check"):
        assert f"<td>{name}</td>" in page
    assert "does not follow runner heartbeats" in page, "no runner view in this app"
    assert "no dead letters" in page


def test_the_rollback_button_needs_the_token_and_then_moves_production(
    client: tuple[TestClient, Platform],
) -> None:
    """The page's action goes to the JSON API: refused without the token, done with it."""
    c, platform = client
    page = _get(c, f"/ui/models/{MODEL}")
    assert "API token (for actions)" in page
    action = re.search(r'data-action="([^"]*rollback)"', page)
    assert action
    refused = c.post(action.group(1))
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
    assert c.post(action.group(1), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert platform.registry.entry(MODEL).production == 2  # type: ignore[union-attr]
    done = c.post(action.group(1), headers={"Authorization": f"Bearer {TOKEN}"})
    assert done.status_code == 202 and done.json()["version"] == 1
    wait_for(lambda: '<b id="production">v1</b>' in _get(c, f"/ui/models/{MODEL}"))


def test_the_retrain_button_needs_the_token_and_then_asks_for_a_manual_retrain(
    client: tuple[TestClient, Platform],
) -> None:
    c, platform = client
    page = _get(c, f"/ui/models/{MODEL}")
    action = re.search(r'data-action="([^"]*/retrain)"', page)
    assert action and action.group(1) == f"/v1/models/{MODEL}/retrain"
    assert c.post(action.group(1)).status_code == 401
    done = c.post(action.group(1), headers={"Authorization": f"Bearer {TOKEN}"})
    assert done.status_code == 202 and done.json()["model"] == MODEL
    reader = platform.bus.reader(["retrain.requested"])
    try:
        found = reader.poll(2.0, 100)
    finally:
        reader.close()
    assert [r.key for r in found] == [MODEL.encode()]


def test_drifted_windows_link_their_evidently_report_served_from_the_store(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    page = _get(c, f"/ui/models/{MODEL}")
    link = re.search(r'href="(/ui/reports/[^"]+)"', page)
    assert link and link.group(1) == f"/ui/{REPORT_KEY}"
    assert c.get(link.group(1)).content == REPORT
    missing = c.get(f"/ui/reports/{MODEL}/v2/nope.html")
    assert missing.status_code == 404 and "nope.html" in missing.json()["error"]
    assert c.get(f"/ui/reports/{MODEL}/v2/../../registry/snapshot.json").status_code == 404


def test_a_promote_button_per_version_needs_the_token_and_moves_production(
    client: tuple[TestClient, Platform],
) -> None:
    c, platform = client
    prod = platform.registry.production(MODEL).version  # type: ignore[union-attr]
    other = 1 if prod == 2 else 2
    page = _get(c, f"/ui/models/{MODEL}")
    actions = re.findall(r'data-action="([^"]*/promote)"', page)
    assert actions == [f"/v1/models/{MODEL}/versions/{other}/promote"], "none for production"
    assert c.post(actions[0]).status_code == 401
    done = c.post(actions[0], headers={"Authorization": f"Bearer {TOKEN}"})
    assert done.status_code == 202 and done.json()["version"] == other
    wait_for(lambda: f'<b id="production">v{other}</b>' in _get(c, f"/ui/models/{MODEL}"))


def test_the_model_page_says_what_training_cost_against_a_weekly_schedule(
    client: tuple[TestClient, Platform],
) -> None:
    page = _get(client[0], f"/ui/models/{MODEL}")
    assert '<td class="seconds">1.50</td>' in page, "each run's compute seconds"
    assert re.search(r'id="cost">Compute: <b>3.0 s</b> over 2 training run\(s\)', page)


def test_cost_counts_each_run_once_and_prices_a_weekly_schedule() -> None:
    def run(run_id: str, seconds: float, day: int) -> ModelTrained:
        return LOST.model_copy(
            update={
                "run_id": run_id,
                "train_seconds": seconds,
                "train_end": START + timedelta(days=day),
            }
        )

    runs = [run("a", 2.0, 0), run("b", 4.0, 21), run("b", 4.0, 21), run("c", 0.0, 30)]
    c = views.cost(runs)
    assert c is not None
    assert (c["runs"], c["seconds"], c["per_run"]) == (2, 6.0, 3.0), "b once, c unmeasured"
    assert (c["weeks"], c["weekly_runs"], c["weekly_seconds"]) == (3.0, 4, 12.0)
    assert views.cost([run("x", 0.0, 0)]) is None


def test_a_long_deploy_history_draws_every_deploy_and_names_the_newest_spaced_out() -> None:
    deploys = [
        ModelDeployed(
            model=MODEL,
            version=v,
            artifact_key=f"v{v}.onnx",
            sha256="0" * 64,
            effective_time=START + timedelta(days=v),
        )
        for v in range(1, 31)
    ]
    rollback = deploys[0].model_copy(update={"reason": "rollback", "effective_time": None})
    figure = charts.monitoring(MODEL, WINDOWS, [], [*deploys, rollback])
    assert len(figure["layout"]["shapes"]) == 30, "a deploy without event time is not placed"
    labels = [a["text"] for a in figure["layout"]["annotations"]]
    # named from the newest back, at least 1/12 of the 30 days apart: their names do not overlap
    assert labels == [f"v{v} promotion" for v in range(3, 31, 3)]


def test_drifted_windows_name_their_drifted_features_beside_their_importance(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    page = _get(c, f"/ui/models/{MODEL}")
    row = re.search(r'<tr class="drifted-row">(.*?)</tr>', page, re.S)
    assert row, "the drifted window is listed"
    cell = re.search(r'<td class="features">(.*?)</td>', row.group(1), re.S)
    assert cell and re.sub(r"<[^>]+>", "", cell.group(1)) == "x1 2.5, x2 1.25", (
        "most important first, with v2's importance"
    )
    found = re.search(r"""id="features" class="chart" data-live data-figure='([^']*)'""", page)
    assert found, "the features chart is on the page"
    figure = json.loads(found.group(1))
    bars = figure["data"][0]
    assert bars["y"] == ["x3", "x2", "x1"] and bars["x"] == [0.0, 1.25, 2.5], "biggest on top"
    assert bars["marker"]["color"] == [charts.STEADY_COLOR] + [charts.DRIFTED_COLOR] * 2
    assert "no drift (Evidently score 0.4)" in bars["hovertext"][0]
    assert (
        "importance to v2 (mae worse when shuffled)" in figure["layout"]["xaxis"]["title"]["text"]
    )


def test_the_model_page_says_what_1000_predictions_cost(
    client: tuple[TestClient, Platform],
) -> None:
    c, _ = client
    wait_for(lambda: 'id="scoring"' in _get(c, f"/ui/models/{MODEL}"), timeout_s=10)
    page = _get(c, f"/ui/models/{MODEL}")
    # five measured requests of 4 predictions, 2 ms each; the /v2 one carries no seconds
    assert "<b>0.500 s per 1,000 predictions</b> (0.01 s over 20 predictions in 5" in page


def a_year_app() -> Any:
    """A dashboard over 5,000 hourly windows (every tenth drifted) and 300 versions, one
    deployed every 16 hours (also drawn by the browser test)."""
    from fastapi import FastAPI

    from driftline.events import ModelRegistered
    from driftline.runtime.http.history import History
    from driftline.runtime.http.ui import router
    from driftline.runtime.registry import Registry

    registry, kept = Registry(), History(None)  # type: ignore[arg-type]  # never started
    for v in range(1, 301):
        run = ModelTrained(
            model=MODEL,
            run_id=f"run-{v}",
            artifact_key=f"v{v}.onnx",
            sha256="0" * 64,
            reference_key="r",
            holdout_key="h",
            metrics={"mae": 1.0},
            train_seconds=0.5,
            train_end=START + timedelta(hours=16 * v),
            feature_importance=IMPORTANCE,
        )
        kept.keep(run)
        fields = run.model_dump(include=set(ModelRegistered.model_fields))
        registry.apply(ModelRegistered(**fields, version=v))
        registry.apply(
            ModelDeployed(
                model=MODEL,
                version=v,
                artifact_key=run.artifact_key,
                sha256=run.sha256,
                effective_time=run.train_end,
            )
        )
    for i in range(5_000):
        start = START + timedelta(hours=i)
        kept.keep(
            _window(0, 1.0 + i % 7, detected=i % 10 == 0).model_copy(
                update={
                    "version": 1 + i * 300 // 5_000,
                    "window": start.isoformat(),
                    "window_start": start,
                    "window_end": start + timedelta(hours=1),
                }
            )
        )
    app = FastAPI()
    app.include_router(router(registry, kept, None, None, None, None, token=False))  # type: ignore[arg-type]
    return app


def test_a_year_of_windows_and_hundreds_of_versions_keep_the_model_page_bounded() -> None:
    """5,000 hourly windows and 300 versions: the tables list a bounded number of rows and
    the chart at most the history's newest windows, summarised."""
    from driftline.runtime.http import history as history_module

    page = _get(TestClient(a_year_app()), f"/ui/models/{MODEL}")
    assert page.count('class="version-row"') == views.SHOW_VERSIONS
    assert "the newest 50 of 300 versions" in page
    assert page.count('class="run-row"') == views.SHOW_RUNS
    assert page.count('class="drifted-row"') == views.SHOW_HISTORY
    figure = _figure(page)
    metric = figure["data"][1]
    assert len(metric["x"]) == charts.MAX_POINTS and metric["mode"] == "lines", "summarised"
    assert (
        figure["layout"]["title"]["text"] == "synth: mae, mean of every 4 windows (2,000 windows)"
    )
    first_kept = START + timedelta(hours=5_000 - history_module.KEEP)
    assert figure["layout"]["xaxis"]["range"][0] == first_kept.isoformat(), "older deploys off"
    assert 1 < len(figure["layout"]["annotations"]) <= charts.LABEL_GAPS + 1
    assert "Only the newest 2,000 windows are kept" in page
    assert len(page) < 2_000_000, f"{len(page):,} bytes"


def test_a_summarised_point_is_the_mean_of_its_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "MAX_POINTS", 2)
    points, size = charts.summarise(WINDOWS)
    assert size == 2 and len(points) == 2
    first = points[0]
    assert (first.window_start, first.window_end) == (
        WINDOWS[0].window_start,
        WINDOWS[1].window_end,
    )
    assert first.metric_value == 2.0 and first.drift_share == 0.0 and first.rows == 48
    assert points[1] == WINDOWS[2], "a group of one is the window itself"
