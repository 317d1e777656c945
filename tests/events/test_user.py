"""User event types: an Event subclass with a TYPE is encoded and decoded like a built-in one."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from driftline.events import Codec, Event, SchemaError
from driftline.events.avro import fingerprint, schema_for
from driftline.events.codec import MAGIC
from driftline.events.errors import DecodeError
from driftline.events.user import user_schema


def declare_scored() -> type[Event]:
    """A fresh class, as each file that declares the type holds one."""

    class Scored(Event):
        """A score, tagged by the shop."""

        TYPE: ClassVar[str] = "shop.scored"
        request_id: str
        prediction: float
        tags: list[str] = []
        note: str | None = None

    return Scored


Scored: type[Any] = declare_scored()


def test_a_user_type_round_trips_with_its_derived_schema() -> None:
    codec = Codec([Scored])
    event = Scored(model="m", request_id="r1", prediction=2.5, tags=["a"])
    value, headers = codec.encode(event, id="id-1")
    assert value[:2] == MAGIC and value[2:10] == fingerprint(schema_for(Scored))
    envelope = codec.decode(value, headers)
    assert envelope.data == event and envelope.type == "shop.scored" and envelope.id == "id-1"


def test_a_codec_without_the_type_refuses_it() -> None:
    value, headers = Codec([Scored]).encode(Scored(model="m", request_id="r", prediction=1.0))
    with pytest.raises(DecodeError, match="unknown event type 'shop.scored'"):
        Codec().decode(value, headers)


def test_including_adds_types_and_keeps_the_codec_when_nothing_is_new() -> None:
    codec = Codec()
    more = codec.including([Scored])
    assert more is not codec and more.knows("shop.scored") and not codec.knows("shop.scored")
    assert more.including([Scored]) is more


def test_including_writers_of_unknown_types_keeps_the_codec() -> None:
    codec = Codec([Scored])
    assert codec.including([], {"other.type": [{"type": "record"}]}) is codec


def test_an_equal_copy_from_another_file_is_the_same_type() -> None:
    copy: type[Any] = declare_scored()
    assert copy is not Scored
    codec = Codec([Scored, copy])
    value, headers = codec.encode(copy(model="m", request_id="r", prediction=1.0))
    assert isinstance(codec.decode(value, headers).data, Scored)


def test_the_same_type_with_other_fields_is_refused_naming_both() -> None:
    class Other(Event):
        TYPE: ClassVar[str] = "shop.scored"
        request_id: str

    with pytest.raises(
        SchemaError, match=r"declared twice with different schemas.*Scored and .*Other"
    ):
        Codec([Scored, Other])


@pytest.mark.parametrize(
    ("type_name", "why"),
    [
        ("", "no TYPE; declare one"),
        ("score.completed", "is a built-in event type"),
        ("shop scored!", "cannot name a topic"),
        ("driftline.mine", "is reserved"),
        ("shop.scored.dlq", "is reserved"),
    ],
)
def test_a_bad_type_name_is_refused_with_the_reason(type_name: str, why: str) -> None:
    bad = type("Bad", (Event,), {"__annotations__": {}, "TYPE": type_name})
    with pytest.raises(SchemaError, match=why):
        user_schema(bad)


def test_a_field_with_no_avro_form_is_named() -> None:
    class Odd(Event):
        TYPE: ClassVar[str] = "shop.odd"
        items: set[int]

    with pytest.raises(SchemaError, match=r"Odd: field 'items'.*no Avro mapping"):
        user_schema(Odd)


def test_a_type_without_a_docstring_gets_a_schema() -> None:
    class Bare(Event):
        TYPE: ClassVar[str] = "shop.bare"
        n: int

    assert user_schema(Bare)["doc"] == ""
