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
    gpu: Gpu = "none"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0
    init: InitHook | None = None
    checkpoint: CheckpointHook | None = None
    """Persists ``ctx.state`` after each batch: called once its outputs are sent and before
    its offsets are committed, so no committed input is missing from saved state. If it
    raises, nothing is committed and the batch comes again (outputs keep their ids)."""

    @property
    def group(self) -> str:
        """The consumer group: one per function, shared by all its runner processes."""
        return f"driftline.{self.name}"


def _input_types(handler: Handler, subscribes: Sequence[str]) -> tuple[type[Event], ...]:
    hints = typing.get_type_hints(handler)
    params = [p for p in handler.__code__.co_varnames[: handler.__code__.co_argcount]]
    hint = hints.get(params[0]) if params else None
    if hint is None:
        return tuple(BY_TYPE[t] for t in subscribes)
    declared = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, type(int | str))
        else (hint,)
    )
    for t in declared:
        if not (isinstance(t, type) and issubclass(t, Event)):
            raise ConfigError(f"{handler.__name__}: input type {t!r} is not an Event model")
    wanted = {t.TYPE for t in declared}
    if wanted != set(subscribes):
        raise ConfigError(
            f"{handler.__name__}: subscribes to {sorted(subscribes)} but its signature takes "
            f"{sorted(wanted)}; they must name the same event types"
        )
    return tuple(declared)


def function(
    *,
    subscribes: str | Sequence[str],
    emits: str | Sequence[str] = (),
    name: str | None = None,
    gpu: Gpu = "none",
    retry: RetryPolicy | None = None,
    timeout_s: float = 60.0,
    init: InitHook | None = None,
    checkpoint: CheckpointHook | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler as a Driftline function (attaches ``handler.spec``)."""
    subs = (subscribes,) if isinstance(subscribes, str) else tuple(subscribes)
    outs = (emits,) if isinstance(emits, str) else tuple(emits)
    unknown = [t for t in (*subs, *outs) if t not in BY_TYPE]
    if unknown:
        raise ConfigError(f"unknown event type(s) {unknown}; known: {sorted(BY_TYPE)}")
    if gpu not in ("none", "preferred", "required"):
        raise ConfigError(f"gpu must be none, preferred or required, not {gpu!r}")

    def attach(handler: Handler) -> Handler:
        spec = FunctionSpec(
            name=name or handler.__name__.replace("_", "-"),
            handler=handler,
            subscribes=subs,
            emits=outs,
            input_types=_input_types(handler, subs),
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
