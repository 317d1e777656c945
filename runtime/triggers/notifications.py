"""S3/MinIO bucket notifications → ``dataset.uploaded``, from a webhook or from a Kafka topic.

MinIO sends the same JSON to its webhook target (``POST /v1/notifications/s3`` here) and
to its Kafka target (read by :class:`NotificationConsumer`): ``{"EventName", "Key",
"Records": [...]}``, each record in the S3 event message structure, with the object key
URL-encoded (``+`` for a space). Every ``ObjectCreated`` record of an upload under
``uploads/<model>/`` becomes one event; other records are answered as ignored, with why.

An event's id is derived from the key and etag exactly as the bucket watcher derives it,
so an upload seen both ways is one event to the ingest function.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from driftline.events.models import DatasetUploaded
from driftline.runtime.bus.base import Bus, Consumer, TopicPartition
from driftline.runtime.http.problems import invalid, responses
from driftline.runtime.http.shared import Publisher, read_body
from driftline.runtime.store import ObjectInfo
from driftline.runtime.triggers.uploads import dataset_uploaded_for

log = logging.getLogger("driftline.s3events")
SOURCE = "driftline/s3-notifications"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class S3Object(_Loose):
    key: str = Field(description="URL-encoded object key.")
    size: int = 0
    eTag: str = ""


class S3Bucket(_Loose):
    name: str


class S3Entity(_Loose):
    bucket: S3Bucket
    object_: S3Object = Field(alias="object")


class S3Record(_Loose):
    eventName: str = Field(
        description="e.g. s3:ObjectCreated:Put (MinIO) or ObjectCreated:Put (AWS)."
    )
    s3: S3Entity


class S3Notification(_Loose):
    """A MinIO / S3 event notification message."""

    Records: list[S3Record] = Field(default_factory=list)


class Published(BaseModel):
    id: str
    model: str
    key: str


class Ignored(BaseModel):
    key: str
    reason: str


class NotificationResult(BaseModel):
    """What became of each record."""

    published: list[Published] = Field(default_factory=list)
    ignored: list[Ignored] = Field(default_factory=list)


def uploads(
    notification: S3Notification, bucket: str | None
) -> tuple[list[tuple[str, DatasetUploaded]], list[Ignored]]:
    """(event id, event) for each upload record, and the records ignored with why."""
    events, ignored = [], []
    for record in notification.Records:
        obj, key = record.s3.object_, unquote_plus(record.s3.object_.key)
        etag = obj.eTag.strip('"')
        if "ObjectCreated:" not in record.eventName:
            ignored.append(
                Ignored(key=key, reason=f"{record.eventName} is not an object-created event")
            )
        elif bucket is not None and record.s3.bucket.name != bucket:
            ignored.append(
                Ignored(
                    key=key,
                    reason=f"bucket {record.s3.bucket.name!r} is not the platform's "
                    f"bucket {bucket!r}",
                )
            )
        elif (event := dataset_uploaded_for(ObjectInfo(key, obj.size, etag))) is None:
            ignored.append(
                Ignored(
                    key=key,
                    reason="not an upload: keys must be uploads/<model>/<file>.csv|.parquet",
                )
            )
        else:  # the same id as the bucket watcher's (triggers.UploadWatcher)
            events.append((str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}#{etag}")), event))
    return events, ignored


def publish_all(
    notification: S3Notification, bucket: str | None, publisher: Publisher
) -> NotificationResult:
    found, ignored = uploads(notification, bucket)
    published = [
        Published(
            id=publisher.publish(event, event_id, source=SOURCE), model=event.model, key=event.key
        )
        for event_id, event in found
    ]
    return NotificationResult(published=published, ignored=ignored)


def router(
    publisher: Publisher, bucket: str | None, *, max_body_bytes: int, dependencies: list[Any]
) -> APIRouter:
    """``POST /v1/notifications/s3``: the target of MinIO's webhook notifications."""
    api = APIRouter(tags=["triggers"])

    @api.post(
        "/v1/notifications/s3",
        status_code=202,
        response_model=NotificationResult,
        dependencies=dependencies,
        responses=responses(401, 413, 422, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/S3Notification"}}
                },
            }
        },
    )
    async def s3_notification(request: Request) -> NotificationResult:
        """Turn S3/MinIO ObjectCreated records under uploads/<model>/ into dataset.uploaded events."""
        body = await read_body(request, max_body_bytes)
        try:
            notification = S3Notification.model_validate_json(body)
        except PydanticValidationError as exc:
            raise invalid("S3 notification", exc) from None
        return await run_in_threadpool(publish_all, notification, bucket, publisher)

    return api


class NotificationConsumer:
    """Reads the notifications MinIO's Kafka target writes to ``topic``; at least once."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        publisher: Publisher,
        *,
        bucket: str | None = None,
        group: str = "driftline.s3-notifications",
    ):
        self.bus = bus
        self.topic = topic
        self.publisher = publisher
        self.bucket = bucket
        self.group = group
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-notifications", daemon=True)

    def start(self) -> None:
        self.bus.create_topics([self.topic])
        self._thread.start()

    def poll_once(self, timeout_s: float = 0.5) -> int:
        """Publish the uploads of one batch of messages, then commit; returns events published."""
        if self._consumer is None:
            self._consumer = self.bus.consumer(self.group, [self.topic])
        offsets: dict[TopicPartition, int] = {}
        count = 0
        for r in self._consumer.poll(timeout_s):
            try:
                notification = S3Notification.model_validate(json.loads(r.value))
            except (ValueError, PydanticValidationError) as exc:
                log.warning(
                    "%s[%d]@%d: not an S3 notification, skipped: %s",
                    r.topic,
                    r.partition,
                    r.offset,
                    exc,
                )
            else:
                result = publish_all(notification, self.bucket, self.publisher)
                count += len(result.published)
                for item in result.ignored:
                    log.info("ignored %s: %s", item.key, item.reason)
            offsets[r.tp] = r.offset + 1
        if offsets:
            self._consumer.commit(offsets)
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # publish or commit failed: read again from the committed offsets
                log.warning("s3 notifications: batch failed; reading it again", exc_info=True)
                self._close()
                self._stop.wait(1.0)
        self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except Exception:
                log.debug("close failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        else:
            self._close()
