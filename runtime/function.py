"""Declaring a function: ``@function(...)`` attaches a :class:`FunctionSpec`, nothing more.

The decorator does not bind to a broker; a runner reads the spec::

    @function(subscribes="score.requested", emits="score.completed",
              gpu="preferred", init=load_sessions)
    def score(event: ScoreRequested, ctx: Context) -> ScoreCompleted: ...

The event types in the handler's signature are the decoders: an event of any other type on
a subscribed topic is refused.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from driftline.events.models import BY_TYPE, Event
from driftline.runtime.errors import ConfigError

if TYPE_CHECKING:
    from driftline.runtime.context import Context

Gpu = Literal["none", "preferred", "required"]
Handler = Callable[[Any, "Context"], Any]
InitHook = Callable[["Context"], Any]
CheckpointHook = Callable[["Context"], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a retryable failure is tried again."""

    attempts: int = 3
    """Total attempts, the first included."""
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    jitter_s: float = 0.2


@dataclass(frozen=True)
class FunctionSpec:
    """Everything a runner needs to host a function."""

    name: str
    handler: Handler
    subscribes: tuple[str, ...]
    emits: tuple[str, ...]
    input_types: tuple[type[Event], ...]
    output_types: tuple[type[Event], ...] = ()
    """The classes of ``emits``, in the same order."""
    gpu: Gpu = "none"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0
    init: InitHook | None = None
    checkpoint: CheckpointHook | None = None
    """Persists ``ctx.state`` after each batch: called once its outputs are sent and before
    its offsets are committed, so no committed input is missing from saved state. If it
    raises, nothing is committed and the batch comes again (outputs keep their ids)."""

    @property
    def event_types(self) -> tuple[type[Event], ...]:
        """Every event class it reads or writes: what a codec must know to host it."""
        return (*self.input_types, *self.output_types)

    @property
    def group(self) -> str:
        """The consumer group: one per function, shared by all its runner processes."""
        return f"driftline.{self.name}"


EventRef = str | type[Event]
"""An event type by name (``"score.completed"``) or by class (``Scored``)."""


def _as_tuple(refs: EventRef | Sequence[EventRef]) -> tuple[EventRef, ...]:
    return (refs,) if isinstance(refs, (str, type)) else tuple(refs)


def _event_classes(hint: Any) -> list[type[Event]]:
    """The Event classes in a type hint: ``X``, ``X | Y``, ``X | None``, ``list[X]``..."""
    if isinstance(hint, type) and issubclass(hint, Event):
        return [hint]
    return [c for arg in typing.get_args(hint) for c in _event_classes(arg)]


def _hints(handler: Handler) -> tuple[str | None, dict[str, Any]]:
    """The handler's first parameter name and its type hints; ConfigError if unresolvable."""
    code = handler.__code__
    first = code.co_varnames[0] if code.co_argcount else None
    try:
        return first, typing.get_type_hints(handler)
    except Exception as exc:  # NameError, or a bad annotation: name the handler
        raise ConfigError(
            f"{handler.__name__}: cannot read its type hints ({type(exc).__name__}: {exc}); "
            f"the event classes in its signature must be importable where it is defined"
        ) from exc


def _input_types(
    name: str, first: str | None, hints: dict[str, Any], subscribes: Sequence[str]
) -> tuple[type[Event], ...]:
    hint = hints.get(first) if first else None
    if hint is None:
        raise ConfigError(
            f"{name}: its first parameter has no type; annotate it with the event class it "
            f"takes, e.g. def {name.replace('-', '_')}(event: ScoreCompleted, ctx: Context)"
        )
    declared = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, type(int | str))
        else (hint,)
    )
    for t in declared:
        if not (isinstance(t, type) and issubclass(t, Event)):
            raise ConfigError(f"{name}: input type {t!r} is not an Event model")
    wanted = {t.TYPE for t in declared}
    if wanted != set(subscribes):
        raise ConfigError(
            f"{name}: subscribes to {sorted(subscribes)} but its signature takes "
            f"{sorted(wanted)}; they must name the same event types"
        )
    return tuple(declared)


def _resolve(
    name: str, refs: tuple[EventRef, ...], seen: Sequence[type[Event]], role: str
) -> tuple[type[Event], ...]:
    """The classes of ``refs``: built-in types by name, user types by class or by the name
    of a class in the handler's signature."""
    by_type = {**BY_TYPE, **{c.TYPE: c for c in seen}}
    found: list[type[Event]] = []
    for ref in refs:
        if isinstance(ref, type) and issubclass(ref, Event):
            found.append(ref)
        elif isinstance(ref, str) and ref in by_type:
            found.append(by_type[ref])
        else:
            raise ConfigError(
                f"{name}: {role} {ref!r}, an unknown event type: not built in (known: "
                f"{sorted(BY_TYPE)}) nor an Event class in its signature; pass the class "
                f"({role}=Scored) or annotate the handler with it"
            )
    return tuple(found)


def function(
    *,
    subscribes: EventRef | Sequence[EventRef],
    emits: EventRef | Sequence[EventRef] = (),
    name: str | None = None,
    gpu: Gpu = "none",
    retry: RetryPolicy | None = None,
    timeout_s: float = 60.0,
    init: InitHook | None = None,
    checkpoint: CheckpointHook | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler as a Driftline function (attaches ``handler.spec``).

    Event types are named (``"score.completed"``) or given as classes (``Scored``); a user
    type named by its ``TYPE`` must appear in the handler's signature (input or return).
    """
    subs, outs = _as_tuple(subscribes), _as_tuple(emits)
    if gpu not in ("none", "preferred", "required"):
        raise ConfigError(f"gpu must be none, preferred or required, not {gpu!r}")

    def attach(handler: Handler) -> Handler:
        fn_name = name or handler.__name__.replace("_", "-")
        first, hints = _hints(handler)
        seen = [c for hint in hints.values() for c in _event_classes(hint)]
        sub_types = _resolve(fn_name, subs, seen, "subscribes")
        out_types = _resolve(fn_name, outs, seen, "emits")
        subscribed = tuple(t.TYPE for t in sub_types)
        spec = FunctionSpec(
            name=fn_name,
            handler=handler,
            subscribes=subscribed,
            emits=tuple(t.TYPE for t in out_types),
            input_types=_input_types(fn_name, first, hints, subscribed),
            output_types=out_types,
            gpu=gpu,
            retry=retry or RetryPolicy(),
            timeout_s=timeout_s,
            init=init,
            checkpoint=checkpoint,
        )
        handler.spec = spec  # type: ignore[attr-defined]
        return handler

    return attach


def spec_of(handler: Handler | FunctionSpec) -> FunctionSpec:
    """The spec of a decorated handler (or the spec itself)."""
    if isinstance(handler, FunctionSpec):
        return handler
    spec = getattr(handler, "spec", None)
    if not isinstance(spec, FunctionSpec):
        raise ConfigError(f"{handler!r} is not a Driftline function (use @function)")
    return spec
