"""Events on the wire: the CloudEvents Kafka binding in binary mode, Avro single-object values.

Headers carry the CloudEvents attributes (``ce_id``, ``ce_type``, ``ce_source``,
``ce_time``, ``ce_specversion``, ``ce_subject``, ``content-type``) and ``traceparent``.
The value is Avro single-object encoding: ``C3 01``, the writer schema's 8-byte
CRC-64-AVRO fingerprint, then the Avro body. A reader looks the fingerprint up among the
current and historical schemas (``schemas/history/``) and resolves it against the
current schema, so events written by older producers still decode. A value written with
the current schema of a type whose fields Avro fully vouches for becomes its event without
a second validation (:mod:`driftline.events.trusted`).

A codec knows the built-in types and the user event types it is given
(:mod:`driftline.events.user`), whose schemas are derived from their classes. It also
reads CloudEvents in JSON, binary or structured mode, as other producers write them
(:mod:`driftline.events.json_mode`).
"""

from __future__ import annotations

import io
import random
import time as _clock
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError as PydanticValidationError

from driftline.events import json_mode
from driftline.events.avro import SCHEMA_DIR, fingerprint, load_schema, schema_path
from driftline.events.errors import DecodeError, SchemaError
from driftline.events.models import EVENT_MODELS, Event
from driftline.events.trusted import Builder, builder, packed_fields
from driftline.events.user import describe, is_builtin, user_schema

MAGIC = b"\xc3\x01"
CONTENT_TYPE = "application/avro"
SPECVERSION = b"1.0"

Headers = list[tuple[str, bytes]]

