"""Triggers that turn the outside world into events: object-store uploads, for now.

An upload under ``uploads/<model>/<file>.csv|.parquet`` becomes ``dataset.uploaded`` for
``<model>``; one under ``uploads/<model>/feedback/`` is labeled production data (kind
``feedback``). :class:`UploadWatcher` polls a store that cannot notify (a local folder, an
S3 server without notifications) with a saved checkpoint, so a restart neither misses nor
repeats an upload.
"""

from __future__ import annotations

import logging
import threading
import uuid

from driftline.events.codec import Codec
from driftline.events.models import DatasetUploaded
from driftline.runtime.bus.base import Bus
from driftline.runtime.store import ObjectInfo, ObjectStore
from driftline.runtime.triggers.watcher import BucketWatcher, checkpoint_key

UPLOAD_PREFIX = "uploads/"
FEEDBACK_DIR = "feedback"
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
log = logging.getLogger("driftline.triggers")


def dataset_uploaded_for(info: ObjectInfo) -> DatasetUploaded | None:
    """The event for an uploaded object, or None for objects that are not data uploads."""
    parts = info.key.split("/")
    if (
        len(parts) < 3
        or parts[0] + "/" != UPLOAD_PREFIX
        or not info.key.lower().endswith(DATA_SUFFIXES)
    ):
        return None
    feedback = len(parts) > 3 and parts[2] == FEEDBACK_DIR
    return DatasetUploaded(
        model=parts[1],
        key=info.key,
        size=info.size,
        etag=info.etag,
        kind="feedback" if feedback else "training",
    )


class UploadWatcher:
    """Publishes ``dataset.uploaded`` for each new upload found by polling the store."""

    def __init__(
        self, store: ObjectStore, bus: Bus, *, name: str = "uploads", codec: Codec | None = None
    ):
        self.bus = bus
        self.codec = codec or Codec()
        self.producer = bus.producer()
        self.watcher = BucketWatcher(store, UPLOAD_PREFIX, checkpoint_key(name), self._publish)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _publish(self, info: ObjectInfo) -> None:
        event = dataset_uploaded_for(info)
        if event is None:
            log.info("ignoring %s: not uploads/<model>/<file>.csv|.parquet", info.key)
            return
        # the id is derived from key and etag: a watcher restarted before its checkpoint was
        # saved publishes the same id again, and the ingest function drops the duplicate
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{info.key}#{info.etag}"))
        value, headers = self.codec.encode(event, id=event_id, source="driftline/watcher")
        self.producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
        self.producer.flush()  # published before the checkpoint moves past it

    def poll_once(self) -> int:
        return self.watcher.poll_once()

    def start(self, interval_s: float = 2.0) -> None:
        self.bus.create_topics([DatasetUploaded.TYPE])
        self._thread = threading.Thread(
            target=self.watcher.run,
            args=(self._stop, interval_s),
            name="upload-watcher",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.producer.close()
