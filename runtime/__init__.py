"""What a function author needs, in one import: the decorator, the context, settings, errors.

    from driftline.runtime import Context, ValidationError, function

- :func:`function` declares a handler (it attaches a spec; nothing binds to a broker), with
  :class:`RetryPolicy` for its retries;
- :class:`Context` is what a handler sees besides its event;
- :class:`Settings` are Driftline's settings (``DRIFTLINE_*``);
- :class:`Client` drives a running gateway over HTTP (the model lifecycle, the registry);
- the errors a handler raises or catches, under one root, :class:`DriftlineError`
  (the tree is drawn in :mod:`driftline.runtime.errors`).

A user's own file needs only this package and :mod:`driftline.events` (its event types
subclass ``Event``); ``driftline runner --functions ./file.py`` runs it
(:mod:`driftline.runtime.loader`).

The machinery (runner, bus, store, registry, HTTP gateway) stays in its own modules. This
package imports only the core modules named above, never ``driftline.functions`` or
``driftline.runtime.http``: the functions import it. The decorator takes the name
``function``, so reach the module itself as ``from driftline.runtime.function import ...``.
"""

from __future__ import annotations

from driftline.runtime.client import Client, ClientError
from driftline.runtime.context import Context
from driftline.runtime.errors import (
    BusError,
    ConfigError,
    DecodeError,
    DriftlineError,
    HandlerError,
    InvalidKeyError,
    ObjectNotFoundError,
    PermanentError,
    RetryableError,
    SchemaError,
    StaleWriteError,
    ValidationError,
)
from driftline.runtime.function import RetryPolicy, function
from driftline.runtime.settings import Settings

__all__ = [
    "BusError",
    "Client",
    "ClientError",
    "ConfigError",
    "Context",
    "DecodeError",
    "DriftlineError",
    "HandlerError",
    "InvalidKeyError",
    "ObjectNotFoundError",
    "PermanentError",
    "RetryPolicy",
    "RetryableError",
    "SchemaError",
    "Settings",
    "StaleWriteError",
    "ValidationError",
    "function",
]
