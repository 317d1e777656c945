"""Object stores: one small interface over a local folder and an S3 bucket.

- :class:`LocalStore`: a folder; writes are atomic (temp file + ``os.replace``).
- :class:`S3Store`: MinIO or any S3 server, via the ``minio`` client.

Both validate keys the same way, list in key order, and treat deleting a missing object
as a no-op, so code and tests written against :class:`ObjectStore` run on either.
:func:`open_store` builds one from a URL.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object as _S3Object
from minio.error import InvalidResponseError, S3Error, ServerError

from driftline.runtime.errors import (
    ConfigError,
    InvalidKeyError,
    ObjectNotFoundError,
    RetryableError,
    StaleWriteError,
)

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "S3Store", "open_store", "validate_key"]

_MAX_KEY_BYTES = 1024  # the S3 limit, applied everywhere so a key that works locally works on S3


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object. ``etag`` is opaque: compare it, don't parse it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise :class:`InvalidKeyError`."""
    rule = _broken_rule(key)
    if rule:
        raise InvalidKeyError(f"object key {key!r} {rule}")
    return key


def _broken_rule(key: str) -> str | None:
    if not key:
        return "is empty: give a relative path such as 'datasets/jan.csv'"
    if "\x00" in key:
        return "contains a NUL character"
    if "\\" in key:
        return "contains a backslash: separate folders with '/'"
    if key.startswith("/"):
        return "starts with '/': keys are relative to the store, drop the leading slash"
    segments = key.split("/")
    if ".." in segments or "." in segments:
        return "has a '.' or '..' segment: keys cannot point outside their folder"
    if "" in segments:
        return "has an empty segment ('//' or a trailing '/')"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > _MAX_KEY_BYTES:
        return f"is {size} bytes long: the limit is {_MAX_KEY_BYTES}"
    return None


def _check_prefix(prefix: str) -> None:
    # A prefix may end mid-segment ('data/ja') or with '/'; completing it must give a valid key.
    rule = _broken_rule(prefix + "x") if prefix else None
    if rule:
        raise InvalidKeyError(f"list prefix {prefix!r} {rule}")


