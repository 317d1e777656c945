"""The root of every Driftline error, and the contract's own errors.

The root lives here, in the contract, because the contract imports nothing else of
Driftline's; :mod:`driftline.runtime.errors` re-exports these and draws the whole tree.
"""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every error raised by Driftline on purpose."""

    retryable: bool = False


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
