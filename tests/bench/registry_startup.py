"""Registry start-up as history grows: from the start of the topics vs from a snapshot.

    .venv/bin/python -m tests.bench.registry_startup                        # embedded bus
    .venv/bin/python -m tests.bench.registry_startup --bus kafka://127.0.0.1:9092

Publishes ``--events`` registry events (10 models, 20 versions each, the rest deploys back
and forth with a rejection every tenth), then times ``RegistryFollower.start()`` three
ways, each the best of ``--rounds``: with no store (every event read and applied), with a
store that holds a snapshot taken at the end (only the check event per partition is read),
and with a snapshot taken halfway (the other half is read). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from driftline.runtime.platform import open_bus
from driftline.runtime.registry import SNAPSHOT_KEY, RegistryFollower
from driftline.runtime.settings import Settings
from driftline.runtime.store import LocalStore
from tests.runtime.test_registry import _history, _publish


def _start(bus, store) -> tuple[float, RegistryFollower]:  # type: ignore[no-untyped-def]
    follower = RegistryFollower(bus, store=store, snapshot_every=10**9)
    started = time.perf_counter()
    follower.start()
    took = time.perf_counter() - started
    follower.stop()
    return took, follower


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bus", default=None, help="kafka://host:port (default: embedded)")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bus = open_bus(Settings(home=Path(tmp), bus=args.bus))
        suffix = uuid.uuid4().hex[:6]
        per_model = args.events // 10
        flips = max(0, int((per_model - 20) / 1.1))  # a rejection every tenth deploy
        events = [e for m in range(10) for e in _history(f"m{m}-{suffix}", 20, flips)]
        half = len(events) // 2
        _publish(bus, events[:half])  # type: ignore[arg-type]
        store_half = LocalStore(Path(tmp) / "half")
        _, writer = _start(bus, store_half)
        writer.save_snapshot()
        _publish(bus, events[half:])  # type: ignore[arg-type]
        store_end = LocalStore(Path(tmp) / "end")
        _, writer = _start(bus, store_end)
        writer.save_snapshot()
        rows = {}
        for label, store in (("from_start", None), ("snapshot_half", store_half),
                             ("snapshot_end", store_end)):  # fmt: skip
            runs = [_start(bus, store) for _ in range(args.rounds)]
            best, follower = min(runs, key=lambda r: r[0])
            rows[label] = {
                "seconds": round(best, 3),
                "events_read": follower.applied_since_snapshot,
                "from_snapshot": follower.from_snapshot,
            }
        size = len(store_end.get(SNAPSHOT_KEY))
        bus.close()
    print(
        json.dumps(
            {
                "bus": args.bus or "embedded",
                "events": len(events),
                "snapshot_bytes": size,
                **rows,
                "speedup_end": round(
                    rows["from_start"]["seconds"] / rows["snapshot_end"]["seconds"], 1
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
