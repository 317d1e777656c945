"""CloudEvents over HTTP (spec 1.0, JSON format): binary mode, structured mode, or plain JSON.

- Binary: attributes in ``ce-*`` headers, the body is the event data (JSON).
- Structured: ``Content-Type: application/cloudevents+json``, one JSON object holding the
  attributes and the data under ``data``.
- Plain: no ``ce-*`` headers, the JSON body is the data; the gateway fills in id and source.

Both CloudEvents modes need the spec's required attributes (``specversion`` 1.0, ``id``,
``source``, ``type``); ``type`` must be the type the URL names. Batched mode is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from driftline.runtime.http.problems import (
    FieldProblem,
    ProblemError,
    Reason,
    bad_request,
    unsupported_media_type,
)

REQUIRED = ("specversion", "id", "source", "type")
STRUCTURED = "application/cloudevents+json"


@dataclass(frozen=True)
class Incoming:
    """An event received over HTTP, before validation against its model."""

    mode: str
    data: Any
    id: str | None = None
    source: str | None = None
    time: datetime | None = None
    traceparent: str | None = None


def parse(event_type: str, headers: Mapping[str, str], body: bytes) -> Incoming:
    """The event in a request, whatever the mode; a 400/415 naming what is wrong otherwise."""
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type == "application/cloudevents-batch+json":
        raise unsupported_media_type(
            "batched CloudEvents are not accepted: send one event per request", Reason.BATCH
        )
    if content_type == STRUCTURED:
        doc = _json(body, "the structured CloudEvent")
        if not isinstance(doc, dict):
            raise bad_request("a structured CloudEvent must be a JSON object", Reason.NOT_OBJECT)
        if "data_base64" in doc:
            raise bad_request(
                "data_base64 is not accepted: put the event as JSON under 'data'",
                Reason.DATA_BASE64,
            )
        attrs = {k: v for k, v in doc.items() if k != "data"}
        if "data" not in doc:
            raise _missing(["data"], "")
        return _incoming("structured", event_type, attrs, doc["data"], "")
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise unsupported_media_type(
            f"content type {content_type!r} is not JSON: send application/json "
            f"(binary or plain) or {STRUCTURED}",
            Reason.NOT_JSON,
        )
    data = _json(body, "the body")
    attrs = {k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    if not attrs:
        return Incoming("plain", data, traceparent=headers.get("traceparent"))
    attrs.setdefault("traceparent", headers.get("traceparent"))
    return _incoming("binary", event_type, attrs, data, "ce-")


def _incoming(
    mode: str, event_type: str, attrs: Mapping[str, Any], data: Any, prefix: str
) -> Incoming:
    missing = [a for a in REQUIRED if not isinstance(attrs.get(a), str) or not attrs[a]]
    if missing:
        raise _missing(missing, prefix)  # a present but non-string attribute counts as missing
    if attrs["specversion"] != "1.0":
        raise bad_request(
            f"{prefix}specversion {attrs['specversion']!r} is not supported: use 1.0",
            Reason.BAD_ATTRIBUTE,
            fields=[FieldProblem(field=f"{prefix}specversion", message="must be 1.0")],
        )
    if attrs["type"] != event_type:
        raise bad_request(
            f"{prefix}type {attrs['type']!r} does not match the URL's event type {event_type!r}",
            Reason.TYPE_MISMATCH,
            fields=[FieldProblem(field=f"{prefix}type", message=f"must be {event_type}")],
        )
    when = attrs.get("time")
    try:
        time = datetime.fromisoformat(when) if when else None
    except (TypeError, ValueError):
        raise bad_request(
            f"{prefix}time {when!r} is not an RFC 3339 timestamp",
            Reason.BAD_ATTRIBUTE,
            fields=[FieldProblem(field=f"{prefix}time", message="not RFC 3339")],
        ) from None
    traceparent = attrs.get("traceparent")
    return Incoming(
        mode,
        data,
        attrs["id"],
        attrs["source"],
        time,
        traceparent if isinstance(traceparent, str) and traceparent else None,
    )


def _missing(names: list[str], prefix: str) -> ProblemError:
    named = ", ".join(prefix + n for n in names)
    return bad_request(
        f"CloudEvent attribute(s) {named} missing",
        Reason.MISSING_ATTRIBUTE,
        fields=[FieldProblem(field=prefix + n, message="required") for n in names],
    )


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise bad_request(f"{what} is not JSON ({exc})", Reason.NOT_JSON) from None
