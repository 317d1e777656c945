"""``GET /v1/events/tail``: events as they pass, decoded, as a stream of JSON lines
(:mod:`driftline.runtime.tail`), so ``driftline events tail`` works while ``driftline up``
holds the embedded bus. A blank line is sent after each second without an event (it keeps
the connection alive and lets the server see a client that left)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from driftline.runtime.http.problems import responses
from driftline.runtime.tail import as_line, tail

NDJSON = "application/x-ndjson"
TAIL_PATH = "/v1/events/tail"


def router(bus: Any) -> APIRouter:
    api = APIRouter(tags=["events"])

    @api.get(
        TAIL_PATH,
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "One JSON object a line: type, id, source, time, topic, "
                "partition, offset, data (and error, for a record that would not decode).",
                "content": {NDJSON: {"schema": {"type": "string"}}},
            },
            **responses(503),
        },
    )
    def tail_events(
        type: Annotated[  # noqa: A002 (the query parameter's name)
            list[str] | None, Query(description="Event types to follow (default: every one).")
        ] = None,
        from_beginning: Annotated[
            bool, Query(description="Start at each topic's first event, not its end.")
        ] = False,
        max: Annotated[  # noqa: A002
            int | None, Query(ge=1, description="Stop after this many events.")
        ] = None,
        seconds: Annotated[
            float | None, Query(gt=0, le=86_400, description="Stop after this many seconds.")
        ] = None,
    ) -> StreamingResponse:
        """Events as they pass, decoded (users' types by their registered schemas), until
        ``max`` events or ``seconds`` have passed, or the client leaves."""
        events = tail(
            bus, type or (), from_beginning=from_beginning, max_events=max, seconds=seconds
        )

        def lines() -> Iterator[bytes]:
            for event in events:
                yield b"\n" if event is None else (as_line(event) + "\n").encode()

        return StreamingResponse(lines(), media_type=NDJSON)

    return api
