"""The Open Inference Protocol (KServe v2) on the wire: messages, tensors, the binary extension.

JSON tensors carry ``data`` row-major, flat or nested. With the binary tensor data
extension (what ``tritonclient`` sends by default) the body is the JSON header, whose
length is in the ``Inference-Header-Content-Length`` header, followed by the raw
little-endian bytes of each input whose ``parameters.binary_data_size`` says how many;
outputs come back the same way when the request asks for ``binary_data_output`` (or
``binary_data`` per output).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from driftline.runtime.http.problems import Reason, bad_request, field_problems

HEADER_LENGTH = "inference-header-content-length"
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(t).newbyteorder("<")
    for name, t in (
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
    )
}
_NAMES = {dt.str: name for name, dt in DTYPES.items()}


class _Message(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class TensorMetadata(_Message):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class ModelMetadata(_Message):
    name: str
    versions: list[str] = Field(
        description="Registered versions; the production one is served unversioned."
    )
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ServerMetadata(_Message):
    name: str
    version: str
    extensions: list[str]


class RequestInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        default=None, description="Row-major values; absent with binary data."
    )


class RequestOutput(_Message):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Message):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(_Message):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def parse_request(
    body: bytes, header_length: str | None
) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """The request and its input tensors by name; a 400 naming what is wrong otherwise."""
    size = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad_request(
                f"Inference-Header-Content-Length {header_length!r} is not a length "
                f"within the {len(body)}-byte body",
                Reason.BAD_HEADER,
            )
        size = int(header_length)
    try:
        request = InferenceRequest.model_validate_json(body[:size])
    except PydanticValidationError as exc:
        fields = field_problems(exc)
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise bad_request(
                f"the inference request is not JSON: {fields[0].message}", Reason.NOT_JSON
            ) from None
        named = "; ".join(f"{f.field or '(body)'}: {f.message}" for f in fields)
        raise bad_request(
            f"the inference request is invalid: {named}", Reason.INVALID, fields=fields
        ) from None
    arrays, offset = {}, size
    for tensor in request.inputs:
        if tensor.name in arrays:
            raise bad_request(f"input {tensor.name!r} is given twice", Reason.BAD_INPUTS)
        arrays[tensor.name], offset = _tensor(tensor, body, offset)
    if offset != len(body):
        raise bad_request(
            f"{len(body) - offset} bytes of binary data follow the inputs unclaimed "
            "(check each input's binary_data_size)",
            Reason.BAD_BINARY,
        )
    return request, arrays


def _tensor(tensor: RequestInput, body: bytes, offset: int) -> tuple[np.ndarray, int]:
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise bad_request(
            f"input {tensor.name!r}: datatype {tensor.datatype} cannot be scored; "
            f"use one of {', '.join(DTYPES)}",
            Reason.BAD_DATATYPE,
        )
    if any(d < 0 for d in tensor.shape):
        raise bad_request(
            f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension",
            Reason.BAD_SHAPE,
        )
    count = math.prod(tensor.shape)
    nbytes = (tensor.parameters or {}).get("binary_data_size")
    if nbytes is not None:
        if (
            not isinstance(nbytes, int)
            or nbytes != count * dtype.itemsize
            or offset + nbytes > len(body)
        ):
            raise bad_request(
                f"input {tensor.name!r}: binary_data_size {nbytes!r} does not fit shape "
                f"{tensor.shape} of {tensor.datatype} and the body",
                Reason.BAD_BINARY,
            )
        return np.frombuffer(body, dtype, count, offset).reshape(tensor.shape), offset + nbytes
    if tensor.data is None:
        raise bad_request(
            f"input {tensor.name!r} has no data and no binary_data_size", Reason.NO_DATA
        )
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(
            f"input {tensor.name!r}: data is not {tensor.datatype} values in a "
            f"row-major list ({exc})",
            Reason.BAD_DATA,
        ) from None
    if array.size != count:
        raise bad_request(
            f"input {tensor.name!r}: shape {tensor.shape} needs {count} values, "
            f"data has {array.size}",
            Reason.BAD_SHAPE,
        )
    return array.reshape(tensor.shape), offset


def features(arrays: dict[str, np.ndarray], input_name: str, names: list[str]) -> np.ndarray:
    """An (N, features) float32 matrix from the one ``input_name`` tensor, [N, n] (or [n]),
    or from one [N] tensor per feature, named after it. Any other input name is refused."""
    n = len(names)
    if set(arrays) == set(names) and (n > 1 or arrays[names[0]].ndim == 1):
        shapes = {f: list(arrays[f].shape) for f in names}
        columns = [arrays[f].reshape(-1) for f in names]
        if (
            any(len(s) > 2 or s[1:] not in ([], [1]) for s in shapes.values())
            or len({len(c) for c in columns}) != 1
        ):
            raise bad_request(
                f"per-feature inputs must each be [N] or [N, 1] with one N; got {shapes}",
                Reason.BAD_SHAPE,
            )
        return np.stack(columns, axis=1).astype(np.float32, copy=False)
    if set(arrays) != {input_name}:
        unknown = sorted(set(arrays) - {input_name, *names})
        said = f"the model has no input(s) {unknown}; " if unknown else ""
        raise bad_request(
            f"{said}send one input {input_name!r} of shape [N, {n}] (features "
            f"{', '.join(names)} in that order) or one [N] input per feature; got {sorted(arrays)}",
            Reason.BAD_INPUTS,
        )
    x = arrays[input_name]
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != n:
        raise bad_request(
            f"input {input_name!r} has shape {list(x.shape)}; the model takes [N, {n}] "
            f"(features {', '.join(names)})",
            Reason.BAD_SHAPE,
        )
    return x.astype(np.float32, copy=False)


def binary_outputs(request: InferenceRequest) -> set[str] | bool:
    """True for all outputs in binary, else the names asked for in binary."""
    if (request.parameters or {}).get("binary_data_output") is True:
        return True
    return {
        o.name for o in request.outputs or () if (o.parameters or {}).get("binary_data") is True
    }


def encode(
    head: dict[str, Any], outputs: dict[str, np.ndarray], binary: set[str] | bool
) -> tuple[bytes, dict[str, str]]:
    """An :class:`InferenceResponse` body (``head`` holds model_name, model_version, id) and
    its headers; outputs named in ``binary`` travel as raw bytes after the JSON.

    Built as plain dicts: on the scoring path a pydantic round trip costs more than the model.
    """
    chunks: list[bytes] = []
    tensors = []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype(array),
        }
        if binary is True or (binary and name in binary):  # type: ignore[operator]
            chunks.append(_raw(array, tensor["datatype"]))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    doc = {k: v for k, v in head.items() if v is not None}
    header = pydantic_core.to_json({**doc, "outputs": tensors})  # a third of json.dumps' time
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def datatype(array: np.ndarray) -> str:
    """The protocol datatype of predictions: numbers keep theirs, anything else is BYTES."""
    return (
        _NAMES.get(array.dtype.newbyteorder("<").str, "BYTES")
        if array.dtype.kind in "biuf"
        else "BYTES"
    )


def _raw(array: np.ndarray, dtype_name: str) -> bytes:
    if dtype_name != "BYTES":
        return np.ascontiguousarray(array, DTYPES[dtype_name]).tobytes()
    items = [str(v).encode() for v in array.reshape(-1)]
    return b"".join(struct.pack("<I", len(b)) + b for b in items)
