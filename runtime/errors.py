"""Every error Driftline raises on purpose, under one root.

    DriftlineError                   the root [events.errors]
    ├── DecodeError                  bytes on a topic are not a valid event (topic, partition,
    │                                offset) [events.errors]
    ├── SchemaError                  an event does not match its schema / model [events.errors]
    ├── ConfigError                  settings or a spec are invalid
    ├── InvalidKeyError              an object-store key is unsafe (``..``, absolute, empty)
    ├── ObjectNotFoundError          no object under that key
    ├── StaleWriteError              a conditional write found the object changed since
    │                                it was read (another writer saved first)
    ├── HandlerError                 raised by function code
    │   ├── RetryableError           transient: the runner retries with backoff
    │   └── PermanentError           will fail the same way again: straight to the DLQ
    │       ├── ValidationError      input data is wrong (bad CSV, bad model, bad signature)
    │       │   └── CorruptModelError  a model artifact does not match its sha256, or
    │       │                        cannot be loaded for its spec's features
    │       ├── UnknownModelError    no model of that name is registered
    │       │   └── UnknownVersionError  the model has no such version
    │       ├── NotServingError      the model has no production version yet
    │       └── HandlerTimeoutError  the handler ran past its timeout [runtime.runner]
    ├── BusError                     the bus failed (broker unreachable, topic missing)
    ├── ProblemError                 an HTTP endpoint answers a status and a Problem body
    │                                [runtime.http.problems]
    ├── ClientError                  the gateway answered the client an error status
    │                                [runtime.client]
    └── WebhookRefusedError          a webhook call failed verification [runtime.http.webhooks]

A name in brackets is the module defining an error that does not live here. The root and
the contract's own errors live in the contract (:mod:`driftline.events.errors`), which
imports nothing else of Driftline's; this module re-exports them, so
``driftline.runtime.errors.DecodeError`` is the same class.

Retryable and permanent failures are different classes; a handler that wants to skip an
event returns nothing instead of raising.
"""

from __future__ import annotations

from driftline.events.errors import DecodeError, DriftlineError, SchemaError

__all__ = [
    "BusError",
    "ConfigError",
    "CorruptModelError",
    "DecodeError",
    "DriftlineError",
    "HandlerError",
    "InvalidKeyError",
    "NotServingError",
    "ObjectNotFoundError",
    "PermanentError",
    "RetryableError",
    "SchemaError",
    "StaleWriteError",
    "UnknownModelError",
    "UnknownVersionError",
    "ValidationError",
]


class ConfigError(DriftlineError):
    """Settings, a URL or a model spec are invalid."""


class InvalidKeyError(DriftlineError, ValueError):
    """An object-store key is unsafe or empty."""


class ObjectNotFoundError(DriftlineError, KeyError):
    """No object exists under the requested key."""

    def __init__(self, key: str, where: str = ""):
        self.key = key
        super().__init__(f"no object {key!r}{' in ' + where if where else ''}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class StaleWriteError(DriftlineError):
    """A conditional write (:meth:`~driftline.runtime.store.ObjectStore.put_if`) found the
    object changed since it was read: another writer saved first, and nothing was written."""

    def __init__(self, key: str, expected: str | None, found: str | None, where: str = ""):
        self.key, self.expected, self.found = key, expected, found
        super().__init__(
            f"object {key!r}{' in ' + where if where else ''} changed since it was read "
            f"(expected {'no object' if expected is None else 'etag ' + expected}, found "
            f"{'no object' if found is None else found}): another writer saved it first"
        )


class HandlerError(DriftlineError):
    """Raised by function code; subclasses say whether a retry can help."""


class RetryableError(HandlerError):
    """A transient failure (a store or broker hiccup): retried with backoff."""

    retryable = True


class PermanentError(HandlerError):
    """The same input will fail the same way: dead-lettered without retries."""


class ValidationError(PermanentError):
    """Input data is wrong: a bad CSV, a corrupt model, a wrong signature."""


class CorruptModelError(ValidationError):
    """A model artifact does not match its sha256, or cannot be loaded for its spec."""


class UnknownModelError(PermanentError):
    """No model of that name is registered."""

    def __init__(self, model: str, known: list[str] | None = None):
        self.model = model
        super().__init__(f"no model named {model!r}; known: {sorted(known or [])}")


class UnknownVersionError(UnknownModelError):
    """The model has no such version."""

    def __init__(self, model: str, version: object, registered: list[int]):
        self.model, self.version = model, version
        PermanentError.__init__(
            self, f"model {model} has no version {version!r}; registered: {registered}"
        )


class NotServingError(PermanentError):
    """The model has no production version yet: nothing can score it."""


class BusError(DriftlineError):
    """The event bus failed."""

    retryable = True
