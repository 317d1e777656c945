"""notify: chosen events as Standard Webhooks to a receiver on 127.0.0.1 that verifies them
with the ``standardwebhooks`` library; a receiver that stays down means retries, then the
DLQ; with no URL set, nothing is sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from driftline.events import Codec, DriftDetected, Event, ModelDeployed, ModelRejected
from driftline.functions.notify import notify
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.context import Context
from driftline.runtime.errors import ConfigError
from driftline.runtime.function import RetryPolicy
from driftline.runtime.runner import Runner
from driftline.runtime.settings import Settings
from tests.conftest import wait_for
from tests.runtime.http.helpers import free_port
from tests.runtime.runner_helpers import read_all

SECRET = "whsec_" + "c2VjcmV0LWtleS1vZi10aGUtbm90aWZ5LXRlc3Qh"
T = datetime(2024, 1, 20, tzinfo=UTC)
DEPLOYED = ModelDeployed(model="bike", version=2, artifact_key="m/2.onnx", sha256="0" * 64)
DRIFT = DriftDetected(
    model="bike", version=1, cause="data", window="w1", window_end=T, idempotency_key="k"
)
REJECTED = ModelRejected(model="bike", run_id="r9", reason="worse than production")
FAST = RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1, jitter_s=0.0)


class Receiver:
    """A webhook receiver: verifies each call with the reference library, then answers
    ``status`` (204 by default)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
                except WebhookVerificationError as exc:
                    receiver.refused.append(str(exc))
                    self.send_response(401)
                else:
                    receiver.received.append({"id": self.headers["webhook-id"], **payload})
                    self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/driftline"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _run(bus: EmbeddedBus, settings: Settings, events: list[Event]) -> Runner:
    runner = Runner(bus, [replace(notify.spec, retry=FAST)], settings=settings)  # type: ignore[attr-defined]
    runner.start()
    producer = bus.producer()
    codec = Codec()
    for i, event in enumerate(events):
        value, headers = codec.encode(event, id=f"ev-{i}")
        producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
    producer.flush()
    producer.close()
    return runner


def test_chosen_events_arrive_signed_and_verified(tmp_path: Path, receiver: Receiver) -> None:
    settings = Settings(
        home=tmp_path,
        notify_urls=[receiver.url],
        notify_secret=SECRET,
        notify_events=["model.deployed", "model.rejected"],
    )
    bus = EmbeddedBus(tmp_path / "bus.db")
    runner = _run(bus, settings, [DEPLOYED, DRIFT, REJECTED])
    try:
        wait_for(lambda: len(receiver.received) == 2, timeout_s=20)
        wait_for(lambda: runner.workers["notify"].stats.succeeded == 3, timeout_s=10)
    finally:
        runner.stop()
        bus.close()
    assert not receiver.refused
    got = {r["type"]: r for r in receiver.received}
    assert set(got) == {"model.deployed", "model.rejected"}, "drift.detected not chosen"
    assert got["model.deployed"]["data"]["version"] == 2 and got["model.deployed"]["id"] == "ev-0"
    assert got["model.rejected"]["data"]["reason"] == "worse than production"


def test_a_receiver_that_stays_down_gets_retries_then_the_dlq(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/nobody"
    settings = Settings(home=tmp_path, notify_urls=[down], notify_secret=SECRET)
    bus = EmbeddedBus(tmp_path / "bus.db")
    runner = _run(bus, settings, [DRIFT])
    try:
        [dead] = read_all(bus, "drift.detected.dlq", 1, timeout_s=20)
        stats = runner.workers["notify"].stats
    finally:
        runner.stop()
        bus.close()
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq_attempts"] == "3" and stats.retried >= 1
    assert "not delivered" in headers["dlq_error"] and "/nobody" in headers["dlq_error"]


def test_a_retry_sends_only_to_the_receivers_that_missed_it(receiver: Receiver) -> None:
    from driftline.runtime.errors import RetryableError
    from driftline.runtime.notify import WebhookSender

    down = f"http://127.0.0.1:{free_port()}/nobody"
    sender = WebhookSender([receiver.url, down], SECRET, events=["model.deployed"])
    try:
        for _ in range(2):
            with pytest.raises(RetryableError, match="nobody"):
                sender.send("model.deployed", "ev-1", DEPLOYED.model_dump(mode="json"))
    finally:
        sender.close()
    assert [r["id"] for r in receiver.received] == ["ev-1"], "the receiver that took it: once"


def test_a_refusing_receiver_is_a_permanent_failure(receiver: Receiver) -> None:
    from driftline.runtime.errors import PermanentError
    from driftline.runtime.notify import WebhookSender

    receiver.status = 410
    sender = WebhookSender([receiver.url], SECRET, events=["model.deployed"])
    try:
        with pytest.raises(PermanentError, match="410"):
            sender.send("model.deployed", "ev-2", {})
    finally:
        sender.close()


def test_without_urls_notify_does_nothing_and_a_url_needs_a_secret(tmp_path: Path) -> None:
    ctx = Context("notify", settings=Settings(home=tmp_path))
    ctx.state = notify.spec.init(ctx)  # type: ignore[attr-defined]
    assert ctx.state is None
    ctx.begin("ev-3", "model.deployed", None, None)
    assert notify(DEPLOYED, ctx) is None
    lacking = Context("notify", settings=Settings(home=tmp_path, notify_urls=["http://x"]))
    with pytest.raises(ConfigError, match="DRIFTLINE_NOTIFY_SECRET"):
        notify.spec.init(lacking)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="notify cannot send"):
        Settings(home=tmp_path, notify_events=["score.completed"])
    assert json.loads(Settings(home=tmp_path).model_dump_json())["notify_urls"] == []
