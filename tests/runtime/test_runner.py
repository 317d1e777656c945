"""The runner on both buses: outputs, ids, retries, DLQ, duplicates, slow handlers, restart.

The poison-message tests run on the confluent-kafka bus too (``every_bus``)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from driftline.events import Codec, ScoreCompleted, ScoreRequested
from driftline.runtime.bus.base import Bus
from driftline.runtime.context import Context
from driftline.runtime.function import RetryPolicy, function, spec_of
from driftline.runtime.runner import ID_NAMESPACE, Runner, output_id
from tests.conftest import wait_for
from tests.runtime.runner_helpers import echo, publish, read_all, read_keyed, request

codec = Codec()
_DRAINED: set[str] = set()


@pytest.fixture(autouse=True)
def _echo_group_at_the_end(request: pytest.FixtureRequest) -> None:
    """On the session's shared broker other modules (the fault tests) leave score.requested
    records that no "echo" group has read; these tests count what their echo runner
    consumes, so before the first of them on Kafka the group is moved to the topic's end."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    name = "bus" if "bus" in params else "every_bus"
    if params.get(name) not in ("kafka", "confluent") or "kafka" in _DRAINED:
        return
    _drain(request.getfixturevalue(name), spec_of(echo).group, "score.requested")
    _DRAINED.add("kafka")  # one broker for both clients: one group to move


def _drain(bus: Bus, group: str, topic: str, timeout_s: float = 60.0) -> None:
    consumer = bus.consumer(group, [topic])
    deadline, quiet = time.monotonic() + timeout_s, 0
    try:
        while time.monotonic() < deadline and quiet < 3:
            records = consumer.poll(0.5, 2000)
            if not consumer.assignment():
                continue  # still joining
            if not records:
                quiet += 1
                continue
            quiet, offsets = 0, {}
            for r in records:
                offsets[r.tp] = max(offsets.get(r.tp, 0), r.offset + 1)
            consumer.commit(offsets)
    finally:
        consumer.close()


def _model() -> str:
    return f"m-{uuid.uuid4().hex[:6]}"


def _run(bus: Bus, *functions, **opts) -> Runner:  # type: ignore[no-untyped-def]
    runner = Runner(bus, list(functions), poll_timeout_s=0.2, **opts)
    runner.start()
    return runner


def test_outputs_carry_ids_derived_from_the_input(bus: Bus) -> None:
    model = _model()
    runner = _run(bus, echo)
    ids = publish(bus, [request(f"r{i}", model) for i in range(20)])
    out = read_keyed(bus, "score.completed", model.encode(), 20, timeout_s=60)
    runner.stop()
    envelopes = [codec.decode(r.value, r.headers) for r in out]
    assert sorted(e.id for e in envelopes) == sorted(output_id(i, "echo", 0) for i in ids)
    assert all(e.data.predictions == [3.0] for e in envelopes)
    assert all(e.source == "driftline/echo" for e in envelopes)


def test_output_ids_are_rfc4122_name_based_uuids() -> None:
    # ids made before output_id was written out by hand must still match (redelivery)
    for input_id in ("r1", "0b0e2f7c-1111-4444-8888-123456789abc", "é/ü", ""):
        for position in (0, 1, 17):
            expected = uuid.uuid5(ID_NAMESPACE, f"{input_id}/echo/{position}")
            assert output_id(input_id, "echo", position) == str(expected)
    assert uuid.UUID(output_id("r1", "echo", 0)).version == 5


def test_poison_goes_to_the_dlq_and_the_rest_flows(every_bus: Bus) -> None:
    bus, model = every_bus, _model()  # poison is a fault test: on the confluent bus too
    runner = _run(bus, echo)
    events = [request(f"ok{i}", model) for i in range(5)] + [request("poison-1", model)]
    events += [request(f"ok{i}", model) for i in range(5, 10)]
    publish(bus, events)
    done = read_keyed(bus, "score.completed", model.encode(), 10, timeout_s=60)
    dlq = read_keyed(bus, "score.requested.dlq", model.encode(), 1, timeout_s=60)
    runner.stop()
    assert len(dlq) == 1
    assert dlq[0].header("dlq_error_type") == b"PermanentError"
    assert b"cannot score poison-1" in (dlq[0].header("dlq_error") or b"")
    assert dlq[0].header("dlq_attempts") == b"1"
    assert codec.decode(dlq[0].value, dlq[0].headers).data.request_id == "poison-1"
    assert len(done) == 10


def test_retryable_errors_are_retried_then_succeed(bus: Bus) -> None:
    runner = _run(bus, echo)
    publish(bus, [request("flaky-1", _model())])
    wait_for(lambda: runner.stats["echo"].succeeded >= 1)
    runner.stop()
    assert runner.stats["echo"].retried == 2
    assert runner.stats["echo"].dead_lettered == 0


