"""The gateway's event, registry and auth endpoints, on a real embedded bus and trained models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftline.events import Codec, Envelope, Matrix, ModelDeployed, ScoreRequested
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.http.app import create_app
from driftline.runtime.platform import Platform
from driftline.runtime.settings import Settings
from tests.conftest import wait_for
from tests.runtime.http.helpers import FEATURES, MODEL, new_home, trained
from tests.runtime.runner_helpers import read_all

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATA = {"model": MODEL, "request_id": "r1", "columns": FEATURES, "rows": [[1.0, 2.0, None]]}
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Platform]]:
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path_factory.mktemp("gateway") / "home", model.v1 + model.v2)
    platform = Platform.open(Settings(home=home, api_token=TOKEN))
    try:
        with TestClient(
            create_app(platform, ModelServer(platform.store, platform.registry))
        ) as client:
            yield client, platform
    finally:
        platform.close()


def _published(platform: Platform, topic: str, event_id: str) -> Envelope:
    codec = Codec()
    found = [
        e
        for e in (
            codec.decode(r.value, r.headers) for r in read_all(platform.bus, topic, 10**6, 0.3)
        )
        if e.id == event_id
    ]
    assert len(found) == 1, f"{event_id} published {len(found)} times on {topic}"
    return found[0]


EXPECTED = ScoreRequested(
    model=MODEL, request_id="r1", columns=FEATURES, rows=Matrix([[1.0, 2.0, None]])
)


def test_binary_mode(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    headers = {
        **AUTH,
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "urn:test:binary",
        "ce-type": "score.requested",
        "ce-time": "2024-03-01T12:00:00Z",
        "traceparent": TRACE,
    }
    answer = client.post("/v1/events/score.requested", json=DATA, headers=headers)
    assert answer.status_code == 202 and answer.json() == {"id": "bin-1", "type": "score.requested"}
    envelope = _published(platform, "score.requested", "bin-1")
    assert envelope.data == EXPECTED and envelope.source == "urn:test:binary"
    assert envelope.time == datetime(2024, 3, 1, 12, tzinfo=UTC) and envelope.traceparent == TRACE


def test_structured_mode(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    doc = {
        "specversion": "1.0",
        "id": "st-1",
        "source": "urn:test:structured",
        "type": "score.requested",
        "traceparent": TRACE,
        "data": DATA,
    }
    answer = client.post(
        "/v1/events/score.requested",
        content=json.dumps(doc),
        headers={**AUTH, "content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert answer.status_code == 202 and answer.json()["id"] == "st-1"
    envelope = _published(platform, "score.requested", "st-1")
    assert (
        envelope.data == EXPECTED
        and envelope.source == "urn:test:structured"
        and envelope.traceparent == TRACE
    )


def test_plain_json(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    answer = client.post("/v1/events/score.requested", json=DATA, headers=AUTH)
    assert answer.status_code == 202
    envelope = _published(platform, "score.requested", answer.json()["id"])
    assert envelope.data == EXPECTED and envelope.source == "driftline/gateway"


def test_requests_spread_over_partitions_and_model_events_keep_theirs(
    gateway: tuple[TestClient, Platform],
) -> None:
    """score.requested is keyed by request id (score replicas share one model's load);
    every other event by model (one consumer sees a model's events in order)."""
    client, platform = gateway
    for i in range(30):
        body = {**DATA, "request_id": f"spread-{i}"}
        assert client.post("/v1/events/score.requested", json=body, headers=AUTH).status_code == 202
        assert (
            client.post(
                "/v1/events/labels.received",
                json={"model": MODEL, "request_id": f"spread-{i}", "labels": [1.0]},
                headers=AUTH,
            ).status_code
            == 202
        )
    requests = [
        r
        for r in read_all(platform.bus, "score.requested", 10**6, 0.3)
        if r.key is not None and r.key.startswith(b"spread-")
    ]
    labels = [
        r for r in read_all(platform.bus, "labels.received", 10**6, 0.3) if r.key == MODEL.encode()
    ]
    assert len(requests) == 30 and len({r.partition for r in requests}) > 1
    assert len(labels) >= 30 and len({r.partition for r in labels}) == 1


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({**DATA, "rows": [[1.0], [1.0, 2.0]]}, {"rows"}),
        ({k: v for k, v in DATA.items() if k != "request_id"}, {"request_id"}),
        ({**DATA, "colour": "red"}, {"colour"}),
    ],
)
def test_invalid_events_name_the_field(
    gateway: tuple[TestClient, Platform], data: dict, fields: set
) -> None:  # type: ignore[type-arg]
    answer = gateway[0].post("/v1/events/score.requested", json=data, headers=AUTH)
    assert answer.status_code == 422
    assert {f["field"] for f in answer.json()["fields"]} == fields
    assert all(f in answer.json()["error"] for f in fields)


@pytest.mark.parametrize(
    ("headers", "content", "status", "says"),
    [
        (
            {"ce-specversion": "1.0", "ce-id": "x", "ce-type": "score.requested"},
            json.dumps(DATA),
            400,
            "ce-source",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": "labels.received"},
            json.dumps(DATA),
            400,
            "does not match the URL's event type",
        ),
        (
            {"ce-specversion": "0.3", "ce-id": "x", "ce-source": "s", "ce-type": "score.requested"},
            json.dumps(DATA),
            400,
            "use 1.0",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({"data": DATA}),
            400,
            "specversion, id, source, type missing",
        ),
        ({"content-type": "text/plain"}, "hello", 415, "not JSON"),
        ({}, "{not json", 400, "not JSON"),
    ],
)
def test_malformed_cloudevents_say_why(
    gateway: tuple[TestClient, Platform],
    headers: dict,
    content: str,  # type: ignore[type-arg]
    status: int,
    says: str,
) -> None:
    answer = gateway[0].post(
        "/v1/events/score.requested",
        content=content.encode(),
        headers={"content-type": "application/json", **AUTH, **headers},
    )
    assert answer.status_code == status and says in answer.json()["error"], answer.json()


