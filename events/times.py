"""RowTimes: a time per row of a request, carried on the wire as packed int64.

A scoring request of many rows (a replay's hour, a client's batch) has one ``event_time``;
its rows may each have their own. Avro arrays cost fastavro about half a microsecond per
element, and pydantic more per datetime, so the times travel as one Avro ``bytes`` value:
microseconds since the Unix epoch (UTC), little-endian int64, one per row, in row order.
Any Avro reader can unpack it (``numpy.frombuffer(b, "<i8")``). In JSON it is a list of
ISO 8601 timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
from pydantic_core import core_schema

from driftline.events.matrix import Packed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I8 = np.dtype("<i8")


def micros(value: Any) -> int:
    """Microseconds since the epoch of a datetime or ISO 8601 string (naive: UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:  # naive: UTC, as every Driftline timestamp
        value = value.replace(tzinfo=UTC)
    return int((value - _EPOCH) // timedelta(microseconds=1))


class RowTimes(Packed):
    """An immutable array of event times, one per row: ``.micros`` (int64 microseconds
    since the epoch, UTC)."""

    __slots__ = ("micros",)
    JSON_INPUT = core_schema.list_schema(core_schema.datetime_schema())
    INVALID = "row_times must be a list of timestamps"
    AVRO: ClassVar[dict[str, Any]] = {"type": "bytes", "driftline.encoding": "times-i64le-micros"}

    def __init__(self, micros: Any):
        array = np.array(micros, dtype="<i8")
        if array.ndim != 1:
            raise ValueError("row times must be a flat list of timestamps")
        array.flags.writeable = False
        self.micros = array

    @classmethod
    def of(cls, times: Any) -> RowTimes:
        """From datetimes or ISO 8601 strings (naive: UTC), or a ``datetime64`` array."""
        array = np.asarray(times)
        if np.issubdtype(array.dtype, np.datetime64):
            return cls(array.astype("datetime64[us]").astype(np.int64))
        return cls([micros(v) for v in times])

    @classmethod
    def from_bytes(cls, data: bytes) -> RowTimes:
        if len(data) % 8:
            raise ValueError(f"row times: {len(data)} bytes is not a whole number of int64")
        if type(data) is not bytes:
            data = bytes(data)
        micros = np.ndarray((len(data) // 8,), _I8, data)  # a read-only view: no copy
        times = cls.__new__(cls)
        times.micros = micros
        return times

    def to_bytes(self) -> bytes:
        return self.micros.tobytes()

    def seconds(self) -> np.ndarray:
        """Seconds since the epoch, as float64 (the drift monitor's clock)."""
        return self.micros / 1e6

    def datetimes(self) -> list[datetime]:
        """UTC-aware datetimes."""
        return [_EPOCH + timedelta(microseconds=int(us)) for us in self.micros.tolist()]

    def __len__(self) -> int:
        return int(self.micros.shape[0])

    def __iter__(self) -> Iterator[datetime]:
        return iter(self.datetimes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RowTimes):
            return NotImplemented
        return bool(np.array_equal(self.micros, other.micros))

    __hash__ = Packed.__hash__  # defining __eq__ would otherwise drop it

    def __repr__(self) -> str:
        return f"RowTimes({self.to_json()!r})"

    @classmethod
    def parse(cls, value: Any) -> RowTimes:
        return cls.of(value)

    def to_json(self) -> list[str]:
        return [t.isoformat() for t in self.datetimes()]
