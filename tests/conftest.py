"""Fixtures shared by every tier. Real-service fixtures live in tests/fixtures/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from driftline.runtime.bus.base import Consumer, Record
from driftline.runtime.bus.embedded import EmbeddedBus

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.s3"]


@pytest.fixture
def embedded_bus(tmp_path: Path) -> Iterator[EmbeddedBus]:
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=3)
    yield bus
    bus.close()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The same test on the embedded bus and on a real Kafka-protocol broker."""
    return request.getfixturevalue("embedded_bus" if request.param == "embedded" else "kafka_bus")


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("confluent", marks=pytest.mark.kafka),
    ]
)
def every_bus(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The same test on the embedded bus and on both Kafka clients (kafka-python and
    confluent-kafka), on a real broker: for the Bus contract itself."""
    return request.getfixturevalue(f"{request.param}_bus")


def wait_for(
    predicate: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.05
) -> None:
    """Poll until ``predicate()`` is truthy; fail the test with its last value otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s: {predicate()!r}")


def drain(consumer: Consumer, want: int, timeout_s: float = 20.0) -> list[Record]:
    """Poll until ``want`` records arrived or the time is up; returns what arrived."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (``--dist loadgroup``). Every test on the
    session's broker or S3 server goes to one of them, run one at a time as before: they share
    topics and consumer groups, and the fault tests stop brokers. The rest spread over both."""
    services = {"kafka_bootstrap", "s3_endpoint"}
    for item in items:
        marked = item.get_closest_marker("kafka") or item.get_closest_marker("s3")
        if marked or services & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("services"))
