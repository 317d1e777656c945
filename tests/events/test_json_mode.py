"""CloudEvents in JSON on the bus (binary and structured mode), as other producers write
them: decoded and validated like Avro ones, refused with the reason otherwise."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from driftline.events import Codec, DecodeError, LabelsReceived
from tests.events.test_user import Scored

codec = Codec([Scored])
LABELS = {"model": "m", "request_id": "r1", "labels": [1.5]}


def binary(
    data: Any, event_type: str = "labels.received", **extra: bytes
) -> list[tuple[str, bytes]]:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": b"id-1",
        "ce_type": event_type.encode(),
        "ce_source": b"shop/java",
        "ce_time": b"2026-12-04T10:00:00Z",
        "content-type": b"application/json; charset=utf-8",
        **extra,
    }
    return list(headers.items())


def structured(**doc: Any) -> tuple[bytes, list[tuple[str, bytes]]]:
    event = {"specversion": "1.0", "id": "id-2", "source": "shop/go", "type": "shop.scored"}
    event.update(doc)
    return json.dumps(event).encode(), [("content-type", b"application/cloudevents+json")]


def test_binary_mode_json_is_decoded_and_validated() -> None:
    envelope = codec.decode(json.dumps(LABELS).encode(), binary(LABELS))
    assert envelope.data == LabelsReceived(**LABELS)
    assert (envelope.id, envelope.source, envelope.time.hour) == ("id-1", "shop/java", 10)


def test_structured_mode_json_carries_a_user_type() -> None:
    value, headers = structured(data={"model": "m", "request_id": "r", "prediction": 2.0})
    envelope = codec.decode(value, headers)
    assert envelope.data == Scored(model="m", request_id="r", prediction=2.0)
    assert (envelope.id, envelope.type, envelope.source) == ("id-2", "shop.scored", "shop/go")


@pytest.mark.parametrize(
    ("value", "headers", "why"),
    [
        (b"{not json", binary(None), "content-type says JSON, but the value is not JSON"),
        (json.dumps({**LABELS, "labels": "x"}).encode(), binary(None), "labels.received invalid"),
        (*structured(id=""), "attribute(s) id missing"),
        (*structured(specversion="0.3"), "specversion '0.3', not 1.0"),
        (*structured(data_base64="AAAA"), "no 'data' (data_base64 is not accepted)"),
        (*structured(type="shop.nope", data={}), "unknown event type 'shop.nope'"),
        (b"[1]", [("content-type", b"application/cloudevents+json")], "must be a JSON object"),
    ],
)
def test_a_bad_json_event_is_refused_with_the_reason(
    value: bytes, headers: list[tuple[str, bytes]], why: str
) -> None:
    with pytest.raises(DecodeError, match=re.escape(why)):
        codec.decode(value, headers)
