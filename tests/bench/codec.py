"""Per-event cost of the codec (no Kafka): decode and encode of a ~1 KB event.

    .venv/bin/python -m tests.bench.codec [--events 20000]

Encodes N ``score.requested`` events of about 1 KB (the shape runner_overhead uses),
then times ``Codec.decode`` over them and ``Codec.encode`` of the no-op function's
output. The last line is JSON: {"decode_us", "encode_us", "value_bytes"} (best of 3
rounds, µs per event).
"""

from __future__ import annotations

import argparse
import json
import time

from driftline.events import Codec
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

    decode_s = _best(decode)
    encode_s = _best(encode)
    result = {
        "events": n,
        "value_bytes": len(records[0][0]),
        "decode_us": round(decode_s / n * 1e6, 2),
        "encode_us": round(encode_s / n * 1e6, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
