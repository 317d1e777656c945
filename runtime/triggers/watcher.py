"""A bucket watcher: turns uploads into callbacks for stores that cannot notify.

It polls a prefix and calls ``on_object`` once for each object it has not seen, where
"seen" means the same key *and* etag, so uploading new content under an old key counts
again. Progress is a JSON checkpoint kept in the watched store itself (it works on S3 as
on a folder), saved after every successful callback: a restarted watcher neither misses
nor repeats an object, except the one in flight during a crash (at-least-once).

Objects are handled in key order. When ``on_object`` raises, the poll stops there; that
object is retried on the next poll and nothing after it is marked seen first.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from driftline.runtime.errors import ConfigError, InvalidKeyError, ObjectNotFoundError
from driftline.runtime.store import ObjectInfo, ObjectStore

__all__ = ["BucketWatcher", "checkpoint_key"]

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "_driftline/"
_FORMAT_VERSION = 1


def checkpoint_key(name: str) -> str:
    """The conventional checkpoint key of the watcher called ``name``."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidKeyError(f"watcher name {name!r}: use one plain word, such as 'raw-uploads'")
    return f"{INTERNAL_PREFIX}watchers/{name}.json"


class BucketWatcher:
    """Poll ``prefix`` of ``store`` and call ``on_object`` for every new or changed object.

    One watcher per checkpoint: two running on the same checkpoint would both emit.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        checkpoint: str,
        on_object: Callable[[ObjectInfo], None],
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.checkpoint = checkpoint
        self.on_object = on_object
        self._seen: dict[str, str] | None = None  # key -> etag; loaded on the first poll

    def __repr__(self) -> str:
        return f"BucketWatcher({self.store!r}, prefix={self.prefix!r})"

    def poll_once(self) -> int:
        """Handle every object not seen yet; return how many. Raises what ``on_object`` raises."""
        return self._poll(None)

    def run(self, stop_event: threading.Event, interval_s: float = 5.0) -> None:
        """Poll every ``interval_s`` seconds until ``stop_event`` is set.

        Failures (a callback raising, the store unreachable) are logged and retried on the
        next poll; the loop only ends on ``stop_event``.
        """
        while not stop_event.is_set():
            try:
                self._poll(stop_event)
            except Exception:
                log.exception("%r: poll failed, retrying in %.1fs", self, interval_s)
            stop_event.wait(interval_s)

    def _poll(self, stop_event: threading.Event | None) -> int:
        seen = self._load() if self._seen is None else self._seen
        self._seen = seen
        listed: set[str] = set()
        handled = 0
        for info in self.store.list(self.prefix):
            if self._ignored(info.key):
                continue
            listed.add(info.key)
            if seen.get(info.key) == info.etag:
                continue
            if stop_event is not None and stop_event.is_set():
                return handled
            self.on_object(info)
            seen[info.key] = info.etag
            self._save()
            handled += 1
        # Forget deleted objects so the checkpoint only grows with what is in the bucket.
        gone = seen.keys() - listed
        if gone:
            for key in gone:
                del seen[key]
            self._save()
        return handled

    def _ignored(self, key: str) -> bool:
        if key == self.checkpoint:
            return True
        return key.startswith(INTERNAL_PREFIX) and not self.prefix.startswith(INTERNAL_PREFIX)

    def _load(self) -> dict[str, str]:
        try:
            raw = self.store.get(self.checkpoint)
        except ObjectNotFoundError:
            return {}
        where = self.store.uri(self.checkpoint)
        try:
            doc = json.loads(raw)
            version, prefix = doc["version"], doc["prefix"]
            seen = {str(k): str(v) for k, v in dict(doc["seen"]).items()}
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"watcher checkpoint {where} is not valid ({exc}); delete it to start over "
                "(every object under the prefix will be handled again)"
            ) from exc
        if version != _FORMAT_VERSION or prefix != self.prefix:
            raise ConfigError(
                f"watcher checkpoint {where} is for prefix {prefix!r} (format {version}), "
                f"not {self.prefix!r}: give this watcher its own checkpoint"
            )
        return seen

    def _save(self) -> None:
        doc = {"version": _FORMAT_VERSION, "prefix": self.prefix, "seen": self._seen}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        self.store.put(self.checkpoint, data, content_type="application/json")
