"""Event types declared by users: an :class:`~driftline.events.models.Event` subclass with a
``TYPE`` travels like a built-in one, on the topic of that name.

Its Avro schema is derived from the model exactly as the built-in schemas are
(:func:`driftline.events.avro.schema_for`), but is not checked in: each process derives it
from the class it imports. :func:`user_schema` checks that a class can be one::

    class Scored(Event):
        \"\"\"A score, tagged by the shop.\"\"\"

        TYPE: ClassVar[str] = "shop.scored"
        request_id: str
        prediction: float
"""

from __future__ import annotations

import re
from typing import Any

from driftline.events.avro import schema_for
from driftline.events.errors import SchemaError
from driftline.events.models import BY_TYPE, Event
from driftline.events.topics import DLQ_SUFFIX

TOPIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""What Kafka accepts as a topic name (letters, digits, ``.``, ``_``, ``-``), shorter."""
RESERVED_PREFIX = "driftline."
"""Control topics (runner heartbeats, the registry) live under this prefix."""


def describe(model: type[Event]) -> str:
    """Where a class comes from, for messages: ``shop.Scored``."""
    return f"{model.__module__}.{model.__qualname__}"


def is_builtin(model: type[Event]) -> bool:
    return BY_TYPE.get(model.TYPE) is model


def user_schema(model: type[Event]) -> dict[str, Any]:
    """The Avro schema of a user event type; :class:`SchemaError` says what is wrong."""
    name = describe(model)
    _check_type_name(name, model.TYPE)
    if model.TYPE in BY_TYPE:
        raise SchemaError(
            f"{name}: TYPE {model.TYPE!r} is a built-in event type; a type of your own needs "
            f"a name of its own, e.g. 'shop.{model.TYPE}'"
        )
    try:
        return schema_for(model)
    except TypeError as exc:
        raise SchemaError(
            f"{name}: {exc}; an event field is a str, int, float, bool or datetime, or a "
            f"list, dict or optional of those"
        ) from exc


def _check_type_name(name: str, event_type: str) -> None:
    if not event_type:
        raise SchemaError(
            f"{name}: no TYPE; declare one, e.g. TYPE: ClassVar[str] = 'shop.scored' "
            f"(it names the topic too)"
        )
    if not TOPIC_NAME.fullmatch(event_type):
        raise SchemaError(
            f"{name}: TYPE {event_type!r} cannot name a topic; use letters, digits, '.', '_' "
            f"and '-', e.g. 'shop.scored'"
        )
    if event_type.startswith(RESERVED_PREFIX) or event_type.endswith(DLQ_SUFFIX):
        raise SchemaError(
            f"{name}: TYPE {event_type!r} is reserved (names starting {RESERVED_PREFIX!r} or "
            f"ending {DLQ_SUFFIX!r} are Driftline's own topics); choose another"
        )
