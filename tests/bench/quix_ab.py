"""Quix Streams doing runner_overhead's A→B, for comparison with the runner:

    python tests/bench/quix_ab.py BOOTSTRAP IN_TOPIC OUT_TOPIC N

Reads N JSON ``score.requested`` values from IN_TOPIC, builds the no-op function's output
for each (as ``tests.bench.runner_overhead.noop`` does) and writes it as JSON to OUT_TOPIC,
in a new consumer group with Quix's default at-least-once guarantee. Prints one JSON line:
{"msgs_per_s"}, timed from the first record consumed to the N-th one processed.

Imports only quixstreams, which pins confluent-kafka < 2.13 and pydantic < 2.14 (the project
pins newer ones): runner_overhead runs this module with the interpreter of a separate
virtual environment that has quixstreams (``DRIFTLINE_BENCH_QUIX_PYTHON``), as a file.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any


def main(bootstrap: str, in_topic: str, out_topic: str, n: int) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500},
    )
    clock: dict[str, float] = {}

    def noop(value: dict[str, Any]) -> dict[str, Any]:
        clock.setdefault("first", time.perf_counter())
        clock["done"] = clock.get("done", 0) + 1
        if clock["done"] == n:
            clock["last"] = time.perf_counter()
            app.stop()
        return {
            "model": value["model"],
            "request_id": value["request_id"],
            "version": 1,
            "predictions": [0.0] * len(value["rows"]),
            "columns": value["columns"],
            "rows": value["rows"],
        }

    source = app.topic(in_topic, value_deserializer="json")
    sink = app.topic(out_topic, value_serializer="json")
    app.dataframe(source).apply(noop).to_topic(sink)
    app.run()
    print(json.dumps({"msgs_per_s": n / (clock["last"] - clock["first"])}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
