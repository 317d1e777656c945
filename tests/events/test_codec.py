from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest

from driftline.events import EVENT_MODELS, Codec, ScoreRequested
from driftline.events.avro import fingerprint, schema_for
from driftline.events.codec import MAGIC, now_iso
from driftline.runtime.errors import DecodeError
from tests.events.examples import EXAMPLES

codec = Codec()


def test_every_event_type_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(m.TYPE for m in EVENT_MODELS)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_round_trip(event_type: str) -> None:
    event = EXAMPLES[event_type]
    value, headers = codec.encode(event, id="id-1", source="test")
    envelope = codec.decode(value, headers)
    assert envelope.data == event
    assert envelope.id == "id-1" and envelope.type == event_type and envelope.source == "test"
    assert value[:2] == MAGIC
    assert value[2:10] == fingerprint(schema_for(type(event)))


def test_headers_follow_the_cloudevents_kafka_binding() -> None:
    _, headers = codec.encode(EXAMPLES["score.requested"], id="x")
    names = dict(headers)
    for name in ("ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "traceparent"):
        assert name in names
    assert names["ce_specversion"] == b"1.0"
    assert names["traceparent"].count(b"-") == 3


def test_missing_values_travel_as_nan() -> None:
    event = ScoreRequested.model_validate(
        {"model": "m", "request_id": "r", "columns": ["a"], "rows": [[None]]}
    )
    value, headers = codec.encode(event)
    assert math.isnan(codec.decode(value, headers).data.rows[0][0])


def _bad(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> DecodeError:
    good_value, good_headers = codec.encode(EXAMPLES["labels.received"])
    with pytest.raises(DecodeError) as info:
        codec.decode(
            value, good_headers if headers is None else headers, topic="t", partition=2, offset=7
        )
    return info.value


def test_decode_errors_name_topic_partition_offset_and_cause() -> None:
    err = _bad(b"not avro at all")
    assert (err.topic, err.partition, err.offset) == ("t", 2, 7)
    assert "t[2]@7" in str(err) and "C3 01" in str(err)


def test_unknown_fingerprint() -> None:
    assert "unknown writer schema" in str(_bad(MAGIC + b"\x00" * 8 + b"\x02"))


def test_truncated_body() -> None:
    value, _ = codec.encode(EXAMPLES["labels.received"])
    assert "unreadable" in str(_bad(value[:14]))


def test_type_header_must_match_value() -> None:
    value, headers = codec.encode(EXAMPLES["labels.received"])
    headers = [(k, b"score.requested" if k == "ce_type" else v) for k, v in headers]
    assert "value is a labels.received" in str(_bad(value, headers))


def test_missing_headers() -> None:
    value, _ = codec.encode(EXAMPLES["labels.received"])
    assert "ce_id" in str(_bad(value, []))


def test_unknown_type() -> None:
    value, headers = codec.encode(EXAMPLES["labels.received"])
    headers = [(k, b"nope.never" if k == "ce_type" else v) for k, v in headers]
    assert "unknown event type" in str(_bad(value, headers))


def test_now_iso_reads_as_the_time_now_in_utc() -> None:
    before = datetime.now(UTC)
    text = now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", text)
    assert before <= datetime.fromisoformat(text) <= after
    _, headers = codec.encode(EXAMPLES["labels.received"])
    assert before <= datetime.fromisoformat(dict(headers)["ce_time"].decode())
