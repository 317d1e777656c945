"""The schema registry of users' event types, on the control topic ``driftline.schemas``.

A process that hosts a function reading or writing a user type registers the type's
schema (derived from the class it imports) before it starts: the same schema again is a
no-op; another must be compatible with the newest one registered for that type, both ways,
as the checked-in schemas are kept (a field added or removed needs a default, a field kept
keeps its type), or it is refused with a :class:`SchemaError` naming the field. Every
version registered stays readable: a codec given them decodes events written by a process
with an older or newer class of the type, by fingerprint.

One record per version: key the event type, value JSON ``{"type", "fingerprint", "schema"}``.
Two processes registering different versions of one type at the same moment are not
caught (the check reads, then writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from driftline.events.avro import fingerprint
from driftline.events.errors import SchemaError
from driftline.events.models import Event
from driftline.events.user import describe, is_builtin, user_schema
from driftline.runtime.bus.base import Bus
from driftline.runtime.errors import ConfigError
from driftline.runtime.function import FunctionSpec

SCHEMAS_TOPIC = "driftline.schemas"
Schema = dict[str, Any]


def incompatibility(old: Schema, new: Schema) -> str | None:
    """Why events of one schema cannot be read with the other (None: they can, both ways)."""
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

    def versions(self, idle_s: float = 0.3, limit_s: float = 30.0) -> dict[str, list[Schema]]:
        """Every registered schema per type, oldest first (read until the topic is quiet)."""
        self.bus.create_topics([self.topic], partitions=1)
        reader = self.bus.reader([self.topic])
        found: dict[str, list[Schema]] = {}
        deadline = time.monotonic() + limit_s
        try:
            while time.monotonic() < deadline:
                records = reader.poll(idle_s, 1000)
                if not records:
                    break
                for r in sorted(records, key=lambda r: r.offset):
                    entry = json.loads(r.value)
                    found.setdefault(entry["type"], []).append(entry["schema"])
        finally:
            reader.close()
        return found

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
        if not new:
            return
        producer = self.bus.producer()
        try:
            for model, schema in new:
                value = {
                    "type": model.TYPE,
                    "fingerprint": fingerprint(schema).hex(),
                    "schema": schema,
                }
                producer.send(self.topic, json.dumps(value).encode(), key=model.TYPE.encode())
                known.setdefault(model.TYPE, []).append(schema)
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
