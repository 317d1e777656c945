"""The schema registry of users' event types, on the control topic ``driftline.schemas``.

A process that hosts a function reading or writing a user type registers the type's
schema (derived from the class it imports) before it starts: the same schema again is a
no-op; another must be compatible with the newest one registered for that type, both ways,
as the checked-in schemas are kept (a field added or removed needs a default, a field kept
keeps its type), or it is refused with a :class:`SchemaError` naming the field. Every
version registered stays readable: a codec given them decodes events written by a process
with an older or newer class of the type, by fingerprint.

One record per version, JSON ``{"type", "fingerprint", "schema"}``; a reader also sends a
``{"probe"}`` record and reads up to it (:meth:`SchemaRegistry.versions`).
Two processes registering different versions of one type at the same moment are not
caught (the check reads, then writes). On Kafka the topic must keep every record
(``retention.ms=-1``, as ``infra/`` creates it): a topic this module creates itself gets
the broker's default retention.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from driftline.events.avro import fingerprint
from driftline.events.errors import SchemaError
from driftline.events.models import Event
from driftline.events.user import describe, is_builtin, user_schema
from driftline.runtime.bus.base import Bus
from driftline.runtime.errors import BusError, ConfigError
from driftline.runtime.function import FunctionSpec

SCHEMAS_TOPIC = "driftline.schemas"
_KEY = b"schemas"
Schema = dict[str, Any]


def incompatibility(old: Schema, new: Schema) -> str | None:
    """Why events of one schema cannot be read with the other (None: they can, both ways)."""
    if old["name"] != new["name"]:
        return (
            f"its class is renamed from {old['name']} to {new['name']}, and Avro resolves "
            f"records by name: keep the class name"
        )
    before = {f["name"]: f for f in old["fields"]}
    after = {f["name"]: f for f in new["fields"]}
    for name, field in after.items():
        if name not in before and "default" not in field:
            return (
                f"field {name!r} is new and has no default: events written before it cannot be read"
            )
    for name, field in before.items():
        if name not in after and "default" not in field:
            return f"field {name!r} is removed and had no default: readers of the old type cannot read new events"
    for name in before.keys() & after.keys():
        if before[name]["type"] != after[name]["type"]:
            return (
                f"field {name!r} changes type from {json.dumps(before[name]['type'])} to "
                f"{json.dumps(after[name]['type'])}"
            )
    return None


class SchemaRegistry:
    """Reads every registered user schema from the bus, and registers more."""

    def __init__(self, bus: Bus, topic: str = SCHEMAS_TOPIC):
        self.bus = bus
        self.topic = topic

    def versions(self, *, probe: bool = True, limit_s: float = 30.0) -> dict[str, list[Schema]]:
        """Every registered schema per type, oldest first.

        It sends a probe record and reads up to it, so nothing registered before the call is
        missed whatever the bus's latency (every record has one key: one partition, one
        order). ``probe=False`` writes nothing (a look for people): it reads until the
        topic is quiet for half a second.
        """
        if not probe and self.bus.partition_count(self.topic) == 0:
            return {}
        self.bus.create_topics([self.topic], partitions=1)
        mark = uuid.uuid4().hex if probe else None
        if mark is not None:
            self._send([{"probe": mark}])
        reader = self.bus.reader([self.topic])
        found: dict[str, list[Schema]] = {}
        deadline = time.monotonic() + limit_s
        try:
            while time.monotonic() < deadline:
                records = reader.poll(0.2 if probe else 0.5, 1000)
                if not records and not probe:
                    return found
                for r in sorted(records, key=lambda r: r.offset):
                    entry = json.loads(r.value)
                    if mark is not None and entry.get("probe") == mark:
                        return found
                    if "schema" in entry:
                        found.setdefault(entry["type"], []).append(entry["schema"])
        finally:
            reader.close()
        if not probe:
            return found
        raise BusError(f"{self.topic}: read for {limit_s:g} s without reaching its own probe")

    def register(self, models: Sequence[type[Event]]) -> dict[str, list[Schema]]:
        """Register the user types among ``models``; returns every version of each of them.

        :class:`SchemaError` when one is not compatible with its type's newest version.
        """
        users = list({m for m in models if not is_builtin(m)})
        if not users:
            return {}
        known = self.versions()
        new = [(m, user_schema(m)) for m in users]
        for model, schema in new:
            _check(model, schema, known.get(model.TYPE, []))
        self._publish([(m, s) for m, s in new if not _among(s, known.get(m.TYPE, []))], known)
        return {m.TYPE: known.get(m.TYPE, []) for m in users}

    def _publish(
        self, new: list[tuple[type[Event], Schema]], known: dict[str, list[Schema]]
    ) -> None:
        self._send(
            [{"type": m.TYPE, "fingerprint": fingerprint(s).hex(), "schema": s} for m, s in new]
        )
        for model, schema in new:
            known.setdefault(model.TYPE, []).append(schema)

    def _send(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        producer = self.bus.producer()
        try:
            for entry in entries:
                producer.send(self.topic, json.dumps(entry).encode(), key=_KEY)
            producer.flush()
        finally:
            producer.close()


def _among(schema: Schema, versions: list[Schema]) -> bool:
    """Whether the schema is registered (docs and defaults aside: by fingerprint)."""
    fp = fingerprint(schema)
    return any(fingerprint(v) == fp for v in versions)


def _check(model: type[Event], schema: Schema, versions: list[Schema]) -> None:
    if not versions or _among(schema, versions):
        return
    why = incompatibility(versions[-1], schema)
    if why is not None:
        raise SchemaError(
            f"{describe(model)}: an incompatible change of {model.TYPE!r}, registered on the "
            f"bus before: {why}; give the field a default, or name a new type"
        )


def register_functions(bus: Bus, specs: Sequence[FunctionSpec]) -> None:
    """Register the user types of ``specs`` before they start; :class:`ConfigError` names
    the function whose type is an incompatible change."""
    registry = SchemaRegistry(bus)
    for spec in specs:
        try:
            registry.register(spec.event_types)
        except SchemaError as exc:
            raise ConfigError(f"function {spec.name}: {exc}") from exc


def listing(versions: dict[str, list[Schema]]) -> list[dict[str, Any]]:
    """One row per registered version: type, version (1, 2, ...), fingerprint, fields."""
    return [
        {
            "type": event_type,
            "version": number,
            "fingerprint": fingerprint(schema).hex(),
            "fields": [f["name"] for f in schema["fields"]],
        }
        for event_type, schemas in sorted(versions.items())
        for number, schema in enumerate(schemas, 1)
    ]
