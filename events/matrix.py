"""Matrix: rows of feature values, carried on the wire as packed float64.

Avro arrays of doubles cost fastavro about half a microsecond per value, which for a
scoring event of a few rows of twenty features outweighs everything else the runner does.
So a matrix travels as one Avro ``bytes`` value: two little-endian uint32 (rows,
columns), then the values row-major as little-endian IEEE-754 float64, a missing value
as NaN. Any Avro reader can unpack that (e.g. ``numpy.frombuffer(b[8:], "<f8")``).
In JSON it is a list of lists, with null for a missing value.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_HEADER = struct.Struct("<II")
_F8 = np.dtype("<f8")


class Packed:
    """What a value that travels as one Avro ``bytes`` needs of pydantic: it is accepted as
    itself, as those bytes (from Avro) or as what :meth:`parse` takes (from JSON or Python);
    it is dumped as the bytes, or in JSON mode as :meth:`to_json`. Subclasses give
    ``from_bytes``, ``to_bytes``, ``parse``, ``to_json``, :data:`JSON_INPUT` (the JSON
    schema of what ``parse`` takes) and :data:`INVALID` (what a bad input is told)."""

    __slots__ = ()
    JSON_INPUT: ClassVar[core_schema.CoreSchema]
    INVALID: ClassVar[str]

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def parse(cls, value: Any) -> Any:
        raise NotImplementedError

    def to_json(self) -> Any:
        raise NotImplementedError

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @classmethod
    def _validate(cls, value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls.from_bytes(bytes(value))
        try:
            return cls.parse(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.INVALID} ({exc})") from None

    @staticmethod
    def _serialize(value: Packed, info: core_schema.SerializationInfo) -> Any:
        return value.to_json() if info.mode_is_json() else value.to_bytes()

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=cls.JSON_INPUT,
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls._serialize, info_arg=True
            ),
        )


class Matrix(Packed):
    """An immutable 2-D float64 array of feature rows (``.array``)."""

    __slots__ = ("array", "_bytes")
    JSON_INPUT = core_schema.list_schema(
        core_schema.list_schema(core_schema.nullable_schema(core_schema.float_schema()))
    )
    INVALID = "rows must be a list of equal-length lists of numbers or null"
    AVRO: ClassVar[dict[str, Any]] = {"type": "bytes", "driftline.encoding": "matrix-f64le"}

    def __init__(self, values: Any):
        array = np.array(values, dtype="<f8")  # None becomes NaN
        if array.size == 0:
            array = array.reshape(0, array.shape[1] if array.ndim == 2 else 0)
        if array.ndim != 2:
            raise ValueError("rows must be a list of equal-length lists of numbers")
        array.flags.writeable = False
        self.array = array
        self._bytes: bytes | None = None  # what from_bytes read, to_bytes gives back

    @classmethod
    def from_bytes(cls, data: bytes) -> Matrix:
        if len(data) < _HEADER.size:
            raise ValueError(f"matrix bytes too short ({len(data)} < {_HEADER.size})")
        rows, cols = _HEADER.unpack_from(data)
        if len(data) != _HEADER.size + rows * cols * 8:
            raise ValueError(
                f"matrix bytes: header says {rows}x{cols} but {len(data) - 8} value bytes follow"
            )
        if type(data) is not bytes:
            data = bytes(data)
        # a read-only view of the bytes: no copy, nothing to convert
        array = np.ndarray((rows, cols), _F8, data, _HEADER.size)
        matrix = cls.__new__(cls)
        matrix.array = array
        matrix._bytes = data  # rows passed on (a score's features) are written as read
        return matrix

    def to_bytes(self) -> bytes:
        if self._bytes is not None:
            return self._bytes
        return _HEADER.pack(*self.array.shape) + self.array.tobytes()

    def tolist(self) -> list[list[float | None]]:
        """Rows as lists, NaN as None (JSON has no NaN)."""
        return [[None if math.isnan(v) else v for v in row] for row in self.array.tolist()]

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __iter__(self) -> Iterator[Sequence[float]]:
        return iter(self.array)

    def __getitem__(self, i: int) -> Any:
        return self.array[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Matrix):
            return NotImplemented
        return self.array.shape == other.array.shape and bool(
            np.array_equal(self.array, other.array, equal_nan=True)
        )

    __hash__ = Packed.__hash__  # defining __eq__ would otherwise drop it

    def __repr__(self) -> str:
        return f"Matrix({self.tolist()!r})"

    @classmethod
    def parse(cls, value: Any) -> Matrix:
        return cls(value)

    def to_json(self) -> list[list[float | None]]:
        return self.tolist()
