"""Avro schemas derived from the event models, and their CRC-64-AVRO fingerprints.

``python -m driftline.events.avro`` rewrites ``schemas/*.avsc`` from the models; the
checked-in files are the wire contract and ``tests/events/test_schemas.py`` fails when a
model and its file disagree or a change would break readers of older events.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

from fastavro.schema import parse_schema, to_parsing_canonical_form
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from driftline.events.models import EVENT_MODELS, Event

NAMESPACE = "io.driftline.events"
SCHEMA_DIR = Path(__file__).parent / "schemas"

_SCALARS: dict[Any, Any] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    datetime: {"type": "long", "logicalType": "timestamp-micros"},
}


def _avro_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _avro_type(args[0])
    if isinstance(annotation, type) and hasattr(annotation, "AVRO"):
        return annotation.AVRO
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        members = [_avro_type(a) for a in args]
        return sorted(members, key=lambda m: m != "null")  # null first: default null works
    if origin is typing.Literal:
        return "string"
    if origin is list:
        return {"type": "array", "items": _avro_type(args[0])}
    if origin is dict:
        return {"type": "map", "values": _avro_type(args[1])}
    raise TypeError(f"no Avro mapping for {annotation!r}")


def _avro_default(field: Any) -> Any:
    if field.default_factory is not None:
        value = field.default_factory()
        return value.to_bytes().decode("latin-1") if hasattr(value, "to_bytes") else value
    if field.default is PydanticUndefined:
        return PydanticUndefined
    return field.default


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The Avro record schema for an event model, in field declaration order."""
    fields = []
    for name, field in model.model_fields.items():
        try:
            entry: dict[str, Any] = {"name": name, "type": _avro_type(field.annotation)}
        except TypeError as exc:
            raise TypeError(f"field {name!r}: {exc}") from exc
        default = _avro_default(field)
        if default is not PydanticUndefined:
            entry["default"] = default
        if field.description:
            entry["doc"] = field.description
        fields.append(entry)
    return {
        "type": "record",
        "name": model.__name__,
        "namespace": NAMESPACE,
        "doc": ((model.__doc__ or "").strip().splitlines() or [""])[0],
        "fields": fields,
    }


_EMPTY = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


def fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's canonical form, as the 8 little-endian bytes of the spec."""
    fp = _EMPTY
    for byte in to_parsing_canonical_form(parse_schema(schema)).encode():
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def schema_path(model: type[Event]) -> Path:
    return SCHEMA_DIR / f"{model.TYPE}.avsc"


def load_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def write_schemas() -> list[Path]:
    """Rewrite the checked-in schema files from the models; returns the files changed."""
    changed = []
    for model in EVENT_MODELS:
        path = schema_path(model)
        text = json.dumps(schema_for(model), indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for p in write_schemas():
        print(f"wrote {p}")
