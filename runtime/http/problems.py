"""How the gateway says no: one error body, stable reasons, and the errors that carry them.

Every error the gateway answers has one shape, :class:`Problem`: ``error`` is a sentence
saying what was wrong and what to do, ``reason`` a stable word scripts can test (a
:class:`Reason`), and ``fields`` the fields that failed validation. The Open Inference
Protocol wants errors as ``{"error": "..."}``; a Problem is that, with more.

An endpoint raises a :class:`ProblemError`, built by the constructor named after its
status (:func:`bad_request`, :func:`not_found`, ...). A domain error
(:mod:`driftline.runtime.errors`) that reaches the app unhandled is answered with the
status :data:`DOMAIN_STATUSES` gives its class; one no entry covers stays a plain 500.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftline.runtime.errors import (
    BusError,
    ConfigError,
    CorruptModelError,
    DecodeError,
    DriftlineError,
    InvalidKeyError,
    NotServingError,
    ObjectNotFoundError,
    RetryableError,
    SchemaError,
    UnknownModelError,
    UnknownVersionError,
    ValidationError,
)

log = logging.getLogger("driftline.http")


class Reason(StrEnum):
    """The stable words of :attr:`Problem.reason`; scripts test them, so a value never changes."""

    # any endpoint
    INVALID = "invalid"  # 422 (400 on /v2): the body, a parameter or the data failed validation
    HTTP = "http"  # FastAPI's own answers: an unknown path (404), a wrong method (405)
    TOO_LARGE = "too_large"  # 413: the body is over max_body_bytes
    MISSING_TOKEN = "missing_token"  # 401: no Authorization: Bearer header
    BAD_TOKEN = "bad_token"  # 401: the bearer token is wrong
    BUS_UNAVAILABLE = "bus_unavailable"  # 503: the event bus did not take the event
    INTERNAL = "internal"  # 500: an unexpected error (logged with its traceback)
    # publishing an event (CloudEvents over HTTP)
    BATCH = "batch"  # 415: batched CloudEvents
    NOT_JSON = "not_json"  # 415: a content type that is not JSON; 400: a body that is not
    NOT_OBJECT = "not_object"  # 400: the JSON is not an object
    DATA_BASE64 = "data_base64"  # 400: a structured CloudEvent with data_base64
    MISSING_ATTRIBUTE = "missing_attribute"  # 400: a required CloudEvents attribute is missing
    BAD_ATTRIBUTE = "bad_attribute"  # 400: specversion or time is wrong
    TYPE_MISMATCH = "type_mismatch"  # 400: ce type is not the URL's event type
    # webhooks (Standard Webhooks)
    UNKNOWN_HOOK = "unknown_hook"  # 404: no hook of that name is declared
    MISSING_SIGNATURE = "missing_signature"  # 401: a webhook-* header is missing
    BAD_TIMESTAMP = "bad_timestamp"  # 401: webhook-timestamp is not Unix seconds
    STALE_TIMESTAMP = "stale_timestamp"  # 401: webhook-timestamp is outside the tolerance
    BAD_SIGNATURE = "bad_signature"  # 401: no signature matches the body
    # models and scoring (Open Inference Protocol)
    UNKNOWN_MODEL = "unknown_model"  # 404: no model of that name
    UNKNOWN_VERSION = "unknown_version"  # 404: the model has no such version
    NO_PREVIOUS = "no_previous"  # 409: nothing to roll back to
    ALREADY_PRODUCTION = "already_production"  # 409: promoting the production version
    NOT_READY = "not_ready"  # 503: no production version, or it cannot be loaded
    CORRUPT = "corrupt"  # 503: an artifact does not match its sha256
    BAD_HEADER = "bad_header"  # 400: Inference-Header-Content-Length is wrong
    BAD_INPUTS = "bad_inputs"  # 400: inputs repeated, or not the ones the model takes
    BAD_OUTPUTS = "bad_outputs"  # 400: an output the model does not answer
    BAD_DATATYPE = "bad_datatype"  # 400: a datatype that cannot be scored
    BAD_SHAPE = "bad_shape"  # 400: a shape that does not fit the data or the model
    BAD_DATA = "bad_data"  # 400: data that are not values of the datatype
    NO_DATA = "no_data"  # 400: an input without data or binary_data_size
    BAD_BINARY = "bad_binary"  # 400: binary tensor data that do not fit
    # domain errors reaching the app (DOMAIN_STATUSES)
    BAD_EVENT = "bad_event"  # 400: DecodeError
    BAD_KEY = "bad_key"  # 400: InvalidKeyError
    NOT_FOUND = "not_found"  # 404: ObjectNotFoundError
    UNAVAILABLE = "unavailable"  # 503: RetryableError, try again
    MISCONFIGURED = "misconfigured"  # 500: ConfigError, the server's settings are wrong


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
    """Raised by an endpoint to answer ``status`` with a :class:`Problem`; 5xx are retryable."""

    def __init__(
        self,
        status: int,
        error: str,
        reason: Reason,
        *,
        fields: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(error)
        self.status = status
        self.problem = Problem(error=error, reason=reason, fields=fields or [])
        self.headers = headers
        self.retryable = status >= 500


def bad_request(
    error: str, reason: Reason, *, fields: list[FieldProblem] | None = None
) -> ProblemError:
    """400: the request is malformed."""
    return ProblemError(400, error, reason, fields=fields)


def unauthorized(
    error: str, reason: Reason, *, headers: dict[str, str] | None = None
) -> ProblemError:
    """401: a token or signature is missing or wrong."""
    return ProblemError(401, error, reason, headers=headers)


def not_found(error: str, reason: Reason) -> ProblemError:
    """404: no such model, version or hook."""
    return ProblemError(404, error, reason)


def conflict(error: str, reason: Reason) -> ProblemError:
    """409: the request does not fit the current state."""
    return ProblemError(409, error, reason)


def too_large(error: str) -> ProblemError:
    """413: the body is over the limit."""
    return ProblemError(413, error, Reason.TOO_LARGE)


def unsupported_media_type(error: str, reason: Reason) -> ProblemError:
    """415: a content type the endpoint does not take."""
    return ProblemError(415, error, reason)


def invalid(what: str, exc: PydanticValidationError) -> ProblemError:
    """422: every wrong field of ``what``, named."""
    fields = field_problems(exc)
    named = "; ".join(f"{f.field or '(body)'}: {f.message}" for f in fields)
    return ProblemError(422, f"{what} is invalid: {named}", Reason.INVALID, fields=fields)


def unavailable(error: str, reason: Reason) -> ProblemError:
    """503: not now; the same request may succeed later."""
    return ProblemError(503, error, reason)


def field_problems(exc: PydanticValidationError | RequestValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(field=".".join(str(p) for p in err["loc"]), message=err["msg"])
        for err in exc.errors()
    ]


DOMAIN_STATUSES: dict[type[DriftlineError], tuple[int, Reason]] = {
    ValidationError: (422, Reason.INVALID),
    SchemaError: (422, Reason.INVALID),
    DecodeError: (400, Reason.BAD_EVENT),
    InvalidKeyError: (400, Reason.BAD_KEY),
    ObjectNotFoundError: (404, Reason.NOT_FOUND),
    RetryableError: (503, Reason.UNAVAILABLE),
    BusError: (503, Reason.BUS_UNAVAILABLE),
    ConfigError: (500, Reason.MISCONFIGURED),
    UnknownModelError: (404, Reason.UNKNOWN_MODEL),
    UnknownVersionError: (404, Reason.UNKNOWN_VERSION),
    NotServingError: (503, Reason.NOT_READY),
    CorruptModelError: (503, Reason.CORRUPT),
}
"""The status and reason answering each domain error, looked up by its closest class here;
the exception handlers answer these, and no other, domain errors."""


def problem_for(exc: DriftlineError, error: str | None = None) -> ProblemError:
    """``exc`` as :data:`DOMAIN_STATUSES` answers it; ``error`` defaults to its message.

    Raises ``LookupError`` for an error no entry covers.
    """
    if isinstance(exc, ProblemError):
        return exc
    mapped = next((c for c in type(exc).__mro__ if c in DOMAIN_STATUSES), None)
    if mapped is None:
        raise LookupError(f"no HTTP status for {type(exc).__name__}; add it to DOMAIN_STATUSES")
    status, reason = DOMAIN_STATUSES[mapped]
    return ProblemError(status, str(exc) if error is None else error, reason)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring that an operation may answer these statuses with a Problem."""
    return {status: {"model": Problem} for status in statuses}


def install_error_handlers(app: Any) -> None:
    """Answer every error, FastAPI's own and mapped domain errors included, with a :class:`Problem`."""

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DriftlineError)
        answer = problem_for(exc)
        if answer is not exc and answer.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse(answer.problem.model_dump(), answer.status, headers=answer.headers)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = field_problems(exc)
        named = "; ".join(f"{f.field}: {f.message}" for f in fields)
        body = Problem(error=f"request is invalid: {named}", reason=Reason.INVALID, fields=fields)
        return JSONResponse(body.model_dump(), 422)

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = Problem(error=str(exc.detail), reason=Reason.HTTP)
        return JSONResponse(body.model_dump(), exc.status_code, headers=exc.headers)

    for handled in (ProblemError, *DOMAIN_STATUSES):
        app.add_exception_handler(handled, problem)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
