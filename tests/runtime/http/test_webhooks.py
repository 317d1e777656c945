"""Webhook triggers: calls signed by the Standard Webhooks reference library (``standardwebhooks``).

Good calls publish their event; missing, malformed, wrong and stale signatures get 401, a
replayed webhook-id is taken once, an oversize body gets 413: every answer says why.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from driftline.events import Codec, DatasetUploaded, Envelope
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.errors import ConfigError
from driftline.runtime.http.app import create_app
from driftline.runtime.http.webhooks import (
    ReplayGuard,
    SharedReplayGuard,
    secret_key,
    sign,
    verify,
)
from driftline.runtime.platform import Platform
from driftline.runtime.settings import HookSettings, Settings
from driftline.runtime.store import LocalStore
from tests.runtime.runner_helpers import read_all

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LIMIT = 2048


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Platform]]:
    hooks = {
        "uploads": HookSettings(
            event="dataset.uploaded", secret=SECRET, defaults={"model": "bikes"}
        )
    }
    platform = Platform.open(
        Settings(home=tmp_path_factory.mktemp("hooks"), hooks=hooks, max_body_bytes=LIMIT)
    )
    try:
        with TestClient(
            create_app(platform, ModelServer(platform.store, platform.registry))
        ) as client:
            yield client, platform
    finally:
        platform.close()


def _signed(
    body: str, msg_id: str = "msg_1", when: datetime | None = None, secret: str = SECRET
) -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
        "content-type": "application/json",
    }


def _call(client: TestClient, body: str, headers: dict[str, str], hook: str = "uploads"):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/hooks/{hook}", content=body.encode(), headers=headers)


def _published(platform: Platform, event_id: str) -> list[Envelope]:
    codec = Codec()
    envelopes = [
        codec.decode(r.value, r.headers)
        for r in read_all(platform.bus, "dataset.uploaded", 10**6, 0.5)
    ]
    return [e for e in envelopes if e.id == event_id]


BODY = json.dumps({"key": "uploads/bikes/jan.csv", "size": 12})


def test_a_good_signature_publishes_the_event(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    answer = _call(client, BODY, _signed(BODY, "msg_good"))
    assert answer.status_code == 202, answer.text
    (envelope,) = _published(platform, answer.json()["id"])
    assert envelope.source == "driftline/hooks/uploads"
    assert envelope.data == DatasetUploaded(model="bikes", key="uploads/bikes/jan.csv", size=12)


@pytest.mark.parametrize(
    ("change", "reason", "says"),
    [
        (
            lambda h: {k: v for k, v in h.items() if not k.startswith("webhook")},
            "missing_signature",
            "webhook-id, webhook-timestamp, webhook-signature missing",
        ),
        (
            lambda h: {
                **h,
                "webhook-signature": Webhook("whsec_" + "A" * 44).sign(
                    "msg_1", datetime.now(UTC), BODY
                ),
            },
            "bad_signature",
            "no v1 signature",
        ),
        (lambda h: {**h, "webhook-id": "msg_other"}, "bad_signature", "the body was changed"),
        (lambda h: {**h, "webhook-timestamp": "yesterday"}, "bad_timestamp", "not Unix seconds"),
    ],
    ids=["missing", "wrong-secret", "tampered-id", "malformed-timestamp"],
)
def test_bad_calls_are_refused_with_why(
    gateway: tuple[TestClient, Platform],
    change,
    reason: str,  # type: ignore[no-untyped-def]
    says: str,
) -> None:
    client, _ = gateway
    answer = _call(client, BODY, change(_signed(BODY)))
    assert answer.status_code == 401 and answer.json()["reason"] == reason, answer.text
    assert says in answer.json()["error"]


@pytest.mark.parametrize(
    "skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["old", "future"]
)
def test_stale_timestamps_are_refused(
    gateway: tuple[TestClient, Platform], skew: timedelta
) -> None:
    client, _ = gateway
    answer = _call(client, BODY, _signed(BODY, when=datetime.now(UTC) + skew))
    assert answer.status_code == 401 and answer.json()["reason"] == "stale_timestamp"
    assert "accepted within 300s of now" in answer.json()["error"]


def test_a_replayed_id_is_taken_once(gateway: tuple[TestClient, Platform]) -> None:
    client, platform = gateway
    headers = _signed(BODY, "msg_replayed")
    first, again = _call(client, BODY, headers), _call(client, BODY, headers)
    assert first.status_code == 202 and not first.json()["duplicate"]
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert (
        again.json()["id"] == first.json()["id"] and "not published again" in again.json()["detail"]
    )
    assert len(_published(platform, first.json()["id"])) == 1


def test_a_second_gateway_on_the_same_store_takes_a_retried_id_once(
    gateway: tuple[TestClient, Platform],
) -> None:
    """Two gateways behind a load balancer (or one restarted): the sender's retry reaches
    the other one, which finds the id in the store and does not publish again."""
    client, platform = gateway
    headers = _signed(BODY, "msg_retried_elsewhere")
    first = _call(client, BODY, headers)
    with TestClient(create_app(platform, ModelServer(platform.store, platform.registry))) as other:
        again = _call(other, BODY, headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["id"] == first.json()["id"]
    assert len(_published(platform, first.json()["id"])) == 1
    seen = [i.key for i in platform.store.list("hooks/uploads/seen/")]
    assert SharedReplayGuard.key("uploads/msg_retried_elsewhere") in seen


def test_the_shared_guard_frees_an_id_past_its_window_and_sweeps(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    guard = SharedReplayGuard(store, ttl_s=60)
    assert guard.claim("h/a") is None and guard.claim("h/a") is not None
    other = SharedReplayGuard(store, ttl_s=60)  # another gateway
    assert other.claim("h/a") is not None
    old = json.dumps({"id": "h/b", "at": time.time() - 120}).encode()
    store.put(SharedReplayGuard.key("h/b"), old)
    assert other.claim("h/b") is None, "a record past the window does not block the id"
    other.release("h/b")
    assert not store.exists(SharedReplayGuard.key("h/b")), "released: the retry goes through"
    store.put(SharedReplayGuard.key("h/c"), old)
    os.utime(store.root / SharedReplayGuard.key("h/c"), (time.time() - 120,) * 2)
    other._swept = 0.0
    assert other.claim("h/d") is None
    assert not store.exists(SharedReplayGuard.key("h/c")), "swept"
    assert store.exists(SharedReplayGuard.key("h/a"))


def test_oversize_invalid_and_unknown(gateway: tuple[TestClient, Platform]) -> None:
    client, _ = gateway
    big = json.dumps({"key": "uploads/bikes/jan.csv", "pad": "x" * LIMIT})
    answer = _call(client, big, _signed(big))
    assert (
        answer.status_code == 413 and f"over the limit of {LIMIT} bytes" in answer.json()["error"]
    )
    wrong = json.dumps({"size": "many"})
    answer = _call(client, wrong, _signed(wrong, "msg_wrong"))
    assert answer.status_code == 422
    assert {f["field"] for f in answer.json()["fields"]} == {"key", "size"}
    answer = _call(client, BODY, _signed(BODY), hook="nope")
    assert answer.status_code == 404 and "declared: ['uploads']" in answer.json()["error"]


def test_signing_matches_the_spec_vector() -> None:
    # the example in the Standard Webhooks specification
    key = secret_key(SECRET)
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": f"v1,bm9ldHlldA== {expected}",
    }
    assert (
        verify(key, headers, body, tolerance_s=300, now=1614265330 + 299)
        == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    )


def test_bad_secrets_and_the_replay_window() -> None:
    with pytest.raises(ConfigError, match="whsec_ followed by base64"):
        secret_key("whsec_not base64!")
    guard = ReplayGuard(ttl_s=0.0)
    assert guard.claim("a") is None
    assert guard.claim("b") is None and guard.claim("a") is None, "expired ids are forgotten"
