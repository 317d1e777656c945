"""S3/MinIO bucket notifications → dataset.uploaded: MinIO's documented message, a record made
from a real upload to the test S3 server (moto sends no notifications itself), and the same
messages read from a Kafka topic as MinIO's Kafka target writes them."""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from fastapi.testclient import TestClient
from minio import Minio

from driftline.events import Codec, DatasetUploaded, Envelope
from driftline.functions.ml.serving import ModelServer
from driftline.runtime.bus.base import Bus
from driftline.runtime.http.app import create_app
from driftline.runtime.http.shared import Publisher
from driftline.runtime.platform import Platform
from driftline.runtime.settings import Settings
from driftline.runtime.triggers.notifications import NotificationConsumer
from driftline.runtime.triggers.uploads import UploadWatcher
from tests.fixtures.kafka import unique_name

SAMPLE = json.loads((Path(__file__).parent / "data" / "minio_put_event.json").read_text())
KEY = "uploads/bikes/2011 jan (1).csv"
ETAG = "f1671feacb8bbf7b0397c6e9364e8c92"


def _uploaded(bus: Bus, event_id: str, timeout_s: float = 0.5, want: int = 10**6) -> list[Envelope]:
    """The dataset.uploaded events with this id: all there are within ``timeout_s``, or ``want``."""
    codec, found = Codec(), []
    consumer = bus.consumer(unique_name("reader"), ["dataset.uploaded"])
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < want and time.monotonic() < deadline:
            found += [
                e
                for e in (codec.decode(r.value, r.headers) for r in consumer.poll(0.2))
                if e.id == event_id
            ]
    finally:
        consumer.close()
    return found


def _record(
    name: str, key: str, bucket: str = "datasets", etag: str = ETAG, size: int = 1
) -> dict[str, Any]:
    record = copy.deepcopy(SAMPLE["Records"][0])
    record["eventName"] = name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"].update(key=quote_plus(key), eTag=etag, size=size)
    return record


def test_minio_webhook_message(tmp_path: Path) -> None:
    platform = Platform.open(Settings(home=tmp_path))
    try:
        client = TestClient(create_app(platform, ModelServer(platform.store, platform.registry)))
        message = {
            **SAMPLE,
            "Records": [
                *SAMPLE["Records"],
                _record("s3:ObjectRemoved:Delete", "uploads/bikes/a.csv"),
                _record("s3:ObjectCreated:Put", "photos/cat.jpg"),
            ],
        }
        answer = client.post("/v1/notifications/s3", json=message)
        assert answer.status_code == 202, answer.text
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{KEY}#{ETAG}"))  # the bucket watcher's id
        assert answer.json()["published"] == [{"id": event_id, "model": "bikes", "key": KEY}]
        assert [i["reason"] for i in answer.json()["ignored"]] == [
            "s3:ObjectRemoved:Delete is not an object-created event",
            "not an upload: keys must be uploads/<model>/<file>.csv|.parquet",
        ]
        (envelope,) = _uploaded(platform.bus, event_id)
        assert envelope.data == DatasetUploaded(model="bikes", key=KEY, size=248682, etag=ETAG)
        assert envelope.source == "driftline/s3-notifications"

        broken = client.post(
            "/v1/notifications/s3", json={"Records": [{"eventName": "s3:ObjectCreated:Put"}]}
        )
        assert broken.status_code == 422 and broken.json()["fields"][0]["field"] == "Records.0.s3"
        test_event = client.post(
            "/v1/notifications/s3", json={"Service": "Amazon S3", "Event": "s3:TestEvent"}
        )
        assert test_event.status_code == 202 and test_event.json() == {
            "published": [],
            "ignored": [],
        }
    finally:
        platform.close()


@pytest.mark.s3
def test_a_record_from_a_real_upload(tmp_path: Path, s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    bucket = f"notify-{uuid.uuid4().hex[:8]}"
    platform = Platform.open(Settings(home=tmp_path, store=s3_endpoint.url(bucket)))
    try:
        key, data = "uploads/synth/feb 2024+v2.csv", b"ts,x1,x2,x3,y\n"
        minio = Minio(
            s3_endpoint.endpoint, s3_endpoint.access_key, s3_endpoint.secret_key, secure=False
        )
        minio.put_object(bucket, key, io.BytesIO(data), len(data), content_type="text/csv")
        stat = minio.stat_object(bucket, key)
        record = _record(
            "s3:ObjectCreated:Put", key, bucket=bucket, etag=stat.etag or "", size=stat.size or 0
        )
        client = TestClient(create_app(platform, ModelServer(platform.store, platform.registry)))
        answer = client.post(
            "/v1/notifications/s3",
            json={
                "EventName": "s3:ObjectCreated:Put",
                "Key": f"{bucket}/{key}",
                "Records": [record],
            },
        )
        assert answer.status_code == 202 and len(answer.json()["published"]) == 1, answer.text
        event_id = answer.json()["published"][0]["id"]
        (envelope,) = _uploaded(platform.bus, event_id)
        assert envelope.data == DatasetUploaded(
            model="synth", key=key, size=len(data), etag=stat.etag
        )
        assert platform.store.get(envelope.data.key) == data  # ingest can read what the event names

        watcher = UploadWatcher(platform.store, platform.bus, name=f"w-{bucket}")
        assert watcher.poll_once() == 1
        watcher.stop()
        assert len(_uploaded(platform.bus, event_id)) == 2, (
            "the watcher's event has the same id: one upload"
        )

        elsewhere = client.post(
            "/v1/notifications/s3", json={"Records": [_record("s3:ObjectCreated:Put", key)]}
        )
        assert (
            elsewhere.json()["ignored"][0]["reason"]
            == f"bucket 'datasets' is not the platform's bucket {bucket!r}"
        )
    finally:
        platform.close()


@pytest.mark.kafka
def test_minio_kafka_target_messages(kafka_bus: Bus) -> None:
    topic = unique_name("minio-events")
    kafka_bus.create_topics([topic, "dataset.uploaded"])
    key = f"uploads/bikes/{uuid.uuid4().hex[:6]}.csv"
    message = {
        **SAMPLE,
        "Key": f"datasets/{key}",
        "Records": [_record("s3:ObjectCreated:Put", key, size=9)],
    }
    producer = kafka_bus.producer()
    for value in (b"not json", json.dumps(message).encode()):  # as MinIO's Kafka target sends them
        producer.send(topic, value, key=f"datasets/{key}".encode())
    producer.flush()
    producer.close()
    publisher = Publisher(kafka_bus)
    consumer = NotificationConsumer(kafka_bus, topic, publisher, group=unique_name("notify"))
    try:
        published = 0
        for _ in range(40):
            published += consumer.poll_once(0.5)
            if published:
                break
        assert published == 1
    finally:
        consumer.stop()
        publisher.close()
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}#{ETAG}"))
    (envelope,) = _uploaded(kafka_bus, event_id, timeout_s=20, want=1)
    assert envelope.data == DatasetUploaded(model="bikes", key=key, size=9, etag=ETAG)
