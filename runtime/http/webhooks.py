"""Webhook triggers, signed per Standard Webhooks (https://www.standardwebhooks.com).

A hook declared in settings (``hooks``: name → event type, secret, defaults) is called as
``POST /v1/hooks/<name>`` with the headers ``webhook-id``, ``webhook-timestamp`` (Unix
seconds) and ``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256>`` entries,
signed over ``<id>.<timestamp>.<body>`` with the key in the ``whsec_<base64>`` secret).
Its JSON body, merged over the hook's defaults, is validated as the event and published.

Answers: 202 published; 401 missing, malformed, stale (timestamp further than the
tolerance from now, either way) or wrong signature; 413 body too large; 422 the payload is
not a valid event. A webhook-id already accepted is answered 200 with ``duplicate: true``
and is not published again: senders retry whatever is not 2xx, so a 409 would make a
sender whose first 202 was lost retry until it gives up and disables the endpoint. The
ids are remembered for twice the tolerance (older replays are stale anyway) in the object
store (:class:`SharedReplayGuard`), so every gateway on one store, and a restarted one,
takes an id once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from driftline.events.models import BY_TYPE
from driftline.runtime.errors import (
    ConfigError,
    DriftlineError,
    ObjectNotFoundError,
    StaleWriteError,
)
from driftline.runtime.http.problems import (
    Reason,
    bad_request,
    invalid,
    not_found,
    responses,
    unauthorized,
)
from driftline.runtime.http.shared import Publisher, read_body
from driftline.runtime.settings import HookSettings
from driftline.runtime.store import ObjectStore

SECRET_PREFIX = "whsec_"
HOOK_NAMESPACE = uuid.UUID("0b5f7f0e-3f5c-5d43-9d8e-2b1f1c9f6a52")


class WebhookRefusedError(DriftlineError):
    """A webhook call failed verification; ``reason`` is a stable word, the message says why."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def secret_key(secret: str) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret (the prefix is optional)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a webhook secret must be whsec_ followed by base64 (e.g. whsec_"
            + base64.b64encode(b"32 random bytes ................").decode()
            + ")"
        ) from None
    if len(key) < 16:
        raise ConfigError(
            f"a webhook secret must hold at least 16 bytes of key, this one has {len(key)}"
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for a message: ``v1,<base64>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float,
    now: float | None = None,
) -> str:
    """Check a call's signature; return its webhook-id or raise :class:`WebhookRefusedError`."""
    msg_id, stamp, signatures = (
        headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    missing = [
        h
        for h, v in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        )
        if not v
    ]
    if missing:
        raise WebhookRefusedError(
            Reason.MISSING_SIGNATURE,
            f"header(s) {', '.join(missing)} missing: sign calls "
            "per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)",
        )
    if not stamp.isdigit():
        raise WebhookRefusedError(
            Reason.BAD_TIMESTAMP, f"webhook-timestamp {stamp[:40]!r} is not Unix seconds"
        )
    skew = (time.time() if now is None else now) - int(stamp)
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "far in the future"
        raise WebhookRefusedError(
            Reason.STALE_TIMESTAMP,
            f"webhook-timestamp is {abs(skew):.0f}s {when}; calls "
            f"are accepted within {tolerance_s:.0f}s of now (check the sender's clock)",
        )
    expected = sign(key, msg_id, int(stamp), body).encode()
    if not any(hmac.compare_digest(s.encode(), expected) for s in signatures.split()):
        raise WebhookRefusedError(
            Reason.BAD_SIGNATURE,
            "no v1 signature in webhook-signature matches the body "
            "signed with this hook's secret (wrong secret, or the body was changed)",
        )
    return msg_id


class ReplayGuard:
    """Remembers accepted webhook-ids for ``ttl_s`` (bounded); thread-safe."""

    def __init__(self, ttl_s: float, max_ids: int = 100_000):
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, msg_id: str) -> float | None:
        """None if ``msg_id`` is new (it is now taken), else when it was first accepted."""
        now = time.time()
        with self._lock:
            while self._ids and (
                next(iter(self._ids.values())) < now - self.ttl_s or len(self._ids) > self.max_ids
            ):
                self._ids.popitem(last=False)
            first = self._ids.get(msg_id)
            if first is None:
                self._ids[msg_id] = now
            return first

    def release(self, msg_id: str) -> None:
        """Forget an id whose event could not be published, so the sender's retry goes through."""
        with self._lock:
            self._ids.pop(msg_id, None)


