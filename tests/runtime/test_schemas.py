"""The schema registry of user event types on the bus: versions, compatibility, and readers
of one version decoding events written with another."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from driftline.events import Codec, Event, SchemaError, ScoreCompleted
from driftline.events.avro import fingerprint, schema_for
from driftline.runtime import Context, function
from driftline.runtime.bus.base import Bus
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cli import main
from driftline.runtime.runner import Runner
from driftline.runtime.schemas import SCHEMAS_TOPIC, SchemaRegistry, incompatibility
from tests.conftest import wait_for


class V1(Event):
    TYPE: ClassVar[str] = "shop.scored"
    request_id: str
    prediction: float


def version(**fields: Any) -> type[Event]:
    """Another version of shop.scored: V1's fields, then ``fields`` (name: (type, default))."""
    annotations = {"request_id": str, "prediction": float}
    namespace: dict[str, Any] = {"TYPE": "shop.scored"}
    for name, (kind, default) in fields.items():
        annotations[name] = kind
        if default is not ...:
            namespace[name] = default
    return type("V1", (Event,), {"__annotations__": annotations, **namespace})


V2 = version(channel=(str, "web"))
"""Compatible: a new field with a default."""
V3 = version(shop_id=(str, ...))
"""Incompatible: a new field without one."""


def test_compatible_and_incompatible_changes_are_told_apart() -> None:
    old = schema_for(V1)
    kept = [f for f in old["fields"] if f["name"] != "prediction"]
    assert incompatibility(old, schema_for(version(channel=(str, "web")))) is None
    assert "field 'channel' is new and has no default" in str(
        incompatibility(old, schema_for(version(channel=(str, ...))))
    )
    assert "field 'prediction' is removed and had no default" in str(
        incompatibility(old, {**old, "fields": kept})
    )
    assert "renamed from V1 to Scored" in str(incompatibility(old, {**old, "name": "Scored"}))
    retyped = [{**f, "type": "string"} if f["name"] == "prediction" else f for f in old["fields"]]
    changed = {**old, "fields": retyped}
    assert 'field \'prediction\' changes type from "double" to "string"' in str(
        incompatibility(old, changed)
    )


def test_versions_are_registered_once_and_an_incompatible_one_is_refused(bus: Bus) -> None:
    topic = f"driftline.schemas-{uuid.uuid4().hex[:8]}"  # the Kafka broker outlives a test
    registry = SchemaRegistry(bus, topic)
    assert registry.register([V1, ScoreCompleted]) == {"shop.scored": [schema_for(V1)]}
    registry.register([V1])  # the same again: nothing new
    v2 = version(channel=(str, "web"))
    assert len(registry.register([v2])["shop.scored"]) == 2
    with pytest.raises(SchemaError, match="field 'shop_id' is new and has no default"):
        registry.register([version(channel=(str, "web"), shop_id=(str, ...))])
    assert [len(v) for v in SchemaRegistry(bus, topic).versions().values()] == [2]


def test_a_reader_of_either_version_decodes_the_other_with_the_registry(
    embedded_bus: Bus,
) -> None:
    v2 = version(channel=(str, "web"))
    writers = SchemaRegistry(embedded_bus).register([V1, v2])
    old_reader, new_reader = Codec([V1], writers), Codec([v2], writers)
    value, headers = Codec([v2]).encode(
        v2(model="m", request_id="r", prediction=1.0, channel="app")
    )
    assert old_reader.decode(value, headers).data == V1(model="m", request_id="r", prediction=1.0)
    value, headers = Codec([V1]).encode(V1(model="m", request_id="r", prediction=1.0))
    assert new_reader.decode(value, headers).data.channel == "web"  # type: ignore[attr-defined]


def test_a_running_reader_learns_a_newer_writer_from_the_registry(embedded_bus: Bus) -> None:
    got: list[float] = []

    @function(subscribes=V1)
    def old_reader(event: V1, ctx: Context) -> None:
        got.append(event.prediction)

    @function(subscribes="score.completed", emits=V2)
    def new_writer(event: ScoreCompleted, ctx: Context) -> Any:
        return V2(model=event.model, request_id=event.request_id, prediction=2.0, channel="app")

    reader = Runner(embedded_bus, [old_reader], poll_timeout_s=0.1)
    reader.start()  # registers V1, knows only V1
    writer = Runner(embedded_bus, [new_writer], poll_timeout_s=0.1)
    writer.start()  # registers V2 (compatible) after the reader started
    try:
        producer = embedded_bus.producer()
        event = ScoreCompleted(model="m", request_id=uuid.uuid4().hex, version=1, predictions=[])
        value, headers = Codec().encode(event)
        producer.send(event.TYPE, value, key=b"m", headers=headers)
        producer.flush()
        wait_for(lambda: got == [2.0])
    finally:
        writer.stop()
        reader.stop()
    assert reader.stats["old-reader"].dead_lettered == 0


def test_a_runner_refuses_to_start_an_incompatible_version(embedded_bus: Bus) -> None:
    SchemaRegistry(embedded_bus).register([V1])

    @function(subscribes=V3)
    def strict(event: V3, ctx: Context) -> None: ...  # type: ignore[valid-type]

    with pytest.raises(SchemaError, match="incompatible change of 'shop.scored'.*'shop_id'"):
        Runner(embedded_bus, [strict]).start()


def test_events_schemas_lists_every_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    assert SchemaRegistry(bus).versions(probe=False) == {}
    assert bus.partition_count(SCHEMAS_TOPIC) == 0, "a look writes nothing"
    SchemaRegistry(bus).register([V1])
    SchemaRegistry(bus).register([V2])
    bus.close()
    assert main(["events", "schemas", "--home", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["type"], r["version"], r["fields"][-1]) for r in rows] == [
        ("shop.scored", 1, "prediction"),
        ("shop.scored", 2, "channel"),
    ]
    assert rows[1]["fingerprint"] == fingerprint(schema_for(V2)).hex()
