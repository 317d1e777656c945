"""Events as they pass, decoded: what ``driftline events tail`` prints, one JSON object a line.

Built-in types decode with the codec; users' types decode with the schema their writer
registered on the bus (found by the value's fingerprint), so no class is needed; JSON
CloudEvents from other producers are taken as they are. A record that cannot be decoded is
still shown, with ``error`` saying why. Without ``from_beginning`` the tail starts at the
end of each topic: what is there when it starts is read past, not shown.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastavro import parse_schema, schemaless_reader

from driftline.events import DLQ_SUFFIX, Codec, DecodeError
from driftline.events.avro import fingerprint
from driftline.events.codec import MAGIC
from driftline.events.json_mode import NOT_JSON, read
from driftline.runtime.bus.base import Bus, Record
from driftline.runtime.schemas import SchemaRegistry

CONTROL_PREFIX = "driftline."
"""Control topics (heartbeats, schemas, checkpoints): not events, never tailed."""


def event_topics(bus: Bus) -> list[str]:
    """Every event topic on the bus (not dead letters, not control topics)."""
    return [
        t
        for t in bus.topics()
        if not t.endswith(DLQ_SUFFIX) and not t.startswith(CONTROL_PREFIX) and "." in t
    ]


class Decoder:
    """Records to JSON-able dicts: the CloudEvents attributes and the data."""

    def __init__(self, bus: Bus):
        self.codec = Codec()
        self._bus = bus
        self._writers: dict[bytes, Any] = {}

    def __call__(self, record: Record) -> dict[str, Any]:
        attrs = {k: v.decode(errors="replace") for k, v in record.headers}
        data: Any = NOT_JSON
        error = None
        try:
            attrs, data = read(record.value, attrs)  # JSON CloudEvents: attributes, data
            if data is NOT_JSON and self.codec.knows(attrs.get("ce_type", "")):
                data = self.codec.decode(record.value, record.headers).data.model_dump(mode="json")
            elif data is NOT_JSON:
                data = self._user_data(record.value)
        except (DecodeError, ValueError) as exc:
            data, error = None, str(exc)
        line = {
            "type": attrs.get("ce_type", record.topic),
            "id": attrs.get("ce_id"),
            "source": attrs.get("ce_source"),
            "time": attrs.get("ce_time"),
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "data": data,
        }
        return line if error is None else {**line, "error": error}

    def _user_data(self, value: bytes) -> Any:
        if value[:2] != MAGIC or len(value) < 10:
            raise DecodeError("value is neither Avro single-object encoded nor JSON")
        fp = bytes(value[2:10])
        if fp not in self._writers:  # a type registered after we last looked
            for versions in SchemaRegistry(self._bus).versions(limit_s=5.0).values():
                for schema in versions:
                    self._writers[fingerprint(schema)] = parse_schema(schema)
        writer = self._writers.get(fp)
        if writer is None:
            raise DecodeError(f"no schema registered with fingerprint {fp.hex()}")
        return schemaless_reader(io.BytesIO(value[10:]), writer, None)


def tail(
    bus: Bus,
    types: Sequence[str] = (),
    *,
    from_beginning: bool = False,
    max_events: int | None = None,
    seconds: float | None = None,
    idle_s: float = 1.0,
) -> Iterator[dict[str, Any] | None]:
    """Decoded events of ``types`` (default: every event topic there is when it starts), until
    ``max_events`` or ``seconds``; None after each ``idle_s`` without one (a keep-alive)."""
    topics = list(types) or event_topics(bus)
    bus.create_topics(topics)
    reader, decode = bus.reader(topics), Decoder(bus)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        if not from_beginning:
            while reader.poll(0.3, 5000):  # read past what is there already
                pass
        shown = 0
        while max_events is None or shown < max_events:
            if deadline is not None and time.monotonic() > deadline:
                return
            records = reader.poll(idle_s, 500)
            if not records:
                yield None
            for record in records[: None if max_events is None else max_events - shown]:
                shown += 1
                yield decode(record)
    finally:
        reader.close()


def as_line(event: dict[str, Any]) -> str:
    return json.dumps(event, default=str)