def test_undecodable_bytes_are_dead_lettered_with_where_and_why(every_bus: Bus) -> None:
    bus = every_bus  # a poison message too: on the confluent bus as well
    runner = _run(bus, echo)
    producer = bus.producer()
    producer.send(
        "score.requested",
        b"garbage",
        key=b"junk",
        headers=[("ce_id", b"1"), ("ce_type", b"score.requested")],
    )
    producer.flush()
    producer.close()
    wait_for(lambda: runner.stats["echo"].dead_lettered >= 1)
    runner.stop()
    dlq = read_keyed(bus, "score.requested.dlq", b"junk", 1)
    assert dlq and dlq[0].value == b"garbage"
    assert dlq[0].header("dlq_error_type") == b"DecodeError"
    assert b"score.requested[" in (dlq[0].header("dlq_error") or b"")


def test_a_redelivered_input_is_dropped_as_a_duplicate(bus: Bus) -> None:
    model = _model()
    runner = _run(bus, echo)
    publish(bus, [request("dup", model), request("dup", model)], ids=["same-id", "same-id"])
    wait_for(lambda: runner.stats["echo"].duplicates >= 1)
    runner.stop()
    assert runner.stats["echo"].succeeded == 1
    assert len(read_keyed(bus, "score.completed", model.encode(), 1)) == 1


_release = threading.Event()


