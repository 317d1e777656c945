"""What every gateway endpoint shares: body limits, the bearer token, publishing.

Errors are answered as problems (:mod:`driftline.runtime.http.problems`).
"""

from __future__ import annotations

import hmac
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from driftline.events.codec import Codec
from driftline.events.models import Event
from driftline.runtime.bus.base import Bus, Producer
from driftline.runtime.errors import BusError
from driftline.runtime.http.problems import (
    ProblemError,
    Reason,
    problem_for,
    too_large,
    unauthorized,
)


async def read_body(request: Request, limit: int, setting: str = "max_body_bytes") -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes (the ``setting``'s
    value, named in the answer) before reading it all."""
    if _declared(request, limit, setting) is not None:
        return await request.body()  # the server reads no more than Content-Length says
    return b"".join([chunk async for chunk in _limited(request, limit, setting)])


@asynccontextmanager
async def spooled_body(
    request: Request, limit: int, setting: str = "max_upload_bytes"
) -> AsyncIterator[tuple[Path, int]]:
    """The request body in a temporary file (its path and size), written as it arrives, so
    a large upload never sits in memory whole; over ``limit`` bytes is refused (413) as
    soon as it shows, from Content-Length or while reading. The file is gone afterwards."""
    _declared(request, limit, setting)
    with tempfile.TemporaryDirectory(prefix="driftline-upload-") as folder:
        path, size = Path(folder) / "body", 0
        with path.open("wb") as out:
            async for chunk in _limited(request, limit, setting):
                size += len(chunk)
                out.write(chunk)
        yield path, size


def _declared(request: Request, limit: int, setting: str) -> int | None:
    """The body's Content-Length (None: not given), refused (413) when over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    if int(declared) > limit:
        raise _too_large(int(declared), limit, setting)
    return int(declared)


async def _limited(request: Request, limit: int, setting: str) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, refused (413) once they pass ``limit`` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, setting)
        yield chunk


def _too_large(size: int, limit: int, setting: str) -> ProblemError:
    return too_large(
        f"request body of {size}+ bytes is over the limit of {limit} bytes "
        f"(setting {setting}, DRIFTLINE_{setting.upper()})"
    )


_bearer = HTTPBearer(auto_error=False, description="The api_token setting.")


def token_dependencies(token: SecretStr | None) -> list[Any]:
    """Route dependencies that require ``Authorization: Bearer <token>``; none when no token is set."""
    if token is None:
        return []
    expected = token.get_secret_value().encode()

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None:
            raise unauthorized(
                "this endpoint needs 'Authorization: Bearer <token>' (setting api_token)",
                Reason.MISSING_TOKEN,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise unauthorized(
                "the bearer token is wrong",
                Reason.BAD_TOKEN,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return [Depends(check)]


class Publisher:
    """Publishes events from request threads: one producer (opened on first use), sends
    serialised, each flushed before the caller answers."""

    def __init__(self, bus: Bus, codec: Codec | None = None, source: str = "driftline/gateway"):
        self.bus = bus
        self.codec = codec or Codec()
        self.source = source
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def publish(
        self,
        event: Event,
        event_id: str,
        *,
        source: str | None = None,
        time: datetime | None = None,
        traceparent: str | None = None,
    ) -> str:
        value, headers = self.codec.encode(
            event, id=event_id, source=source or self.source, time=time, traceparent=traceparent
        )
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = self.bus.producer()
                self._producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
                self._producer.flush()
        except BusError as exc:
            raise problem_for(
                exc, f"the event bus did not take the event ({exc}); try again"
            ) from exc
        return event_id

    def publish_many(self, events: list[tuple[Event, str]]) -> None:
        """Publish ``(event, id)`` pairs with one flush at the end (raises :class:`BusError`)."""
        encoded = [
            (event, *self.codec.encode(event, id=event_id, source=self.source))
            for event, event_id in events
        ]
        with self._lock:
            if self._producer is None:
                self._producer = self.bus.producer()
            for event, value, headers in encoded:
                self._producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
            self._producer.flush()

    def close(self) -> None:
        """Close the producer; a later publish opens a new one."""
        with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                producer.close()
