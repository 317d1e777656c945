"""What every gateway endpoint shares: the error body, body limits, the bearer token, publishing.

Every error the gateway answers has one shape, :class:`Problem`: ``error`` is a sentence
saying what was wrong and what to do, ``reason`` a stable word scripts can test, and
``fields`` the fields that failed validation. The Open Inference Protocol wants errors as
``{"error": "..."}``; a Problem is that, with more.
"""

from __future__ import annotations

import hmac
import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftline.events.codec import Codec
from driftline.events.models import Event
from driftline.runtime.bus.base import Bus, Producer
from driftline.runtime.errors import BusError, DriftlineError


class FieldProblem(BaseModel):
    """One field that failed validation."""

    field: str = Field(
        description="Dotted path of the field, e.g. rows.0.1; empty for the whole body."
    )
    message: str


class Problem(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="What was wrong and what to do, in words.")
    reason: str = Field(default="", description="A stable word for scripts, e.g. bad_signature.")
    fields: list[FieldProblem] = Field(
        default_factory=list, description="Fields that failed validation."
    )


class ProblemError(DriftlineError):
    """Raised by an endpoint to answer ``status`` with a :class:`Problem`."""

    def __init__(
        self,
        status: int,
        error: str,
        reason: str = "",
        *,
        fields: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(error)
        self.status = status
        self.problem = Problem(error=error, reason=reason, fields=fields or [])
        self.headers = headers


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring that an operation may answer these statuses with a Problem."""
    return {status: {"model": Problem} for status in statuses}


def field_problems(exc: PydanticValidationError | RequestValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(field=".".join(str(p) for p in err["loc"]), message=err["msg"])
        for err in exc.errors()
    ]


def invalid(what: str, exc: PydanticValidationError) -> ProblemError:
    """A 422 naming every wrong field of ``what``."""
    fields = field_problems(exc)
    named = "; ".join(f"{f.field or '(body)'}: {f.message}" for f in fields)
    return ProblemError(422, f"{what} is invalid: {named}", "invalid", fields=fields)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
        return await request.body()  # the server reads no more than Content-Length says
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ProblemError:
    return ProblemError(
        413,
        f"request body of {size}+ bytes is over the limit of {limit} bytes "
        "(setting max_body_bytes)",
        "too_large",
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
            raise ProblemError(
                401,
                "this endpoint needs 'Authorization: Bearer <token>' (setting api_token)",
                "missing_token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ProblemError(
                401,
                "the bearer token is wrong",
                "bad_token",
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
            raise ProblemError(
                503, f"the event bus did not take the event ({exc}); try again", "bus_unavailable"
            ) from exc
        return event_id

    def close(self) -> None:
        """Close the producer; a later publish opens a new one."""
        with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                producer.close()


def install_error_handlers(app: Any) -> None:
    """Answer every error, FastAPI's own included, with a :class:`Problem`."""

    async def problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return JSONResponse(exc.problem.model_dump(), exc.status, headers=exc.headers)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = field_problems(exc)
        named = "; ".join(f"{f.field}: {f.message}" for f in fields)
        return JSONResponse(
            Problem(
                error=f"request is invalid: {named}", reason="invalid", fields=fields
            ).model_dump(),
            422,
        )

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            Problem(error=str(exc.detail), reason="http").model_dump(),
            exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
