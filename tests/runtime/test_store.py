"""The ObjectStore contract, written once and run on a local folder and on an S3 server."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from driftline.runtime.errors import (
    ConfigError,
    InvalidKeyError,
    ObjectNotFoundError,
    RetryableError,
    StaleWriteError,
)
from driftline.runtime.store import LocalStore, ObjectStore, S3Store, open_store
from tests.fixtures.s3 import S3Endpoint

BAD_KEYS = [
    ("", "is empty"),
    ("/abs/key", "starts with '/'"),
    ("a/../b", "'..' segment"),
    ("..", "'..' segment"),
    ("a/./b", "'.' or '..' segment"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("a//b", "empty segment"),
    ("trailing/", "empty segment"),
    ("k" * 1025, "limit is 1024"),
]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def keys(store: ObjectStore, prefix: str = "", start_after: str | None = None) -> list[str]:
    return [info.key for info in store.list(prefix, start_after)]


class StoreContract:
    """Every ObjectStore passes these; subclasses provide the ``store`` fixture."""

    def test_files_go_in_and_out_whole(self, store: ObjectStore, tmp_path: Path) -> None:
        data = bytes(range(256)) * 5000  # 1.28 MB: more than one read of the streamed copy
        (tmp_path / "in.bin").write_bytes(data)
        info = store.upload(tmp_path / "in.bin", "files/big.bin")
        assert info.size == len(data) and store.get("files/big.bin") == data
        assert [o.etag for o in store.list("files/")] == [info.etag]
        store.download("files/big.bin", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        with pytest.raises(ObjectNotFoundError):
            store.download("files/none.bin", tmp_path / "none.bin")

    def test_round_trip(self, store: ObjectStore) -> None:
        info = store.put("datasets/jan.csv", b"a,b\n1,2\n", content_type="text/csv")
        assert (info.key, info.size, info.etag) == ("datasets/jan.csv", 8, md5(b"a,b\n1,2\n"))
        assert store.get("datasets/jan.csv") == b"a,b\n1,2\n"
        assert store.exists("datasets/jan.csv")

    def test_list_reports_what_put_returned(self, store: ObjectStore) -> None:
        info = store.put("x/y", b"payload")
        [listed] = store.list("x/")
        assert (listed.key, listed.size, listed.etag) == (info.key, info.size, info.etag)
        assert isinstance(listed.last_modified, datetime)
        assert listed.last_modified.tzinfo is not None

    def test_overwrite_replaces_whole_object(self, store: ObjectStore) -> None:
        first = store.put("k", b"first version, longer")
        second = store.put("k", b"second")
        assert store.get("k") == b"second"
        assert first.etag != second.etag
        assert [(i.key, i.size) for i in store.list()] == [("k", 6)]
        assert store.put("k", b"second").etag == second.etag

    def test_missing_key(self, store: ObjectStore) -> None:
        with pytest.raises(ObjectNotFoundError, match="no object 'nope/missing'") as err:
            store.get("nope/missing")
        assert err.value.key == "nope/missing"
        assert isinstance(err.value, KeyError)
        assert not store.exists("nope/missing")

    def test_list_sorted_with_prefix_and_start_after(self, store: ObjectStore) -> None:
        for key in ["b/2", "a/2", "c", "a/10", "ab", "a-1", "a/1"]:
            store.put(key, key.encode())
        assert keys(store) == ["a-1", "a/1", "a/10", "a/2", "ab", "b/2", "c"]
        assert keys(store, "a/") == ["a/1", "a/10", "a/2"]
        assert keys(store, "a") == ["a-1", "a/1", "a/10", "a/2", "ab"]
        assert keys(store, "a/1") == ["a/1", "a/10"]
        assert keys(store, start_after="a/2") == ["ab", "b/2", "c"]
        assert keys(store, "a/", start_after="a/1") == ["a/10", "a/2"]
        assert keys(store, start_after="c") == []
        assert keys(store, "zzz/") == []

    def test_list_empty_store(self, store: ObjectStore) -> None:
        assert keys(store) == []

    def test_unicode_keys(self, store: ObjectStore) -> None:
        store.put("données/été 2024.csv", b"x")
        store.put("données/a+b=c.csv", b"y")
        assert keys(store, "données/") == ["données/a+b=c.csv", "données/été 2024.csv"]
        assert store.get("données/été 2024.csv") == b"x"

    def test_delete(self, store: ObjectStore) -> None:
        store.put("a/1", b"1")
        store.put("a/2", b"2")
        store.delete("a/1")
        assert not store.exists("a/1")
        assert keys(store) == ["a/2"]
        with pytest.raises(ObjectNotFoundError):
            store.get("a/1")
        store.delete("a/1")  # deleting what is gone is not an error

    @pytest.mark.parametrize(
        ("key", "rule"), BAD_KEYS, ids=[k[:10] or "empty" for k, _ in BAD_KEYS]
    )
    def test_invalid_keys_rejected(self, store: ObjectStore, key: str, rule: str) -> None:
        operations: list[Callable[[], object]] = [
            lambda: store.put(key, b"x"),
            lambda: store.get(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
            lambda: store.uri(key),
        ]
        for operation in operations:
            with pytest.raises(InvalidKeyError) as err:
                operation()
            assert repr(key)[:40] in str(err.value)
            assert rule in str(err.value)
        assert keys(store) == []

    @pytest.mark.parametrize("prefix", ["/", "../", "a//", "a\\"])
    def test_invalid_prefix_rejected(self, store: ObjectStore, prefix: str) -> None:
        with pytest.raises(InvalidKeyError, match="list prefix"):
            store.list(prefix)

    def test_binary_data(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 257 + b"\x00\r\n\xff"
        store.put("blob.bin", data)
        assert store.get("blob.bin") == data

    def test_conditional_writes_fence_a_stale_writer(self, store: ObjectStore) -> None:
        """Two writers read the same state; the first to save wins, the second is refused
        with StaleWriteError and writes nothing (fencing); a create-only write refuses an
        existing object."""
        first = store.put_if("state/m/drift.json", b"v1", None)
        with pytest.raises(StaleWriteError, match="changed since it was read"):
            store.put_if("state/m/drift.json", b"other v1", None)
        data, etag = store.get_versioned("state/m/drift.json")
        assert (data, etag) == (b"v1", first.etag)
        mine, theirs = etag, etag  # both owners read v1
        saved = store.put_if("state/m/drift.json", b"v2 by the new owner", theirs)
        with pytest.raises(StaleWriteError):
            store.put_if("state/m/drift.json", b"v2 by the stalled owner", mine)
        assert store.get_versioned("state/m/drift.json") == (b"v2 by the new owner", saved.etag)
        assert store.put_if("state/m/drift.json", b"v3", saved.etag).etag == md5(b"v3")

    def test_empty_object(self, store: ObjectStore) -> None:
        info = store.put("empty", b"")
        assert (info.size, info.etag) == (0, md5(b""))
        assert store.get("empty") == b""
        assert store.exists("empty")
        assert [i.size for i in store.list()] == [0]


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "bucket")

    def test_uri(self, store: LocalStore) -> None:
        assert store.uri("a/b c.csv") == (store.root / "a/b c.csv").as_uri()
        assert store.uri("a/b c.csv").startswith("file:///")

    def test_failed_write_keeps_old_object_and_leaves_no_temp(
        self, store: LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.put("model.onnx", b"old")

        def crash(src: str, dst: str) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="disk gone"):
            store.put("model.onnx", b"new and half written")
        monkeypatch.undo()
        assert store.get("model.onnx") == b"old"
        assert list((store.root / ".driftline-tmp").iterdir()) == []

    def test_temp_files_are_not_objects(self, store: LocalStore) -> None:
        (store.root / ".driftline-tmp").mkdir()
        (store.root / ".driftline-tmp" / "tmpabc").write_bytes(b"half")
        store.put("real", b"x")
        assert keys(store) == ["real"]
        with pytest.raises(InvalidKeyError, match="reserved"):
            store.put(".driftline-tmp/x", b"x")

    def test_file_and_folder_clash(self, store: LocalStore) -> None:
        store.put("a", b"x")
        with pytest.raises(InvalidKeyError, match="clashes"):
            store.put("a/b", b"y")
        store.put("c/d", b"x")
        with pytest.raises(InvalidKeyError, match="clashes"):
            store.put("c", b"y")
        assert store.get("a") == b"x"

    def test_files_dropped_in_by_hand_are_objects(self, store: LocalStore) -> None:
        store.put("in/a.csv", b"first")
        (store.root / "in" / "a.csv").write_bytes(b"edited by hand")
        (store.root / "in" / "b.csv").write_bytes(b"copied in")
        assert [(i.key, i.etag) for i in store.list("in/")] == [
            ("in/a.csv", md5(b"edited by hand")),
            ("in/b.csv", md5(b"copied in")),
        ]


@pytest.mark.s3
class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_store: S3Store) -> S3Store:  # noqa: F811
        return s3_store

    def test_uri(self, store: S3Store) -> None:
        assert store.uri("a/b.csv") == f"s3://{store.bucket}/a/b.csv"

    def test_missing_bucket_is_a_config_error(self, s3_endpoint: S3Endpoint) -> None:  # noqa: F811
        endpoint = s3_endpoint.endpoint
        missing = S3Store(endpoint, "testing", "testing", "never-created", create_bucket=False)
        with missing as store, pytest.raises(ConfigError, match="no such bucket"):
            store.put("k", b"x")

    def test_unreachable_server_is_retryable(self) -> None:
        with socket.socket() as sock:  # bound, never listening: connections are refused
            sock.bind(("127.0.0.1", 0))
            endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
            with pytest.raises(RetryableError, match=endpoint):
                S3Store(endpoint, "testing", "testing", "bucket")
            unreachable = S3Store(endpoint, "testing", "testing", "bucket", create_bucket=False)
            with unreachable as store, pytest.raises(RetryableError):
                store.get("k")


class TestOpenStore:
    def test_plain_path(self, tmp_path: Path) -> None:
        store = open_store(str(tmp_path / "data"))
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "data").resolve()

    def test_file_url(self, tmp_path: Path) -> None:
        store = open_store((tmp_path / "my data").as_uri())
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "my data").resolve()

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("", "empty"),
            ("ftp://host/x", "unknown scheme 'ftp'"),
            ("file://otherhost/x", "absolute path"),
            ("file:relative/x", "absolute path"),
            ("s3://host:9000/bucket", "credentials"),
            ("s3://k:s@:9000/bucket", "no host"),
            ("s3://k:s@host:port/bucket", "port"),
            ("s3://k:s@host:9000", "one bucket name"),
            ("s3://k:s@host:9000/bucket/sub", "one bucket name"),
            ("s3://k:s@host:9000/bucket?secure=maybe", "secure='maybe'"),
            ("s3://k:s@host:9000/bucket?tls=1", "unknown query parameter(s) tls"),
        ],
    )
    def test_bad_urls(self, url: str, reason: str) -> None:
        with pytest.raises(ConfigError) as err:
            open_store(url)
        assert reason in str(err.value)
        assert "accepted forms" in str(err.value)

    def test_secret_is_not_echoed(self) -> None:
        with pytest.raises(ConfigError) as err:
            open_store("s3://key:sup3rs3cret@host:9000/bucket?bad=1")
        assert "sup3rs3cret" not in str(err.value)
        assert "key:***@host" in str(err.value)

    @pytest.mark.s3
    def test_s3_url(self, s3_endpoint: S3Endpoint) -> None:  # noqa: F811
        url = s3_endpoint.url("opened-by-url") + "?secure=false&region=us-east-1"
        with open_store(url) as store:
            assert isinstance(store, S3Store)
            assert (store.endpoint, store.bucket) == (s3_endpoint.endpoint, "opened-by-url")
            store.put("k", b"v")
            assert store.get("k") == b"v"
