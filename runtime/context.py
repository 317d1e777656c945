"""What a handler sees besides its event: stores, settings, logger, state and ``emit``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftline.events.models import Event


@dataclass
class Context:
    """Handed to every call of a function's handler (and to its init hook).

    ``state`` holds what the init hook returned (an ONNX session cache, a drift monitor).
    The ``event_*`` attributes describe the event being handled.
    """

    function: str
    store: Any = None
    """The object store (:class:`driftline.runtime.store.ObjectStore`)."""
    settings: Any = None
    registry: Any = None
    """A read view of the model registry (:class:`driftline.runtime.registry.Registry`)."""
    capabilities: Any = None
    """What this runner has (:class:`driftline.runtime.cluster.capabilities.Capabilities`)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("driftline.function"))
    state: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = ""
    event_type: str = ""
    event_time: datetime | None = None
    traceparent: str | None = None
    outputs: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        """Send an event after the handler returns (with a deterministic id)."""
        self.outputs.append(event)

    def begin(
        self, event_id: str, event_type: str, event_time: datetime | None, traceparent: str | None
    ) -> None:
        """Reset the per-event attributes (the runner calls this before each handler call)."""
        self.event_id = event_id
        self.event_type = event_type
        self.event_time = event_time
        self.traceparent = traceparent
        self.outputs = []
