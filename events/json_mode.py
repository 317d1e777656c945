"""CloudEvents in JSON on the bus, as producers in other languages write them (Kafka
protocol binding, spec 1.0), read beside Driftline's own Avro values:

- binary mode: the attributes in ``ce_*`` headers and a ``content-type`` header of
  ``application/json`` (or any ``+json`` type): the value is the event's data, as JSON;
- structured mode: ``content-type: application/cloudevents+json``: the value is one JSON
  object holding the attributes and the data under ``data``.

The data is validated by the event type's model like any other event; what is not valid is
a :class:`DecodeError` naming what is wrong (so the runner dead-letters it).
"""

from __future__ import annotations

import json
from typing import Any

from driftline.events.errors import DecodeError

STRUCTURED = "application/cloudevents+json"
REQUIRED = ("specversion", "id", "source", "type")


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` as ``application/json``."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def data_of(value: bytes) -> Any:
    """A binary-mode value: the event's data, as JSON."""
    try:
        return json.loads(value)
    except ValueError as exc:
        raise DecodeError(f"content-type says JSON, but the value is not JSON ({exc})") from exc


def structured(value: bytes) -> tuple[dict[str, str], Any]:
    """A structured-mode value: its attributes (as ``ce_*`` header names) and its data."""
    doc = data_of(value)
    if not isinstance(doc, dict):
        raise DecodeError("a structured CloudEvent must be a JSON object")
    missing = [a for a in REQUIRED if not isinstance(doc.get(a), str) or not doc[a]]
    if missing:
        raise DecodeError(f"structured CloudEvent: attribute(s) {', '.join(missing)} missing")
    if doc["specversion"] != "1.0":
        raise DecodeError(f"structured CloudEvent: specversion {doc['specversion']!r}, not 1.0")
    if "data" not in doc:
        raise DecodeError("structured CloudEvent: no 'data' (data_base64 is not accepted)")
    attrs = {
        f"ce_{a}": doc[a] for a in ("id", "type", "source", "time") if isinstance(doc.get(a), str)
    }
    if isinstance(doc.get("traceparent"), str):
        attrs["traceparent"] = doc["traceparent"]
    return attrs, doc["data"]


NOT_JSON = object()
"""What :func:`read` gives as the data of a value that is not JSON (Avro, then)."""


def read(value: bytes, attrs: dict[str, str]) -> tuple[dict[str, str], Any]:
    """The attributes (as ``ce_*`` header names) and the data of a record by its
    ``content-type``: JSON in binary or structured mode, else :data:`NOT_JSON`."""
    media = media_type(attrs.get("content-type"))
    if media == STRUCTURED:
        return structured(value)
    if is_json(media):
        return attrs, data_of(value)
    return attrs, NOT_JSON
