"""The public face is small and tested: each package's ``__all__`` is sorted, real and whole."""

from __future__ import annotations

from types import ModuleType

import pytest

import driftline.events
import driftline.runtime
from driftline.events import ScoreRequested
from driftline.runtime import Context, PermanentError, RetryPolicy, ValidationError, function

PACKAGES = [driftline.events, driftline.runtime]


def isort_key(name: str) -> tuple[int, str]:
    """ruff's isort-style order (RUF022): CONSTANTS, then Classes, then the rest, each A-Z."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name


def public_names(package: ModuleType) -> set[str]:
    """Names the package defines or imports for users: not private, not modules, not features."""
    return {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and type(value).__module__ != "__future__"  # from __future__ import annotations
    }


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_is_sorted(package: ModuleType) -> None:
    assert package.__all__ == sorted(package.__all__, key=isort_key)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_name_in_all_exists(package: ModuleType) -> None:
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_is_exactly_the_public_names(package: ModuleType) -> None:
    assert public_names(package) == set(package.__all__)


def test_a_function_is_written_from_the_front_doors_alone() -> None:
    @function(subscribes="score.requested", retry=RetryPolicy(attempts=1))
    def check(event: ScoreRequested, ctx: Context) -> None:
        raise ValidationError(f"{event.model}: no")

    assert check.spec.input_types == (ScoreRequested,)  # type: ignore[attr-defined]
    with pytest.raises(PermanentError, match="m: no"):
        check(
            ScoreRequested(model="m", request_id="r", columns=["x"], rows=[[1.0]]), Context("check")
        )


def test_the_contract_errors_are_the_runtime_errors() -> None:
    assert driftline.events.DecodeError is driftline.runtime.DecodeError
    assert issubclass(driftline.events.SchemaError, driftline.runtime.DriftlineError)
