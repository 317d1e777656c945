"""Per-event cost of the codec and of the runner's own work (no Kafka), ~1 KB events.

    .venv/bin/python -m tests.bench.codec [--events 20000]

Encodes N ``score.requested`` events of about 1 KB (the shape runner_overhead uses),
then times ``Codec.decode`` over them, ``Codec.encode`` of the no-op function's output,
and the runner's whole work on a record between the bus's poll and its send: decode,
duplicate check, handler call (the no-op), output ids, headers and encoding, stats
(``FunctionWorker._work`` on an in-memory batch; what the bus costs is
runner_overhead's). The last line is JSON: {"decode_us", "encode_us", "runner_us",
"value_bytes"} (best of 3 rounds, µs per event).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from driftline.events import Codec
from driftline.runtime.bus.base import Record
from driftline.runtime.context import Context
from driftline.runtime.runner import FunctionWorker, _Batch
from tests.bench.runner_overhead import _event, noop


def _best(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    n = ap.parse_args().events
    codec = Codec()
    records = [codec.encode(_event(i), id=f"id-{i}") for i in range(n)]
    events = [codec.decode(v, h).data for v, h in records]
    outputs = [noop(e, None) for e in events]  # type: ignore[arg-type]

    def decode() -> None:
        for off, (v, h) in enumerate(records):
            codec.decode(v, h, topic="score.requested", partition=0, offset=off)

    def encode() -> None:
        for i, out in enumerate(outputs):
            codec.encode(out, id=f"out-{i}", traceparent=None)

    spec = noop.spec  # type: ignore[attr-defined]
    ctx = Context(function=spec.name, log=logging.getLogger("bench"))
    polled = [
        Record("score.requested", off % 3, off, b"m", v, h) for off, (v, h) in enumerate(records)
    ]

    def runner() -> None:
        worker = FunctionWorker(spec, bus=None, codec=codec, ctx=ctx)  # type: ignore[arg-type]
        worker._producer = object()  # type: ignore[assignment]  # _work only fills the outbox
        worker._work(_Batch(polled))
        assert worker.stats.succeeded == n, worker.stats

    decode_s = _best(decode)
    encode_s = _best(encode)
    runner_s = _best(runner)
    result = {
        "events": n,
        "value_bytes": len(records[0][0]),
        "decode_us": round(decode_s / n * 1e6, 2),
        "encode_us": round(encode_s / n * 1e6, 2),
        "runner_us": round(runner_s / n * 1e6, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
