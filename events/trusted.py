"""Events built from Avro records without validating again what the schema guarantees.

An Avro reader hands the codec a record whose every field has its schema's type: a
``string`` is a ``str``, a ``long`` an ``int``, a ``timestamp-micros`` an aware UTC
``datetime``, an array a list of its items' type. For an event model whose fields are all
of such types, pydantic's validation of that record checks nothing the schema did not, and
it cost about as much as reading the record. :func:`builder` decides, once per model,
whether that holds; its :class:`Builder` then turns a record into the event as pydantic's
own ``model_construct`` does, unpacking ``Packed`` fields (matrices, row times) and
running the model's ``after`` validators (what the schema cannot promise, such as one
time per row).

A model is not trusted, and is validated as before, when any field is of another type (a
``Literal``: Avro knows only ``string``), has constraints, or the model has field
validators, validators of another mode, private attributes or a ``model_post_init``.
Anything that goes wrong while building returns ``None``: the caller validates the record
the usual way, so errors read exactly as they always have.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from driftline.events.matrix import Packed
from driftline.events.models import Event, _utc

# annotations whose values the Avro schema derived from them (events/avro.py) guarantees
_PLAIN: set[Any] = {str, int, float, bool}
_CONTAINERS: set[Any] = {
    list[str],
    list[int],
    list[float],
    dict[str, str],
    dict[str, int],
    dict[str, float],
}
_set = object.__setattr__


class Builder:
    """Makes one model's events from Avro records (see the module docstring)."""

    def __init__(self, model: type[Event], packed: dict[str, type[Packed]], after: list[str]):
        self.model = model
        self.packed = tuple(packed.items())
        self.after = tuple(after)

    def build(self, values: dict[str, Any]) -> Event | None:
        """The event, made of ``values`` (a record the reader made for it: it becomes the
        event's fields), or None when it needs pydantic's validation to say why not (it
        still takes ``values``: an unpacked value validates as itself)."""
        try:
            for name, kind in self.packed:
                value = values[name]
                if value is not None:
                    if type(value) is not bytes:
                        return None
                    values[name] = kind.from_bytes(value)
            event = self.model.__new__(self.model)
            _set(event, "__dict__", values)
            _set(event, "__pydantic_fields_set__", set(values))
            _set(event, "__pydantic_extra__", None)
            _set(event, "__pydantic_private__", None)
            for name in self.after:
                getattr(event, name)()
        except Exception:  # bad bytes, a failing validator: validation will say what
            return None
        return event


def builder(model: type[Event]) -> Builder | None:
    """A :class:`Builder` for ``model``, or None when its records must be validated."""
    if (
        model.__pydantic_post_init__ is not None
        or model.__private_attributes__
        or model.model_config.get("extra") == "allow"
        or model.__pydantic_decorators__.field_validators
        or model.__pydantic_decorators__.root_validators
        or model.__pydantic_decorators__.computed_fields
    ):
        return None
    after = []
    for name, decorator in model.__pydantic_decorators__.model_validators.items():
        if decorator.info.mode != "after":
            return None
        after.append(name)
    if not all(_trusted(field) for field in model.model_fields.values()):
        return None
    return Builder(model, packed_fields(model), after)


def packed_fields(model: type[Event]) -> dict[str, type[Packed]]:
    """The model's fields that hold a Packed value (or None), with its class: bytes in Avro."""
    packed = {}
    for name, field in model.model_fields.items():
        annotation = _optional(field.annotation)
        if isinstance(annotation, type) and issubclass(annotation, Packed):
            packed[name] = annotation
    return packed


def _optional(annotation: Any) -> Any:
    """``X`` for ``X | None``; anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _trusted(field: FieldInfo) -> bool:
    """Whether Avro guarantees the field's value as pydantic would have made it (a Packed
    value is unpacked from its bytes)."""
    annotation = _optional(field.annotation)
    metadata = list(field.metadata)
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata += more
    if annotation is datetime:
        # fastavro reads timestamp-micros as aware UTC datetimes: Timestamp's _utc is a no-op
        return all(_is_utc(m) for m in metadata)
    if metadata:
        return False
    return (
        annotation in _PLAIN
        or annotation in _CONTAINERS
        or (isinstance(annotation, type) and issubclass(annotation, Packed))
    )


def _is_utc(meta: Any) -> bool:
    func: Callable[..., Any] | None = getattr(meta, "func", None)
    return isinstance(meta, AfterValidator) and func is _utc
