"""Problems: the error body's shape, and the one map from domain errors to statuses."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from driftline.runtime.errors import (
    BusError,
    ConfigError,
    DecodeError,
    DriftlineError,
    HandlerError,
    InvalidKeyError,
    ObjectNotFoundError,
    PermanentError,
    RetryableError,
    SchemaError,
    ValidationError,
)
from driftline.runtime.http.problems import (
    DOMAIN_STATUSES,
    FieldProblem,
    ProblemError,
    Reason,
    bad_request,
    install_error_handlers,
    problem_for,
    unauthorized,
    unavailable,
)

RAISED: dict[str, Exception] = {
    "validation": ValidationError("rows.0 has 2 values, the model takes 3"),
    "schema": SchemaError("score.requested has no field 'rows'"),
    "decode": DecodeError("no C3 01 marker", topic="t", partition=0, offset=7),
    "key": InvalidKeyError("key '../x' leaves the store"),
    "missing": ObjectNotFoundError("models/m/v1.onnx", "bucket b"),
    "retryable": RetryableError("the store hiccuped"),
    "bus": BusError("broker unreachable"),
    "config": ConfigError("store_url is not a URL"),
    "problem": bad_request(
        "input 'x' is given twice",
        Reason.BAD_INPUTS,
        fields=[FieldProblem(field="inputs.1", message="repeated")],
    ),
    "token": unauthorized("no token", Reason.MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"}),
    "unmapped": HandlerError("a bug"),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{what}")
    def raise_(what: str) -> None:
        raise RAISED[what]

    @app.get("/count")
    def count(n: int) -> int:
        return n

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("what", "status", "reason"),
    [
        ("validation", 422, "invalid"),
        ("schema", 422, "invalid"),
        ("decode", 400, "bad_event"),
        ("key", 400, "bad_key"),
        ("missing", 404, "not_found"),
        ("retryable", 503, "unavailable"),
        ("bus", 503, "bus_unavailable"),
        ("config", 500, "misconfigured"),
    ],
)
def test_a_domain_error_is_answered_with_its_status(
    client: TestClient, what: str, status: int, reason: str
) -> None:
    answer = client.get(f"/raise/{what}")
    assert answer.status_code == status, answer.text
    assert answer.json() == {"error": str(RAISED[what]), "reason": reason, "fields": []}


def test_the_closest_mapped_class_wins() -> None:
    assert problem_for(ValidationError("x")).status == 422  # not PermanentError's, not the root's
    assert problem_for(ObjectNotFoundError("k")).status == 404  # a KeyError too
    assert problem_for(BusError("b"), "the event bus did not take it").problem.error == (
        "the event bus did not take it"
    )


def test_an_unmapped_domain_error_stays_a_server_error(client: TestClient) -> None:
    answer = client.get("/raise/unmapped")
    assert answer.status_code == 500 and answer.text == "Internal Server Error"
    with pytest.raises(LookupError, match="DOMAIN_STATUSES"):
        problem_for(PermanentError("p"))


def test_every_mapped_class_is_a_domain_error() -> None:
    assert all(issubclass(c, DriftlineError) for c in DOMAIN_STATUSES)
    assert all(isinstance(r, Reason) for _, r in DOMAIN_STATUSES.values())


def test_a_problem_error_answers_its_body_and_headers(client: TestClient) -> None:
    answer = client.get("/raise/problem")
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "input 'x' is given twice",
        "reason": "bad_inputs",
        "fields": [{"field": "inputs.1", "message": "repeated"}],
    }
    token = client.get("/raise/token")
    assert token.status_code == 401 and token.headers["www-authenticate"] == "Bearer"
    assert token.json()["reason"] == "missing_token"


def test_fastapis_own_errors_are_problems(client: TestClient) -> None:
    invalid = client.get("/count", params={"n": "many"})
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["reason"] == "invalid" and body["error"].startswith("request is invalid: query.n")
    assert body["fields"][0]["field"] == "query.n"
    unknown = client.get("/nowhere")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Not Found", "reason": "http", "fields": []}


def test_a_problem_error_is_a_driftline_error_retryable_when_5xx() -> None:
    assert isinstance(bad_request("x", Reason.BAD_DATA), DriftlineError)
    assert not bad_request("x", Reason.BAD_DATA).retryable
    assert unavailable("x", Reason.NOT_READY).retryable
    assert ProblemError(418, "teapot", Reason.HTTP).status == 418


def test_reasons_are_plain_words() -> None:
    assert all(r.value == r.name.lower() for r in Reason)
