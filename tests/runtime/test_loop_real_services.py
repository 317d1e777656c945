"""The loop end to end on real services: Kafka (Tansu) and S3 (moto), both on 127.0.0.1.

An object uploaded with the minio client triggers ingest through the bucket watcher; the
loop trains, registers and deploys v1; a second upload of newer data gives a candidate that
wins the gate and is redeployed; scoring then uses it.
"""

from __future__ import annotations

import io
import time
import uuid

import pytest
from minio import Minio

from driftline.events import Codec, Matrix, ScoreRequested
from driftline.functions import FUNCTIONS
from driftline.functions.ml.layout import spec_key
from driftline.runtime.registry import RegistryFollower
from driftline.runtime.runner import Runner
from driftline.runtime.store import open_store
from driftline.runtime.triggers.uploads import UploadWatcher
from tests.conftest import wait_for
from tests.fixtures.kafka import make_test_bus
from tests.functions.synthetic import SPEC_TOML, frame
from tests.runtime.runner_helpers import read_all

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.slow]


def _upload(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="text/csv")


def test_upload_to_redeploy_on_kafka_and_s3(kafka_bootstrap, s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    bucket = f"loop-{uuid.uuid4().hex[:8]}"
    store = open_store(s3_endpoint.url(bucket))  # creates the bucket
    client = Minio(
        s3_endpoint.endpoint, s3_endpoint.access_key, s3_endpoint.secret_key, secure=False
    )
    model = "synth"
    bus = make_test_bus(kafka_bootstrap)
    follower = RegistryFollower(bus)
    registry = follower.start()
    runner = Runner(bus, FUNCTIONS, store=store, registry=registry, poll_timeout_s=0.2)
    runner.start()
    watcher = UploadWatcher(store, bus, name=f"test-{bucket}")
    try:
        store.put(spec_key(model), SPEC_TOML.encode())
        _upload(
            client,
            bucket,
            f"uploads/{model}/first.csv",
            frame(24 * 14, seed=5).to_csv(index=False).encode(),
        )
        assert watcher.poll_once() == 1
        wait_for(lambda: registry.production(model) is not None, timeout_s=120, interval_s=0.5)
        assert registry.production(model).version == 1

        newer = frame(24 * 14, seed=6, start="2024-01-15", shift=1.5, coef=6.0)
        _upload(client, bucket, f"uploads/{model}/second.csv", newer.to_csv(index=False).encode())
        assert watcher.poll_once() == 1
        assert watcher.poll_once() == 0, "the checkpoint keeps an upload from being published twice"
        wait_for(
            lambda: (
                registry.production(model) is not None and registry.production(model).version == 2
            ),
            timeout_s=120,
            interval_s=0.5,
        )
        v2 = registry.production(model)
        assert v2.trigger == "data" and v2.parent_version == 1
        assert store.exists(v2.artifact_key)

        producer = bus.producer()
        request_id = f"req-{uuid.uuid4().hex[:6]}"
        value, headers = Codec().encode(
            ScoreRequested(
                model=model,
                request_id=request_id,
                columns=["x1", "x2", "x3"],
                rows=Matrix([[1.5, 0.0, 0.5]]),
            )
        )
        producer.send("score.requested", value, key=model.encode(), headers=headers)
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 60
        scored = []
        while not scored and time.monotonic() < deadline:
            records = read_all(bus, "score.completed", 1, timeout_s=5)
            scored = [
                e
                for e in (Codec().decode(r.value, r.headers).data for r in records)
                if e.request_id == request_id
            ]
        assert scored and scored[0].version == 2
        assert abs(scored[0].predictions[0] - (6.0 * 1.5 + 0.5 + 10)) < 2.0, (
            "the new relation is served"
        )
    finally:
        watcher.stop()
        runner.stop()
        follower.stop()
        bus.close()
        store.close()
