"""Every error Driftline raises on purpose, under one root.

    DriftlineError
    ├── ConfigError              settings or a spec are invalid
    ├── DecodeError              bytes on a topic are not a valid event (topic, partition, offset)
    ├── SchemaError              an event does not match its schema / model
    ├── InvalidKeyError          an object-store key is unsafe (``..``, absolute, empty)
    ├── ObjectNotFoundError      no object under that key
    ├── HandlerError             raised by function code
    │   ├── RetryableError       transient: the runner retries with backoff
    │   └── PermanentError       will fail the same way again: straight to the DLQ
    │       └── ValidationError  input data is wrong (bad CSV, bad model, bad signature)
    └── BusError                 the bus failed (broker unreachable, topic missing)

Retryable and permanent failures are different classes; a handler that wants to skip an
event returns nothing instead of raising.
"""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every error raised by Driftline on purpose."""

    retryable: bool = False


class ConfigError(DriftlineError):
    """Settings, a URL or a model spec are invalid."""


class DecodeError(DriftlineError):
    """Bytes read from a topic are not a valid event."""

    def __init__(self, reason: str, *, topic: str = "?", partition: int = -1, offset: int = -1):
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")


class SchemaError(DriftlineError):
    """An event or schema is not what the contract says."""


class InvalidKeyError(DriftlineError, ValueError):
    """An object-store key is unsafe or empty."""


class ObjectNotFoundError(DriftlineError, KeyError):
    """No object exists under the requested key."""

    def __init__(self, key: str, where: str = ""):
        self.key = key
        super().__init__(f"no object {key!r}{' in ' + where if where else ''}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class HandlerError(DriftlineError):
    """Raised by function code; subclasses say whether a retry can help."""


class RetryableError(HandlerError):
    """A transient failure (a store or broker hiccup): retried with backoff."""

    retryable = True


class PermanentError(HandlerError):
    """The same input will fail the same way: dead-lettered without retries."""


class ValidationError(PermanentError):
    """Input data is wrong: a bad CSV, a corrupt model, a wrong signature."""


class BusError(DriftlineError):
    """The event bus failed."""

    retryable = True
