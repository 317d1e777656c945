"""Outgoing webhooks, signed per Standard Webhooks (https://www.standardwebhooks.com): what
the ``notify`` function sends, to the URLs of the ``notify_urls`` setting.

Each call is ``POST <url>`` with the JSON body ``{"type", "timestamp", "data"}`` and the
headers ``webhook-id`` (the event's id: the same on every retry, so a receiver drops
repeats), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 with the
``notify_secret``). A receiver that cannot be reached, or answers 408, 429 or 5xx, is a
:class:`RetryableError` (the runner retries with backoff, then dead-letters the event); any
other 4xx is a :class:`PermanentError` (straight to the DLQ: retrying would not help). A URL
that took an event is not sent it again when the event is retried for another URL.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from driftline.runtime.errors import ConfigError, PermanentError, RetryableError
from driftline.runtime.settings import NOTIFY_EVENTS as NOTIFY_EVENTS  # for functions/notify.py

RETRYABLE_STATUSES = frozenset({408, 425, 429})
_KEEP = 10_000


class WebhookSender:
    """Signs and sends events to ``urls``; only ``events`` types are sent."""

    def __init__(
        self,
        urls: Sequence[str],
        secret: str,
        *,
        events: Sequence[str],
        timeout_s: float = 10.0,
    ):
        self.urls, self.events = list(urls), frozenset(events)
        self._signer = Webhook(secret)
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._delivered: OrderedDict[str, set[str]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookSender | None:
        """The sender the settings ask for; None when no URL is set (notify does nothing)."""
        urls = list(getattr(settings, "notify_urls", None) or [])
        if not urls:
            return None
        if settings.notify_secret is None:
            raise ConfigError(
                "notify_urls is set but notify_secret is not: set DRIFTLINE_NOTIFY_SECRET to a "
                "Standard Webhooks secret (whsec_<base64 key>) the receivers verify with"
            )
        try:
            return cls(
                urls,
                settings.notify_secret.get_secret_value(),
                events=settings.notify_events,
                timeout_s=settings.notify_timeout_s,
            )
        except Exception as exc:  # standardwebhooks rejects a secret that is not base64
            raise ConfigError(f"notify_secret: not a Standard Webhooks secret ({exc})") from None

    def close(self) -> None:
        self._http.close()

    def send(self, event_type: str, event_id: str, data: dict[str, Any]) -> int:
        """Send to every URL not yet sent this event; how many took it now. Raises
        :class:`RetryableError` / :class:`PermanentError` naming each URL that did not."""
        done = self._delivered.setdefault(event_id, set())
        self._delivered.move_to_end(event_id)
        while len(self._delivered) > _KEEP:
            self._delivered.popitem(last=False)
        now = datetime.now(UTC)
        body = json.dumps({"type": event_type, "timestamp": now.isoformat(), "data": data})
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(event_id, now, body),
        }
        retry, refused, sent = [], [], 0
        for url in (u for u in self.urls if u not in done):
            try:
                answer = self._http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                retry.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            if answer.is_success:
                done.add(url)
                sent += 1
            elif answer.status_code >= 500 or answer.status_code in RETRYABLE_STATUSES:
                retry.append(f"{url}: answered {answer.status_code}")
            else:
                refused.append(f"{url}: answered {answer.status_code} {answer.text[:200]}")
        if retry:
            raise RetryableError(f"{event_type} {event_id} not delivered: {'; '.join(retry)}")
        if refused:
            raise PermanentError(f"{event_type} {event_id} refused: {'; '.join(refused)}")
        return sent
