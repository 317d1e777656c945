"""notify: chosen events as outgoing webhooks, signed per Standard Webhooks.

Sends ``drift.detected``, ``model.deployed`` and ``model.rejected`` (setting
``notify_events`` narrows them) to every URL of ``notify_urls``; with no URL set it does
nothing. The sender lives in the runtime (:mod:`driftline.runtime.notify`); a receiver that
stays down makes the runner retry with backoff, then dead-letter the event with the reason.
"""

from __future__ import annotations

from typing import Any

from driftline.events import DriftDetected, ModelDeployed, ModelRejected
from driftline.runtime.context import Context
from driftline.runtime.function import RetryPolicy, function
from driftline.runtime.notify import NOTIFY_EVENTS, WebhookSender


def _sender(ctx: Context) -> WebhookSender | None:
    return WebhookSender.from_settings(ctx.settings) if ctx.settings is not None else None


@function(
    subscribes=NOTIFY_EVENTS,
    init=_sender,
    retry=RetryPolicy(attempts=6, initial_backoff_s=1.0, max_backoff_s=30.0, jitter_s=0.5),
    timeout_s=120,
)
def notify(event: DriftDetected | ModelDeployed | ModelRejected, ctx: Context) -> None:
    sender: Any = ctx.state
    if sender is None or ctx.event_type not in sender.events:
        return
    sent = sender.send(ctx.event_type, ctx.event_id, event.model_dump(mode="json"))
    ctx.log.info("%s %s: sent to %d receiver(s)", ctx.event_type, ctx.event_id, sent)
