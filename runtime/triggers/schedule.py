"""Batch jobs on a schedule: the ``[[batch]]`` tables of the model specs.

Each poll reads the specs in the store (``specs/<model>.toml``) and, for every schedule
whose current period has not been asked for yet, publishes one ``batch.requested`` (the
batch function does the work, :mod:`driftline.functions.batch`). A period starts on a
multiple of ``every_hours`` from the Unix epoch, UTC, and names its job:
``<schedule>-<period start>``, so the predictions land at
``batches/<model>/<schedule>-20261205T000000Z.parquet``.

What was asked for is a JSON checkpoint in the store, saved after each publish: a restarted
``driftline up`` asks again only for a period whose publish it did not record (the event id
is derived from model, schedule and period, so the batch function drops that duplicate
while it remembers the id; a repeated job writes the same output again). A period that
passed while nothing ran is not made up: the next run is the current period's.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from driftline.events import BatchRequested, Codec
from driftline.functions.ml.spec import ModelSpec
from driftline.runtime.bus.base import Bus
from driftline.runtime.errors import ObjectNotFoundError
from driftline.runtime.store import ObjectStore
from driftline.runtime.triggers.watcher import INTERNAL_PREFIX

__all__ = ["BatchScheduler", "batch_id"]

log = logging.getLogger(__name__)

CHECKPOINT = f"{INTERNAL_PREFIX}schedules/batch.json"
_SPECS = "specs/"


def batch_id(schedule: str, period_start: float) -> str:
    """The job id of one period of a schedule: ``<schedule>-<start as 20261205T000000Z>``."""
    return f"{schedule}-{datetime.fromtimestamp(period_start, UTC):%Y%m%dT%H%M%SZ}"


class BatchScheduler:
    """Publishes ``batch.requested`` for the specs' schedules, once per period."""

    def __init__(
        self,
        store: ObjectStore,
        bus: Bus,
        *,
        clock: Callable[[], float] = time.time,
        codec: Codec | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.codec = codec or Codec()
        self.producer = bus.producer()
        self._specs: dict[str, tuple[str, ModelSpec | None]] = {}  # key -> (etag, parsed)
        self._asked: dict[str, str] | None = None  # "<model>/<schedule>" -> last batch id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> list[BatchRequested]:
        """Ask for every period due now; returns the jobs asked for."""
        if self._asked is None:
            self._asked = self._load()
        now = self.clock()
        asked: list[BatchRequested] = []
        for spec in self._read_specs():
            for schedule in spec.batch:
                period = schedule.every_hours * 3600
                job = batch_id(schedule.name, math.floor(now / period) * period)
                slot = f"{spec.name}/{schedule.name}"
                if self._asked.get(slot) == job:
                    continue
                event = BatchRequested(
                    model=spec.name, batch_id=job, key=schedule.key, chunk_rows=schedule.chunk_rows
                )
                event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"driftline:batch/{slot}/{job}"))
                value, headers = self.codec.encode(event, id=event_id, source="driftline/schedule")
                self.producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
                self.producer.flush()  # published before the checkpoint records it
                self._asked[slot] = job
                self._save()
                log.info("scheduled batch %s of %s on %s", job, spec.name, schedule.key)
                asked.append(event)
        return asked

    def _read_specs(self) -> list[ModelSpec]:
        """The specs in the store, parsed once per version; a bad one is logged and skipped."""
        specs: list[ModelSpec] = []
        listed = set()
        for info in self.store.list(_SPECS):
            if not info.key.endswith(".toml"):
                continue
            listed.add(info.key)
            known = self._specs.get(info.key)
            if known is None or known[0] != info.etag:
                try:
                    parsed: ModelSpec | None = ModelSpec.from_toml(
                        self.store.get(info.key).decode()
                    )
                except Exception as exc:  # noqa: BLE001 - one bad spec must not stop the others
                    log.warning("schedules: skipping %s: %s", self.store.uri(info.key), exc)
                    parsed = None
                known = (info.etag, parsed)
                self._specs[info.key] = known
            if known[1] is not None and known[1].batch:
                specs.append(known[1])
        for key in set(self._specs) - listed:
            del self._specs[key]
        return specs

    def _load(self) -> dict[str, str]:
        try:
            doc = json.loads(self.store.get(CHECKPOINT))
            return {str(k): str(v) for k, v in dict(doc["asked"]).items()}
        except ObjectNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError) as exc:
            log.warning(
                "schedules: checkpoint %s unreadable (%s); starting over: each schedule's "
                "current period is asked for again",
                self.store.uri(CHECKPOINT),
                exc,
            )
            return {}

    def _save(self) -> None:
        data = json.dumps({"asked": self._asked}, sort_keys=True).encode()
        self.store.put(CHECKPOINT, data, content_type="application/json")

    def run(self, interval_s: float) -> None:
        """Poll every ``interval_s`` until :meth:`stop`; failures are logged and retried."""
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("schedules: poll failed, retrying in %.0fs", interval_s)
            self._stop.wait(interval_s)

    def start(self, interval_s: float = 30.0) -> None:
        self.bus.create_topics([BatchRequested.TYPE])
        self._thread = threading.Thread(
            target=self.run, args=(interval_s,), name="batch-schedule", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.producer.close()
