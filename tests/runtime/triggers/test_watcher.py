"""BucketWatcher on a local folder and on an S3 server: once per upload, across restarts."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from driftline.runtime.errors import ConfigError, InvalidKeyError
from driftline.runtime.store import LocalStore, ObjectInfo, ObjectStore
from driftline.runtime.triggers.watcher import BucketWatcher, checkpoint_key

CHECKPOINT = checkpoint_key("uploads")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "bucket")
    s3: ObjectStore = request.getfixturevalue("s3_store")
    return s3


class Recorder:
    """An on_object callback that records keys and can be told to fail on some."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.keys: list[str] = []
        self.fail_on = fail_on or set()

    def __call__(self, info: ObjectInfo) -> None:
        if info.key in self.fail_on:
            raise RuntimeError(f"cannot handle {info.key}")
        self.keys.append(info.key)


def watcher(store: ObjectStore, recorder: Recorder, prefix: str = "raw/") -> BucketWatcher:
    return BucketWatcher(store, prefix, CHECKPOINT, recorder)


def test_new_objects_emitted_once_in_key_order(store: ObjectStore) -> None:
    for key in ["raw/b.csv", "raw/a.csv", "other/x.csv", "raw/c/d.csv"]:
        store.put(key, key.encode())
    seen = Recorder()
    w = watcher(store, seen)
    assert w.poll_once() == 3
    assert seen.keys == ["raw/a.csv", "raw/b.csv", "raw/c/d.csv"]
    assert w.poll_once() == 0
    store.put("raw/e.csv", b"e")
    assert w.poll_once() == 1
    assert seen.keys[3:] == ["raw/e.csv"]


def test_whole_bucket_watch_skips_its_own_checkpoint(store: ObjectStore) -> None:
    store.put("a", b"a")
    seen = Recorder()
    w = watcher(store, seen, prefix="")
    assert w.poll_once() == 1
    assert store.exists(CHECKPOINT)
    assert w.poll_once() == 0
    assert seen.keys == ["a"]


def test_restart_neither_misses_nor_repeats(store: ObjectStore) -> None:
    store.put("raw/1", b"1")
    store.put("raw/2", b"2")
    first = Recorder()
    assert watcher(store, first).poll_once() == 2
    store.put("raw/3", b"3")  # uploaded while no watcher runs
    second = Recorder()
    assert watcher(store, second).poll_once() == 1
    assert first.keys + second.keys == ["raw/1", "raw/2", "raw/3"]


def test_reupload_with_new_content_is_emitted_again(store: ObjectStore) -> None:
    store.put("raw/data.csv", b"v1")
    seen = Recorder()
    w = watcher(store, seen)
    w.poll_once()
    store.put("raw/data.csv", b"v1")  # same bytes: nothing new
    assert w.poll_once() == 0
    store.put("raw/data.csv", b"v2")
    assert w.poll_once() == 1
    assert seen.keys == ["raw/data.csv", "raw/data.csv"]


def test_failing_callback_retries_that_object_and_keeps_order(store: ObjectStore) -> None:
    for key in ["raw/a", "raw/b", "raw/c"]:
        store.put(key, key.encode())
    seen = Recorder(fail_on={"raw/b"})
    w = watcher(store, seen)
    with pytest.raises(RuntimeError, match="cannot handle raw/b"):
        w.poll_once()
    assert seen.keys == ["raw/a"]  # raw/c not handled ahead of raw/b
    seen.fail_on.clear()
    assert w.poll_once() == 2
    assert seen.keys == ["raw/a", "raw/b", "raw/c"]


def test_restart_after_failure_resumes_at_the_failed_object(store: ObjectStore) -> None:
    for key in ["raw/a", "raw/b", "raw/c"]:
        store.put(key, key.encode())
    crashed = Recorder(fail_on={"raw/b"})
    with pytest.raises(RuntimeError):
        watcher(store, crashed).poll_once()
    resumed = Recorder()
    assert watcher(store, resumed).poll_once() == 2
    assert crashed.keys + resumed.keys == ["raw/a", "raw/b", "raw/c"]


def test_deleted_objects_leave_the_checkpoint(store: ObjectStore) -> None:
    store.put("raw/a", b"a")
    store.put("raw/b", b"b")
    seen = Recorder()
    w = watcher(store, seen)
    w.poll_once()
    store.delete("raw/a")
    assert w.poll_once() == 0
    assert set(json.loads(store.get(CHECKPOINT))["seen"]) == {"raw/b"}
    store.put("raw/a", b"a")  # uploaded again after deletion: a new upload
    assert w.poll_once() == 1
    assert seen.keys == ["raw/a", "raw/b", "raw/a"]


def test_run_polls_until_stopped_and_survives_failures(
    store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.put("raw/a", b"a")
    seen = Recorder(fail_on={"raw/a"})
    stop = threading.Event()
    thread = threading.Thread(target=watcher(store, seen).run, args=(stop, 0.01))
    with caplog.at_level(logging.ERROR, logger="driftline.runtime.triggers.watcher"):
        thread.start()
        try:
            _wait_for(lambda: "poll failed" in caplog.text)
            seen.fail_on.clear()
            store.put("raw/b", b"b")
            _wait_for(lambda: len(seen.keys) == 2)
        finally:
            stop.set()
            thread.join(timeout=5)
    assert not thread.is_alive()
    assert seen.keys == ["raw/a", "raw/b"]


def _wait_for(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_corrupt_checkpoint_is_a_config_error(store: ObjectStore) -> None:
    store.put(CHECKPOINT, b"{not json")
    with pytest.raises(ConfigError, match="delete it to start over"):
        watcher(store, Recorder()).poll_once()


def test_checkpoint_of_another_prefix_is_refused(store: ObjectStore) -> None:
    store.put("raw/a", b"a")
    watcher(store, Recorder(), prefix="raw/").poll_once()
    with pytest.raises(ConfigError, match="own checkpoint"):
        watcher(store, Recorder(), prefix="other/").poll_once()


def test_checkpoint_key() -> None:
    assert checkpoint_key("raw-uploads") == "_driftline/watchers/raw-uploads.json"
    for bad in ["", "a/b", ".hidden"]:
        with pytest.raises(InvalidKeyError, match="watcher name"):
            checkpoint_key(bad)