# Header tuples that never change are built once and shared by every encoded event.
_SPEC_HEADER = ("ce_specversion", SPECVERSION)
_CONTENT_HEADER = ("content-type", CONTENT_TYPE.encode())
# The headers decode reads (an envelope's attributes); others are passed over.
_WANTED = frozenset(("ce_id", "ce_type", "ce_source", "ce_time", "traceparent", "content-type"))


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded event with its CloudEvents attributes."""

    id: str
    type: str
    source: str
    time: datetime
    data: Event
    traceparent: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Schema:
    model: type[Event]
    parsed: Any
    fingerprint: bytes
    prefix: bytes  # MAGIC + fingerprint, the first 10 bytes of every value
    packed: tuple[str, ...]  # fields that hold a Packed value (or None)
    builder: Builder | None  # makes events of records read with this schema, unvalidated
    builtin: bool  # a built-in type: dumped from its fields, no serializers to honour

    @classmethod
    def of(cls, model: type[Event], raw: dict[str, Any]) -> _Schema:
        fp = fingerprint(raw)
        packed = tuple(packed_fields(model))
        # only the built-in types, whose config, serializers and validators are known here;
        # a user's type may customise any of them, so it is validated and dumped as pydantic does
        own = is_builtin(model)
        return cls(
            model, parse_schema(raw), fp, MAGIC + fp, packed, builder(model) if own else None, own
        )


class Codec:
    """Encodes and decodes every built-in event type and the user types it is given; it is
    immutable (:meth:`including` makes a codec that knows more types)."""

    def __init__(
        self,
        user_types: Sequence[type[Event]] = (),
        writers: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        """``writers``: more schemas per user type that events may have been written with
        (other versions of the type, from the schema registry on the bus)."""
        self._current: dict[str, _Schema] = {}
        self._by_fp: dict[bytes, tuple[_Schema, Any]] = {}
        for model in EVENT_MODELS:
            cur = _Schema.of(model, load_schema(schema_path(model)))
            self._current[model.TYPE] = cur
            self._by_fp[cur.fingerprint] = (cur, cur.parsed)
        for path in sorted((SCHEMA_DIR / "history").glob("*.avsc")):
            event_type = path.name.split("@")[0]
            raw = load_schema(path)
            cur = self._current[event_type]
            self._by_fp.setdefault(fingerprint(raw), (cur, parse_schema(raw)))
        self.user_types: tuple[type[Event], ...] = ()
        """The user types this codec knows: those it was given, an equal copy of one
        (the same type and fields, from another file) included."""
        for model in user_types:
            self._add_user_type(model)
        self.writers = {t: list(v) for t, v in (writers or {}).items() if t in self._current}
        for event_type, schemas in self.writers.items():
            for raw in schemas:
                self._by_fp.setdefault(
                    fingerprint(raw), (self._current[event_type], parse_schema(raw))
                )
        self._type_headers = {t: ("ce_type", t.encode()) for t in self._current}

    def _add_user_type(self, model: type[Event]) -> None:
        if is_builtin(model):
            return
        raw = user_schema(model)
        fp = fingerprint(raw)
        known = self._current.get(model.TYPE)
        if known is not None and known.fingerprint != fp:
            raise SchemaError(
                f"event type {model.TYPE!r} is declared twice with different schemas: "
                f"{describe(known.model)} and {describe(model)}; declare it once and import it"
            )
        if known is None:
            cur = _Schema.of(model, raw)
            self._current[model.TYPE] = cur
            self._by_fp[fp] = (cur, cur.parsed)
        if model not in self.user_types:
            self.user_types += (model,)

    def including(
        self,
        user_types: Sequence[type[Event]],
        writers: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    ) -> Codec:
        """A codec that also knows ``user_types`` and ``writers`` (this one when it knows
        them already)."""
        new = [m for m in user_types if not is_builtin(m) and m not in self.user_types]
        types = {*self._current, *(m.TYPE for m in new)}  # writers of others are no use
        more = {
            t: v
            for t, v in (writers or {}).items()
            if t in types and list(v) != self.writers.get(t)
        }
        if not new and not more:
            return self
        return Codec((*self.user_types, *new), {**self.writers, **more})

    def knows(self, event_type: str) -> bool:
        return event_type in self._current

    def known_fingerprints(self) -> set[bytes]:
        return set(self._by_fp)

    def encode_value(self, event: Event) -> bytes:
        schema = self._current[event.TYPE]
        # what model_dump() gives for the Avro writer, at a third of its cost: event fields
        # are scalars, lists, dicts and Packed values (bytes on the wire), nothing nested
        if schema.builtin:
            record = event.__dict__.copy()
            for name in schema.packed:
                value = record[name]
                if value is not None:
                    record[name] = value.to_bytes()
        else:
            record = event.model_dump()
        buf = io.BytesIO()
        buf.write(schema.prefix)
        schemaless_writer(buf, schema.parsed, record)
        return buf.getvalue()

    def encode(
        self,
        event: Event,
        *,
        id: str | None = None,
        source: str = "driftline",
        time: datetime | None = None,
        traceparent: str | None = None,
    ) -> tuple[bytes, Headers]:
        """The Kafka value and headers for an event (``time``: now when not given)."""
        when = now_iso() if time is None else time.isoformat()
        headers: Headers = [
            _SPEC_HEADER,
            ("ce_id", (id or str(uuid.uuid4())).encode()),
            self._type_headers[event.TYPE],
            ("ce_source", source.encode()),
            ("ce_time", when.encode()),
            ("ce_subject", event.model.encode()),
            _CONTENT_HEADER,
            ("traceparent", (traceparent or new_traceparent()).encode()),
        ]
        return self.encode_value(event), headers

    def decode_value(self, value: bytes, event_type: str | None = None) -> Event:
        if len(value) < 10 or value[:2] != MAGIC:
            raise DecodeError("value is not Avro single-object encoded (no C3 01 marker)")
        entry = self._by_fp.get(bytes(value[2:10]))
        if entry is None:
            raise DecodeError(f"unknown writer schema fingerprint {value[2:10].hex()}")
        schema, writer = entry
        if event_type is not None and schema.model.TYPE != event_type:
            raise DecodeError(f"ce_type is {event_type!r} but the value is a {schema.model.TYPE}")
        try:
            body = io.BytesIO(value)
            body.seek(10)  # past the marker and fingerprint, without copying the body
            current = writer is schema.parsed
            record = schemaless_reader(body, writer, None if current else schema.parsed)
        except Exception as exc:  # fastavro raises many kinds on truncated or garbage bodies
            raise DecodeError(f"Avro body unreadable: {type(exc).__name__}: {exc}") from exc
        if current and schema.builder is not None and type(record) is dict:  # see trusted.py
            event = schema.builder.build(record)
            if event is not None:
                return event
        try:
            return schema.model.model_validate(record)
        except PydanticValidationError as exc:
            raise DecodeError(f"{schema.model.TYPE} invalid: {exc}") from exc

    def _validate(self, event_type: str, raw: Any) -> Event:
        try:
            return self._current[event_type].model.model_validate(raw)
        except PydanticValidationError as exc:
            raise DecodeError(f"{event_type} invalid: {exc}") from exc

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str = "?",
        partition: int = -1,
        offset: int = -1,
    ) -> Envelope:
        """Decode one record; any problem raises :class:`DecodeError` naming where it was."""
        try:
            attrs = {k: v.decode() for k, v in headers if k in _WANTED}
            raw: Any = json_mode.NOT_JSON  # else JSON data, from a producer that is not us
            if attrs.get("content-type", CONTENT_TYPE) != CONTENT_TYPE:  # ours: the fast path
                attrs, raw = json_mode.read(value, attrs)
            if "ce_id" not in attrs or "ce_type" not in attrs:
                missing = [k for k in ("ce_id", "ce_type") if k not in attrs]
                raise DecodeError(f"missing CloudEvents header(s) {', '.join(missing)}")
            if attrs["ce_type"] not in self._current:
                raise DecodeError(f"unknown event type {attrs['ce_type']!r}")
            if raw is json_mode.NOT_JSON:
                data = self.decode_value(value, attrs["ce_type"])
            else:
                data = self._validate(attrs["ce_type"], raw)
            when = attrs.get("ce_time")
            return Envelope(
                id=attrs["ce_id"],
                type=attrs["ce_type"],
                source=attrs.get("ce_source", ""),
                time=datetime.fromisoformat(when) if when else datetime.now(UTC),
                data=data,
                traceparent=attrs.get("traceparent"),
            )
        except DecodeError as exc:
            raise DecodeError(exc.reason, topic=topic, partition=partition, offset=offset) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(
                f"bad header: {exc}", topic=topic, partition=partition, offset=offset
            ) from exc


_second: list[tuple[int, str]] = [(-1, "")]  # the last second now_iso() formatted, its text


def now_iso() -> str:
    """The time now in UTC, as ``datetime.now(UTC).isoformat()`` writes it (always with
    microseconds): a third of its cost, the date and time to the second formatted once a
    second."""
    micros = _clock.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached, text = _second[0]
    if cached != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (second, text)  # one store: other threads see the old pair or the new
    return f"{text}.{fraction:06d}+00:00"


# Trace and span ids need to be unique, not secret: a PRNG avoids a syscall per event
# (os.urandom showed up as a sixth of the runner's per-event cost under load).
_ids = random.Random()


def random_id() -> str:
    """32 hex digits, unique (not secret): a request id without a syscall."""
    return f"{_ids.getrandbits(128):032x}"


def new_traceparent() -> str:
    """A fresh W3C traceparent (sampled)."""
    return f"00-{_ids.getrandbits(128):032x}-{_ids.getrandbits(64):016x}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace as ``parent``, new span id; a fresh trace when there is no valid parent."""
    if parent is not None and len(parent) == 55 and parent[2] == "-":
        return f"{parent[:36]}{_ids.getrandbits(64):016x}{parent[52:]}"
    return new_traceparent()
