"""Events built from Avro records without a second validation (events/trusted.py): the
same events, the same errors, and no trust where the schema promises less than the model."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from driftline.events import Codec, DatasetUploaded, ScoreRequested
from driftline.events.avro import fingerprint, load_schema, schema_path
from driftline.events.codec import MAGIC
from driftline.events.trusted import builder
from driftline.runtime.errors import DecodeError
from tests.events.examples import EXAMPLES

codec = Codec()


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_a_decoded_event_is_the_event_validation_makes(event_type: str) -> None:
    event = EXAMPLES[event_type]
    value, headers = codec.encode(event, id="id-1")
    decoded = codec.decode(value, headers).data
    validated = type(event).model_validate(event.model_dump())
    assert type(decoded) is type(event)
    assert decoded == validated == event
    assert decoded.model_fields_set == validated.model_fields_set
    assert decoded.model_dump() == validated.model_dump()
    assert decoded.model_dump_json() == validated.model_dump_json()


def test_the_hot_types_are_built_and_the_types_avro_cannot_vouch_for_are_not() -> None:
    for event_type in ("score.requested", "score.completed", "labels.received"):
        assert builder(type(EXAMPLES[event_type])) is not None, event_type
    # a Literal is a plain string in Avro: any text would pass unvalidated
    assert builder(DatasetUploaded) is None


def _raw(model: type[Any], record: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A value written straight with the model's schema: what a careless producer sends."""
    raw = load_schema(schema_path(model))
    buf = io.BytesIO()
    buf.write(MAGIC + fingerprint(raw))
    schemaless_writer(buf, parse_schema(raw), record)
    headers = [("ce_id", b"x"), ("ce_type", model.TYPE.encode())]
    return buf.getvalue(), headers


def _request(**changes: Any) -> dict[str, Any]:
    record = EXAMPLES["score.requested"].model_dump()
    record.update(changes)
    return record


def test_bad_matrix_bytes_are_a_decode_error_naming_where_and_why() -> None:
    short = struct.pack("<II", 4, 20) + b"\x00" * 16  # the header promises 640 value bytes
    value, headers = _raw(ScoreRequested, _request(rows=short))
    with pytest.raises(DecodeError) as info:
        codec.decode(value, headers, topic="score.requested", partition=1, offset=9)
    err = info.value
    assert (err.topic, err.partition, err.offset) == ("score.requested", 1, 9)
    assert "rows" in str(err) and "header says 4x20" in str(err)


def test_the_models_own_checks_still_run() -> None:
    rows = EXAMPLES["score.requested"].rows
    times = struct.pack(f"<{len(rows) + 1}q", *range(len(rows) + 1))  # one time too many
    value, headers = _raw(ScoreRequested, _request(row_times=times))
    with pytest.raises(DecodeError, match="row_times has 3 times for 2 rows"):
        codec.decode(value, headers, topic="score.requested", partition=0, offset=3)


def test_a_type_with_a_literal_is_still_validated() -> None:
    record = EXAMPLES["dataset.uploaded"].model_dump()
    record["kind"] = "bogus"
    value, headers = _raw(DatasetUploaded, record)
    with pytest.raises(DecodeError, match="kind"):
        codec.decode(value, headers, topic="dataset.uploaded", partition=0, offset=0)


def test_records_of_a_trusted_type_skip_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken (the tests above pass either way: the fallback validates)."""
    value, headers = codec.encode(EXAMPLES["score.requested"], id="id-1")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("validated again")

    monkeypatch.setattr(ScoreRequested, "model_validate", refuse)
    assert codec.decode(value, headers).data == EXAMPLES["score.requested"]