class ObjectStore(abc.ABC):
    """A flat namespace of immutable-per-write objects addressed by '/'-separated keys."""

    @abc.abstractmethod
    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any previous object whole."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object's bytes; :class:`ObjectNotFoundError` if there is none."""

    @abc.abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its etag, read together (for a later :meth:`put_if`)."""

    @abc.abstractmethod
    def put_if(
        self,
        key: str,
        data: bytes,
        etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Store ``data`` only if the object is still the one read with ``etag`` (None: only
        if there is no object yet), as one atomic step; else :class:`StaleWriteError`, and
        nothing is written. A writer that keeps state this way cannot overwrite what
        another writer saved after it read."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""

    @abc.abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` and sorts after ``start_after``, by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """A URI naming the object, for messages and event payloads."""

    def download(self, key: str, path: Path) -> None:
        """Copy the object into the local file ``path`` (streamed where the store can, so a
        file bigger than memory never sits in it whole)."""
        Path(path).write_bytes(self.get(key))

    def upload(
        self, path: Path, key: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store the local file ``path`` under ``key`` (streamed where the store can)."""
        return self.put(key, Path(path).read_bytes(), content_type)

    def close(self) -> None:  # noqa: B027 (optional: only stores holding connections need it)
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalStore(ObjectStore):
    """Objects as files under ``root``. ``content_type`` is accepted and not kept."""

    _TMP_DIR = ".driftline-tmp"  # in-progress writes: same filesystem, so os.replace is atomic

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._etags: dict[str, tuple[tuple[int, int, int], str]] = {}

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == self._TMP_DIR:
            raise InvalidKeyError(
                f"object key {key!r} is under {self._TMP_DIR}/, reserved for writes"
            )
        return self.root / key

    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = self._path(key)
        tmp_dir = self.root / self._TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise InvalidKeyError(
                    f"object key {key!r} clashes with a file or folder in {self.root}: "
                    "a local store cannot hold both 'a' and 'a/b'"
                ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        st = path.stat()
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self._etags[key] = (_signature(st), etag)
        return ObjectInfo(key, st.st_size, etag, _mtime(st))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key, str(self.root)) from None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, hashlib.md5(data, usedforsecurity=False).hexdigest()

    def download(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key, str(self.root)) from None

    def upload(
        self, path: Path, key: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        target = self._path(key)
        tmp_dir = self.root / self._TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        st = target.stat()
        self._etags[key] = (_signature(st), digest.hexdigest())
        return ObjectInfo(key, st.st_size, digest.hexdigest(), _mtime(st))

    def put_if(
        self,
        key: str,
        data: bytes,
        etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        # One lock file per store: every process on this machine that writes conditionally
        # compares and replaces under it (a folder store is shared by processes of one host).
        (self.root / self._TMP_DIR).mkdir(exist_ok=True)
        with (self.root / self._TMP_DIR / "put_if.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = self._path(key)
                current = (
                    hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
                    if path.is_file()
                    else None
                )
                if current != etag:
                    raise StaleWriteError(key, etag, current, str(self.root))
                return self.put(key, data, content_type)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        keys = sorted(
            key
            for key in self._walk(self.root / prefix.rpartition("/")[0])
            if key.startswith(prefix) and (start_after is None or key > start_after)
        )
        return self._infos(keys)

    def _walk(self, base: Path) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self.root and self._TMP_DIR in dirnames:
                dirnames.remove(self._TMP_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                yield name if rel == "." else f"{rel}/{name}"

    def _infos(self, keys: Iterable[str]) -> Iterator[ObjectInfo]:
        for key in keys:
            path = self.root / key
            try:
                st = path.stat()
                yield ObjectInfo(key, st.st_size, self._etag(key, path, st), _mtime(st))
            except FileNotFoundError:  # deleted while we were listing
                continue

    def _etag(self, key: str, path: Path, st: os.stat_result) -> str:
        # Hashing every file on every listing would make a polling watcher read the whole
        # folder each time; a write always changes inode or mtime, so cache on those.
        cached = self._etags.get(key)
        if cached and cached[0] == _signature(st):
            return cached[1]
        with path.open("rb") as f:
            etag = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        self._etags[key] = (_signature(st), etag)
        return etag

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._path(key).unlink()
        self._etags.pop(key, None)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


_RETRYABLE_S3_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_CREDENTIAL_S3_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class S3Store(ObjectStore):
    """Objects in one bucket of MinIO or any S3-compatible server."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        create_bucket: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        # minio's default pool waits 5 minutes to connect and retries 5 times; fail fast
        # instead and let the runner's retry policy decide what a RetryableError is worth.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
            maxsize=10,
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key,
                secret_key,
                secure=secure,
                region=region,
                http_client=self._http,
            )
            if create_bucket:
                self._ensure_bucket(region)
        except ValueError as exc:  # minio validates endpoint and bucket names with ValueError
            self.close()
            raise ConfigError(f"S3 store {endpoint}/{bucket}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def _ensure_bucket(self, region: str | None) -> None:
        with self._errors():
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=region)
            except S3Error as exc:  # created by someone else since we looked
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        where = f"s3://{self.bucket} at {self.endpoint}"
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchKey" and key is not None:
                raise ObjectNotFoundError(key, where) from None
            if exc.code == "NoSuchBucket":
                raise ConfigError(
                    f"{where}: no such bucket (create it, or create_bucket=True)"
                ) from exc
            if exc.code in _CREDENTIAL_S3_CODES:
                raise ConfigError(f"{where}: {exc.code}: check the access key and secret") from exc
            if exc.code in _RETRYABLE_S3_CODES:
                raise RetryableError(f"{where}: {exc.code}: {exc.message}") from exc
            raise
        except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from exc

    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            result = self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        return ObjectInfo(key, len(data), (result.etag or "").strip('"'), result.last_modified)

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        validate_key(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read(), (response.headers.get("etag") or "").strip('"')
            finally:
                response.close()
                response.release_conn()

    def download(self, key: str, path: Path) -> None:
        validate_key(key)
        with self._errors(key):
            self._client.fget_object(self.bucket, key, str(path))

    def upload(
        self, path: Path, key: str, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            result = self._client.fput_object(self.bucket, key, str(path), content_type)
        size = Path(path).stat().st_size
        return ObjectInfo(key, size, (result.etag or "").strip('"'), result.last_modified)

    def put_if(
        self,
        key: str,
        data: bytes,
        etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        validate_key(key)
        condition = {"If-None-Match": "*"} if etag is None else {"If-Match": f'"{etag}"'}
        try:
            with self._errors(key):
                # S3's conditional PutObject; minio's public put_object would send these
                # headers as user metadata (x-amz-meta-...), so the plain PUT is used.
                result = self._client._put_object(
                    self.bucket, key, data, headers={"Content-Type": content_type, **condition}
                )
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                raise StaleWriteError(key, etag, "changed", f"s3://{self.bucket}") from None
            raise
        return ObjectInfo(key, len(data), (result.etag or "").strip('"'), result.last_modified)

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            with self._errors(key):
                self._client.stat_object(self.bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        objects = self._client.list_objects(
            self.bucket, prefix=prefix or None, recursive=True, start_after=start_after
        )
        return self._infos(objects)

    def _infos(self, objects: Iterable[_S3Object]) -> Iterator[ObjectInfo]:
        with self._errors():
            for obj in objects:
                if obj.object_name is None or obj.is_dir:
                    continue
                etag = (obj.etag or "").strip('"')
                yield ObjectInfo(obj.object_name, obj.size or 0, etag, obj.last_modified)

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self._client.remove_object(self.bucket, key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def close(self) -> None:
        self._http.clear()


_ACCEPTED = (
    "accepted forms: a folder path, file:///absolute/path, "
    "or s3://ACCESS:SECRET@host:port/bucket[?secure=true&region=REGION]"
)


def open_store(url: str) -> ObjectStore:
    """Open the store a URL names: a folder path, ``file:///abs/path`` or ``s3://...``."""
    parts = urlsplit(url)
    if not url:
        raise ConfigError(f"object store URL is empty; {_ACCEPTED}")
    if parts.scheme == "":
        return LocalStore(Path(url))
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
            raise _bad_url(url, "a file URL needs an absolute path and nothing else")
        return LocalStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        return _open_s3(url)
    raise _bad_url(url, f"unknown scheme {parts.scheme!r}")


def _open_s3(url: str) -> S3Store:
    parts = urlsplit(url)
    try:
        _ = parts.port  # parsing the port is what raises
    except ValueError:
        raise _bad_url(url, "the port is not a number") from None
    if not parts.hostname:
        raise _bad_url(url, "no host")
    if parts.username is None or parts.password is None:
        raise _bad_url(url, "no ACCESS:SECRET@ credentials (percent-encode '/', '@', ':' in them)")
    bucket = parts.path.strip("/")
    if not bucket or "/" in bucket:
        raise _bad_url(url, "the path must be exactly one bucket name")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"secure", "region"})
    if unknown:
        raise _bad_url(url, f"unknown query parameter(s) {', '.join(unknown)}")
    secure = query.get("secure", ["false"])[-1].lower()
    if secure not in ("true", "false", "1", "0"):
        raise _bad_url(url, f"secure={secure!r} is not true or false")
    return S3Store(
        parts.netloc.rpartition("@")[2],
        unquote(parts.username),
        unquote(parts.password),
        bucket,
        secure=secure in ("true", "1"),
        region=query.get("region", [""])[-1] or None,
    )


def _bad_url(url: str, reason: str) -> ConfigError:
    parts = urlsplit(url)
    if parts.password is not None:  # never echo a secret into logs
        url = url.replace(f":{parts.password}@", ":***@", 1)
    return ConfigError(f"object store URL {url!r}: {reason}; {_ACCEPTED}")