def test_unknown_event_types_are_refused(gateway: tuple[TestClient, Platform]) -> None:
    answer = gateway[0].post("/v1/events/score.wanted", json=DATA, headers=AUTH)
    assert answer.status_code == 422 and "score.requested" in answer.json()["error"]


def test_write_endpoints_need_the_token(gateway: tuple[TestClient, Platform]) -> None:
    client, _ = gateway
    for path in (
        "/v1/events/score.requested",
        "/v1/notifications/s3",
        f"/v1/models/{MODEL}/rollback",
        f"/v1/models/{MODEL}/versions/1/promote",
    ):
        answer = client.post(path, json=DATA)
        assert answer.status_code == 401 and answer.json()["reason"] == "missing_token", path
        assert answer.headers["www-authenticate"] == "Bearer"
        answer = client.post(path, json=DATA, headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401 and answer.json()["error"] == "the bearer token is wrong"
    assert client.get("/v1/models").status_code == 200, "reads stay open"


def test_models_and_rollback(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    assert client.get("/v1/models").json() == [
        {"model": MODEL, "production": 2, "previous": 1, "versions": [1, 2], "rejections": 0}
    ]
    detail = client.get(f"/v1/models/{MODEL}").json()
    assert detail["aliases"] == {"production": 2, "previous": 1}
    v2 = detail["versions"][1]
    assert v2["parent_version"] == 1 and v2["trigger"] == "data" and len(v2["sha256"]) == 64
    assert v2["dataset_versions"] and "mae" in v2["metrics"]
    assert client.get("/v1/models/nope").status_code == 404

    answer = client.post(f"/v1/models/{MODEL}/rollback", headers=AUTH)
    assert (
        answer.status_code == 202
        and answer.json()["version"] == 1
        and answer.json()["previous_version"] == 2
    )
    deployed = _published(platform, "model.deployed", answer.json()["id"]).data
    assert (
        isinstance(deployed, ModelDeployed)
        and deployed.reason == "rollback"
        and deployed.version == 1
    )
    wait_for(lambda: platform.registry.production(MODEL).version == 1, timeout_s=10)  # type: ignore[union-attr]
    wait_for(lambda: client.get(f"/v2/models/{MODEL}/ready").json()["version"] == "1", timeout_s=10)
    assert client.post("/v1/models/nope/rollback", headers=AUTH).status_code == 404


def test_promote_makes_a_chosen_version_production(
    gateway: tuple[TestClient, Platform],
) -> None:
    client, platform = gateway
    prod = platform.registry.production(MODEL).version  # type: ignore[union-attr]
    other = 1 if prod == 2 else 2
    same = client.post(f"/v1/models/{MODEL}/versions/{prod}/promote", headers=AUTH)
    assert same.status_code == 409 and same.json()["reason"] == "already_production"
    missing = client.post(f"/v1/models/{MODEL}/versions/9/promote", headers=AUTH)
    assert missing.status_code == 404 and "registered: [1, 2]" in missing.json()["error"]

    answer = client.post(f"/v1/models/{MODEL}/versions/{other}/promote", headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert (answer.json()["version"], answer.json()["previous_version"]) == (other, prod)
    deployed = _published(platform, "model.deployed", answer.json()["id"]).data
    assert isinstance(deployed, ModelDeployed)
    assert (deployed.reason, deployed.version, deployed.previous_version) == (
        "promotion",
        other,
        prod,
    )
    wait_for(lambda: platform.registry.production(MODEL).version == other, timeout_s=10)  # type: ignore[union-attr]


def test_rollback_without_a_previous_version_is_409(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model = trained(tmp_path_factory)
    platform = Platform.open(
        Settings(home=new_home(model, tmp_path_factory.mktemp("v1") / "home", model.v1))
    )
    try:
        client = TestClient(create_app(platform, ModelServer(platform.store, platform.registry)))
        answer = client.post(f"/v1/models/{MODEL}/rollback")
        assert answer.status_code == 409 and "no previous version" in answer.json()["error"]
    finally:
        platform.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_uploads_stream_to_the_store_and_oversized_ones_are_refused_whole(
    tmp_path_factory: pytest.TempPathFactory, chunked: bool
) -> None:
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path_factory.mktemp("uploads") / "home", model.v1)
    limit = 3_000_000
    platform = Platform.open(Settings(home=home, max_upload_bytes=limit))
    line = b"2024-01-01T00:00:00,1.0,2.0,3.0,4.0\n"
    data = b"ts,x1,x2,x3,y\n" + line * (2_500_000 // len(line))  # several chunks, under the limit
    big = data + line * (1_000_000 // len(line))  # over it

    def body(payload: bytes) -> Any:
        if not chunked:
            return payload
        return (payload[i : i + 65_536] for i in range(0, len(payload), 65_536))

    try:
        with TestClient(
            create_app(platform, ModelServer(platform.store, platform.registry))
        ) as client:
            url = f"/v1/models/{MODEL}/uploads?filename=rows.csv"
            ok = client.post(url, content=body(data))
            assert ok.status_code == 202, ok.text
            assert ok.json()["size"] == len(data)
            assert platform.store.get(ok.json()["key"]) == data
            before = sorted(i.key for i in platform.store.list("uploads/"))
            refused = client.post(url, content=body(big))
            assert refused.status_code == 413, refused.text
            assert f"limit of {limit} bytes (setting max_upload_bytes" in refused.text
            assert sorted(i.key for i in platform.store.list("uploads/")) == before
    finally:
        platform.close()
