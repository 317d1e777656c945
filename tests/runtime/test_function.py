"""The @function decorator: event types by name or class, user types, and its refusals."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from driftline.events import Event, ScoreCompleted
from driftline.runtime import ConfigError, Context, function


class Scored(Event):
    TYPE: ClassVar[str] = "shop.scored"
    request_id: str


def test_a_user_type_named_by_type_is_found_in_the_return_hint() -> None:
    @function(subscribes="score.completed", emits="shop.scored")
    def tag(event: ScoreCompleted, ctx: Context) -> list[Scored]:
        return []

    spec = tag.spec  # type: ignore[attr-defined]
    assert spec.emits == ("shop.scored",) and spec.output_types == (Scored,)
    assert spec.event_types == (ScoreCompleted, Scored)


def test_event_types_may_be_given_as_classes() -> None:
    @function(subscribes=Scored, emits=[ScoreCompleted])
    def back(event: Scored, ctx: Context) -> None:
        ctx.emit(ScoreCompleted(model=event.model, request_id=event.request_id, version=1))

    spec = back.spec  # type: ignore[attr-defined]
    assert spec.subscribes == ("shop.scored",) and spec.emits == ("score.completed",)
    assert spec.input_types == (Scored,)


def test_an_unknown_type_is_refused_naming_the_function() -> None:
    with pytest.raises(ConfigError, match=r"tag: emits 'shop\.tagged', an unknown event type"):

        @function(subscribes="score.completed", emits="shop.tagged")
        def tag(event: ScoreCompleted, ctx: Context) -> None: ...


def test_a_function_without_a_typed_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="tag: its first parameter has no type"):

        @function(subscribes="score.completed")
        def tag(event, ctx: Context) -> None:  # type: ignore[no-untyped-def]
            ...


def test_a_hint_that_does_not_resolve_is_refused_naming_the_function() -> None:
    namespace: dict[str, Any] = {"function": function}
    source = (
        "from __future__ import annotations\n"
        "@function(subscribes='score.completed')\n"
        "def tag(event: Missing, ctx: object) -> None: ...\n"
    )
    with pytest.raises(ConfigError, match=r"tag: cannot read its type hints \(NameError"):
        exec(compile(source, "shop.py", "exec"), namespace)
