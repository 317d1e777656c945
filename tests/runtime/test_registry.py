"""The registry's follower starts from a snapshot in the store and reads only the tail."""

from __future__ import annotations

from pathlib import Path

from driftline.events import Codec, Event, ModelDeployed, ModelRegistered, ModelRejected
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.registry import KEEP_HISTORY, SNAPSHOT_KEY, RegistryFollower
from driftline.runtime.store import LocalStore

codec = Codec()


def _history(model: str, versions: int, flips: int) -> list[Event]:
    """``versions`` registered versions, then ``flips`` deploys back and forth and a few
    rejections: a registry whose history is much longer than its state."""
    out: list[Event] = []
    for v in range(1, versions + 1):
        out.append(
            ModelRegistered(
                model=model,
                version=v,
                run_id=f"{model}-run-{v}",
                artifact_key=f"models/{model}/{v}.onnx",
                sha256="00" * 32,
                reference_key=f"models/{model}/{v}.parquet",
                metrics={"mae": 1.0 + v},
            )
        )
    for i in range(flips):
        v = 1 + i % versions
        out.append(
            ModelDeployed(
                model=model,
                version=v,
                artifact_key=f"models/{model}/{v}.onnx",
                sha256="00" * 32,
                previous_version=None,
            )  # fmt: skip
        )
        if i % 10 == 0:
            out.append(ModelRejected(model=model, run_id=f"r{i}", reason="worse"))
    return out


def _publish(bus: EmbeddedBus, events: list[Event]) -> None:
    bus.create_topics([e.TYPE for e in events])
    producer = bus.producer()
    for event in events:
        value, headers = codec.encode(event)
        producer.send(event.TYPE, value, key=event.model.encode(), headers=headers)
    producer.flush()
    producer.close()


def _state(follower: RegistryFollower) -> dict:  # type: ignore[type-arg]
    return {m: follower.registry.entry(m).as_dict() for m in follower.registry.models()}  # type: ignore[union-attr]


def test_a_follower_starts_from_the_snapshot_and_reads_only_the_tail(tmp_path: Path) -> None:
    bus, store = EmbeddedBus(tmp_path / "bus.db", partitions=2), LocalStore(tmp_path / "store")
    _publish(bus, _history("a", 5, 600) + _history("b", 3, 300))
    first = RegistryFollower(bus, store=store, snapshot_every=500)
    first.start()
    first.stop()
    assert store.exists(SNAPSHOT_KEY) and not first.from_snapshot
    assert len(first.registry.entry("a").deployments) == KEEP_HISTORY  # type: ignore[union-attr]

    _publish(bus, _history("a", 6, 7)[5:] + _history("c", 1, 1))  # v6 of a, deploys, model c
    second = RegistryFollower(bus, store=store)
    second.start()
    second.stop()
    assert second.from_snapshot
    assert second.applied_since_snapshot == 9 + 3, "only what came after the snapshot"
    scratch = RegistryFollower(bus)  # no store: everything from the start
    scratch.start()
    scratch.stop()
    assert _state(second) == _state(scratch)
    assert second.registry.production("a").version == 1  # type: ignore[union-attr]
    assert second.registry.version("a", 6) is not None and second.registry.models() == [
        "a",
        "b",
        "c",
    ]
    bus.close()


def test_a_snapshot_of_another_bus_is_not_trusted(tmp_path: Path) -> None:
    """The store outlived its bus (a broker reset, or another cluster): the event before a
    saved offset is not the one the snapshot applied, so the follower reads from the start."""
    store = LocalStore(tmp_path / "store")
    old = EmbeddedBus(tmp_path / "old.db")
    _publish(old, _history("a", 4, 50))
    follower = RegistryFollower(old, store=store, snapshot_every=10)
    follower.start()
    follower.stop()
    old.close()
    new = EmbeddedBus(tmp_path / "new.db")
    _publish(new, _history("z", 2, 60))
    again = RegistryFollower(new, store=store)
    again.start()
    again.stop()
    assert not again.from_snapshot and again.registry.models() == ["z"]
    new.close()
    short = EmbeddedBus(tmp_path / "short.db")  # a bus with fewer events than the snapshot
    _publish(short, _history("y", 1, 2))
    third = RegistryFollower(short, store=store)
    third.start()
    third.stop()
    assert not third.from_snapshot and third.registry.models() == ["y"]
    short.close()
