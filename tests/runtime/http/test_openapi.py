"""The gateway's OpenAPI document: valid, and true to the app (schemathesis generates the calls).

Every operation is called with generated requests, authorised and not: no answer may be a
5xx, and every answer's status, content type, headers and body must be the documented ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from driftline.functions.ml.serving import ModelServer
from driftline.runtime.http.app import create_app
from driftline.runtime.http.tail import TAIL_PATH
from driftline.runtime.platform import Platform
from driftline.runtime.settings import HookSettings, Settings
from tests.runtime.http.helpers import new_home, trained

TOKEN = "t0ken"
EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    model = trained(tmp_path_factory)
    home = new_home(model, tmp_path_factory.mktemp("openapi") / "home", model.v1 + model.v2)
    hooks = {"orders": HookSettings(event="dataset.uploaded", secret="whsec_" + "QUJD" * 8)}
    platform = Platform.open(Settings(home=home, api_token=TOKEN, hooks=hooks))
    try:
        application = create_app(platform, ModelServer(platform.store, platform.registry))
        with TestClient(application):  # runs the lifespan: sessions loaded, followers running
            yield application
    finally:
        platform.close()


def test_the_document_is_valid_openapi(app: FastAPI) -> None:
    doc = app.openapi()
    validate(doc)
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"InferenceRequest", "S3Notification", "ScoreRequested", "Problem"} <= set(
        doc["components"]["schemas"]
    )


@pytest.mark.slow
def test_generated_calls_get_documented_answers(app: FastAPI) -> None:
    # schemathesis' own pytest loaders do not run on pytest 9.2 (they set a private node
    # attribute), so each operation's strategy is run with hypothesis directly
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 26
    # the tail streams until max events or seconds pass or the client leaves: a generated
    # call without a bound would never end (tests/runtime/test_tail.py calls it bounded)
    operations = [op for op in operations if op.path != TAIL_PATH]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                case.call_and_validate(
                    headers=case.headers or {"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS
                )

            try:
                call()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                exc.add_note(f"operation: {operation.label} ({mode.value})")
                raise
