"""``driftline events tail``: events as they pass, decoded, as JSON lines: on the home's own
bus, through a running gateway, and a user's type decoded by its registered schema alone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from driftline.events import Codec, Event, LabelsReceived
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cli import main
from driftline.runtime.http.app import create_app
from driftline.runtime.platform import Platform
from driftline.runtime.schemas import SchemaRegistry
from driftline.runtime.settings import Settings
from driftline.runtime.tail import tail
from tests.runtime.http.helpers import live

LABELS = {"model": "bikes", "request_id": "r-1", "labels": [3.0]}


class Tagged(Event):
    TYPE: ClassVar[str] = "shop.tagged"
    tag: str


def _send(bus: EmbeddedBus, event: Event, codec: Codec | None = None) -> str:
    event_id = str(uuid.uuid4())
    value, headers = (codec or Codec()).encode(event, id=event_id, source="test")
    producer = bus.producer()
    producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
    producer.flush()
    producer.close()
    return event_id


def test_tail_prints_a_published_event_from_the_beginning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path / "home")]
    assert main(["publish", "labels.received", "--data", json.dumps(LABELS), *home]) == 0
    event_id = capsys.readouterr().out.strip()
    args = ["events", "tail", "labels.received", "--from-beginning", "--max", "1"]
    assert main([*args, *home]) == 0
    [line] = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert (shown["type"], shown["id"], shown["data"]["request_id"]) == (
        "labels.received",
        event_id,
        "r-1",
    )
    assert main(["events", "tail", "--max", "0", *home]) == 2


def test_tail_starts_at_the_end_and_decodes_a_user_type_without_its_class(
    tmp_path: Path,
) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        bus.create_topics([Tagged.TYPE, LabelsReceived.TYPE])
        _send(bus, LabelsReceived(**LABELS))  # before the tail: not shown
        SchemaRegistry(bus).register([Tagged])
        events = tail(bus, [Tagged.TYPE, LabelsReceived.TYPE], max_events=2, idle_s=0.2)
        assert next(events) is None, "nothing new yet"
        _send(bus, Tagged(model="shop", tag="blue"), Codec([Tagged]))
        _send(bus, LabelsReceived(**{**LABELS, "request_id": "r-2"}))
        shown = [e for e in events if e is not None]
    finally:
        bus.close()
    by_type = {e["type"]: e["data"] for e in shown}
    assert by_type["shop.tagged"] == {"model": "shop", "tag": "blue"}
    assert by_type["labels.received"]["request_id"] == "r-2"


def test_tail_through_a_running_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    platform = Platform.open(Settings(home=tmp_path / "home"))
    try:
        app = create_app(platform, ModelServer(platform.store, platform.registry))
        with live(app) as url:
            _send(platform.bus, LabelsReceived(**LABELS))  # type: ignore[arg-type]
            args = ["events", "tail", "labels.received", "--from-beginning", "--max", "1"]
            assert main([*args, "--url", url]) == 0
            shown = json.loads(capsys.readouterr().out)
            assert shown["data"]["labels"] == [3.0]
            assert main(["events", "tail", "--seconds", "1", "--url", url]) == 0
            assert capsys.readouterr().out == "", "nothing new passed in that second"
    finally:
        platform.close()