class SharedReplayGuard(ReplayGuard):
    """A :class:`ReplayGuard` whose ids live in the object store, under
    ``hooks/<hook>/seen/<sha256 of the id>``: the first gateway to create that object (a
    create-only write, atomic on S3 and on a folder) takes the id; every other gateway on
    the store, and this one after a restart, answers "duplicate". The in-process guard in
    front spares a store round trip for a replay to the same gateway. Ids older than the
    ttl are swept at most once per ttl. Blocking: call it from a thread."""

    def __init__(self, store: ObjectStore, ttl_s: float, max_ids: int = 100_000):
        super().__init__(ttl_s, max_ids)
        self.store = store
        self._swept = time.time()

    @staticmethod
    def key(msg_id: str) -> str:
        hook, _, webhook_id = msg_id.partition("/")
        return f"hooks/{hook}/seen/{hashlib.sha256(webhook_id.encode()).hexdigest()}"

    def claim(self, msg_id: str) -> float | None:
        first = super().claim(msg_id)
        if first is not None:
            return first
        key, now = self.key(msg_id), time.time()
        record = json.dumps({"id": msg_id, "at": now}).encode()
        self._sweep(now)
        try:
            self.store.put_if(key, record, None, "application/json")
            return None
        except StaleWriteError:
            pass
        try:
            data, etag = self.store.get_versioned(key)
        except ObjectNotFoundError:  # released (or swept) in between: take it now
            return self._take(key, record, None)
        at = float(json.loads(data)["at"])
        if at < now - self.ttl_s:  # a record past the window: the id is free again
            return self._take(key, record, etag)
        return at

    def _take(self, key: str, record: bytes, etag: str | None) -> float | None:
        try:
            self.store.put_if(key, record, etag, "application/json")
            return None
        except StaleWriteError:  # another gateway took it this very moment
            return time.time()

    def release(self, msg_id: str) -> None:
        super().release(msg_id)
        self.store.delete(self.key(msg_id))

    def _sweep(self, now: float) -> None:
        if now - self._swept < self.ttl_s:
            return
        self._swept = now
        for info in self.store.list("hooks/"):
            modified = info.last_modified
            if "/seen/" in info.key and modified and modified.timestamp() < now - self.ttl_s:
                self.store.delete(info.key)


class HookAccepted(BaseModel):
    """A webhook call taken (202), or a replay of one taken before (200, ``duplicate``)."""

    id: str = Field(
        description="Id of the published event (the same for every replay of one webhook-id)."
    )
    type: str = Field(description="Event type published.")
    duplicate: bool = Field(
        default=False, description="This webhook-id was accepted before: not published again."
    )
    detail: str = ""


class _Hook:
    def __init__(self, name: str, settings: HookSettings):
        self.name = name
        self.model = BY_TYPE[settings.event]
        self.key = secret_key(settings.secret.get_secret_value())
        self.defaults = dict(settings.defaults)

    def event(self, body: bytes) -> Any:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise bad_request(
                f"hook {self.name}: the body is not JSON ({exc})", Reason.NOT_JSON
            ) from None
        if not isinstance(payload, dict):
            raise bad_request(
                f"hook {self.name}: the body must be a JSON object", Reason.NOT_OBJECT
            )
        try:
            return self.model.model_validate({**self.defaults, **payload})
        except PydanticValidationError as exc:
            raise invalid(f"hook {self.name}: the payload as {self.model.TYPE}", exc) from None


def router(
    hooks: Mapping[str, HookSettings],
    publisher: Publisher,
    *,
    tolerance_s: float,
    max_body_bytes: int,
    store: ObjectStore | None = None,
) -> APIRouter:
    """``POST /v1/hooks/{name}`` for the hooks declared in settings; accepted ids are kept in
    ``store`` when given (shared by every gateway on it), else in this process."""
    declared = {name: _Hook(name, h) for name, h in hooks.items()}
    guard = (
        ReplayGuard(ttl_s=2 * tolerance_s)
        if store is None
        else SharedReplayGuard(store, ttl_s=2 * tolerance_s)
    )
    api = APIRouter(tags=["triggers"])

    @api.post(
        "/v1/hooks/{name}",
        status_code=202,
        response_model=HookAccepted,
        responses={
            200: {
                "model": HookAccepted,
                "description": "A replayed webhook-id: not published again.",
            },
            **responses(400, 401, 404, 413, 422, 503),
        },
    )
    async def call_hook(name: str, request: Request) -> Any:
        """Publish a signed webhook payload as the hook's event type (Standard Webhooks)."""
        hook = declared.get(name)
        if hook is None:
            raise not_found(
                f"no hook named {name!r}; declared: {sorted(declared)}", Reason.UNKNOWN_HOOK
            )
        body = await read_body(request, max_body_bytes)
        try:
            msg_id = verify(hook.key, request.headers, body, tolerance_s=tolerance_s)
        except WebhookRefusedError as exc:
            raise unauthorized(f"hook {name}: {exc}", exc.reason) from None
        event = hook.event(body)
        event_id = str(uuid.uuid5(HOOK_NAMESPACE, f"{name}/{msg_id}"))
        first = await run_in_threadpool(guard.claim, f"{name}/{msg_id}")
        if first is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first))
            return JSONResponse(
                HookAccepted(
                    id=event_id,
                    type=event.TYPE,
                    duplicate=True,
                    detail=(f"webhook-id {msg_id} was accepted at {since}; not published again"),
                ).model_dump(),
                200,
            )
        try:
            await run_in_threadpool(
                publisher.publish, event, event_id, source=f"driftline/hooks/{name}"
            )
        except BaseException:
            await run_in_threadpool(guard.release, f"{name}/{msg_id}")
            raise
        return HookAccepted(id=event_id, type=event.TYPE)

    return api