@function(subscribes="score.requested", emits="score.completed", timeout_s=30)
def slow(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
    _release.wait(10)
    return ScoreCompleted(
        model=event.model, request_id=event.request_id, version=1, predictions=[0.0]
    )


def test_a_slow_handler_pauses_its_partitions_and_keeps_polling(embedded_bus: Bus) -> None:
    _release.clear()
    runner = _run(embedded_bus, slow, pause_after_s=0.2)
    worker = runner.workers["slow"]
    publish(embedded_bus, [request("slow-1")])
    wait_for(lambda: worker._consumer is not None and worker._consumer._paused)  # type: ignore[attr-defined]
    publish(embedded_bus, [request("slow-2")])
    time.sleep(0.5)
    assert runner.stats["slow"].consumed == 1, "paused partitions deliver nothing"
    _release.set()
    wait_for(lambda: runner.stats["slow"].succeeded == 2)
    runner.stop()


@function(
    subscribes="score.requested",
    emits="score.completed",
    timeout_s=0.5,
    retry=RetryPolicy(attempts=1),
)
def stuck(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
    if event.request_id == "stuck":
        time.sleep(3)
    return ScoreCompleted(
        model=event.model, request_id=event.request_id, version=1, predictions=[0.0]
    )


def test_a_handler_past_its_timeout_is_dead_lettered_and_the_rest_flows(embedded_bus: Bus) -> None:
    runner = _run(embedded_bus, stuck, pause_after_s=0.1)
    publish(embedded_bus, [request("stuck"), request("next-1"), request("next-2")])
    wait_for(
        lambda: runner.stats["stuck"].succeeded >= 2 and runner.stats["stuck"].dead_lettered == 1
    )
    runner.stop()
    dlq = read_all(embedded_bus, "score.requested.dlq", 1)
    assert [r.header("dlq_error_type") for r in dlq] == [b"HandlerTimeoutError"]


def test_restart_resumes_after_the_last_commit(bus: Bus) -> None:
    model = _model()
    runner = _run(bus, echo)
    publish(bus, [request(f"a{i}", model) for i in range(5)])
    wait_for(lambda: runner.stats["echo"].succeeded >= 5)
    runner.stop()
    again = _run(bus, echo)
    publish(bus, [request(f"b{i}", model) for i in range(5)])
    wait_for(lambda: again.stats["echo"].succeeded >= 5)
    time.sleep(0.5)
    again.stop()
    assert again.stats["echo"].consumed == 5, "committed work is not redone"
    out = read_keyed(bus, "score.completed", model.encode(), 10)
    assert len(out) == 10


def test_a_new_worker_knows_what_its_group_committed_before_it(bus: Bus) -> None:
    """Lag is measured against ``worker.committed`` (replay's settle): a worker that joins a
    group with history must not look behind on partitions it has nothing new to read on."""
    model = _model()
    first = _run(bus, echo)
    publish(bus, [request(f"c{i}", model) for i in range(5)])
    wait_for(lambda: first.stats["echo"].succeeded >= 5)
    first.stop()
    before = dict(first.workers["echo"].committed)
    assert before
    again = _run(bus, echo)
    try:
        wait_for(
            lambda: all(
                again.workers["echo"].committed.get(tp, -1) >= offset
                for tp, offset in before.items()
            ),
            timeout_s=30,
        )
        assert again.stats["echo"].consumed == 0
    finally:
        again.stop()


_TALLIES: dict[str, set[str]] = {}
"""Saved by ``tally``'s checkpoint, per test key (its state is rebuilt after a reconnect)."""
_DISK_FULL: set[str] = set()


def _tally(ctx: Context) -> dict[str, object]:
    return {"key": ctx.settings["key"], "handled": set()}


def _save_tally(ctx: Context) -> None:
    key = ctx.state["key"]
    if key not in _DISK_FULL:  # the first checkpoint of each test fails
        _DISK_FULL.add(key)
        raise OSError("disk full")
    _TALLIES.setdefault(key, set()).update(ctx.state["handled"])


@function(
    subscribes="score.requested", emits="score.completed", init=_tally, checkpoint=_save_tally
)
def tally(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
    ctx.state["handled"].add(event.request_id)
    return ScoreCompleted(
        model=event.model, request_id=event.request_id, version=1, predictions=[1.0]
    )


def test_a_failed_checkpoint_commits_nothing_and_the_batch_comes_again(embedded_bus: Bus) -> None:
    model, key = _model(), uuid.uuid4().hex
    ids = publish(embedded_bus, [request(f"t{i}", model) for i in range(10)])
    runner = _run(embedded_bus, tally, settings={"key": key})
    try:
        wait_for(lambda: _TALLIES.get(key, set()) >= {f"t{i}" for i in range(10)})
    finally:
        runner.stop()
    assert key in _DISK_FULL
    assert runner.stats["tally"].consumed > 10, "the batch whose checkpoint failed was read again"
    out = [
        codec.decode(r.value, r.headers)
        for r in read_all(embedded_bus, "score.completed", 10**6, 1.0)
        if r.key == model.encode()
    ]
    assert {e.id for e in out} == {output_id(i, "tally", 0) for i in ids}, (
        "again, under the same ids"
    )


_SAVED: dict[str, dict[str, int]] = {}
"""A stand-in for the object store of ``counting``: per test key, the saved count of each model."""


def _counts(ctx: Context) -> dict[str, object]:
    return {"key": ctx.settings["key"], "counts": {}, "changed": set()}


def _save_counts(ctx: Context) -> None:
    saved = _SAVED.setdefault(ctx.state["key"], {})
    for model in ctx.state["changed"]:
        saved[model] = ctx.state["counts"][model]
    ctx.state["changed"].clear()


@function(
    subscribes="score.requested", emits="score.completed", init=_counts, checkpoint=_save_counts
)
def counting(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
    """Counts requests per model, loaded on first use and saved per model, like drift-check."""
    counts = ctx.state["counts"]
    if event.model not in counts:
        counts[event.model] = _SAVED.get(ctx.state["key"], {}).get(event.model, 0)
    counts[event.model] += 1
    ctx.state["changed"].add(event.model)
    return ScoreCompleted(
        model=event.model, request_id=event.request_id, version=1, predictions=[1.0]
    )


def test_checkpointed_state_follows_its_partitions_through_rebalances(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A worker that lost partitions (another one took them, moved their state on and saved
    it) reloads the checkpoint when they come back, instead of saving its stale copy."""
    from driftline.runtime.bus.embedded import EmbeddedBus

    bus = EmbeddedBus(tmp_path / "bus.db", partitions=3)
    bus.create_topics(["score.requested", "score.completed", "score.requested.dlq"])
    key = uuid.uuid4().hex
    models = [f"m{i}" for i in range(6)]  # spread over the three partitions

    def send(n: int) -> None:
        publish(
            bus, [request(f"{key}-{len(sent)}-{i}", model) for i in range(n) for model in models]
        )
        sent.append(n)

    def total() -> int:
        return sum(sent) * len(models)

    sent: list[int] = []
    first = _run(bus, counting, settings={"key": key})
    send(5)
    wait_for(lambda: first.stats["counting"].succeeded >= total())
    second = _run(bus, counting, settings={"key": key})  # takes some partitions (and their models)
    wait_for(
        lambda: (
            second.workers["counting"].assigned
            and first.workers["counting"].assigned
            and not (first.workers["counting"].assigned & second.workers["counting"].assigned)
        )
    )
    send(5)
    wait_for(
        lambda: first.stats["counting"].succeeded + second.stats["counting"].succeeded >= total()
    )
    second.stop()  # its partitions, with the counts it saved, go back to the first worker
    send(5)
    wait_for(
        lambda: first.stats["counting"].succeeded + second.stats["counting"].succeeded >= total()
    )
    first.stop()
    bus.close()
    assert _SAVED[key] == {model: 15 for model in models}, (
        "no model's count went back to a stale copy"
    )
