"""ndarray <-> Seeknetic tensor JSON ``{"data": base64, "shape": [...], "dtype": "..."}``.

The wire format is the one the official SDK's ``TensorDictParam`` declares: the raw C-order
buffer, little-endian, in standard base64, with only uint8, float32 and float64 allowed.
Decoding is strict because the emulator uses it to validate uploads: a tensor whose bytes do
not add up to its shape must be refused, never reshaped into something plausible.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from seeknetic_prep.errors import TensorError

__all__ = ["DTYPES", "TensorDict", "decode_tensor", "encode_tensor", "tensor_json_bytes"]

DTYPES: dict[str, np.dtype[Any]] = {
    "uint8": np.dtype("<u1"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}


class TensorDict(TypedDict):
    data: str
    shape: list[int]
    dtype: str


def encode_tensor(arr: np.ndarray) -> TensorDict:
    """Serialize an array as tensor JSON.

    Args:
        arr: uint8, float32 or float64 array of any shape; any byte order or memory layout
            (it is written as C-order little-endian).

    Returns:
        ``{"data", "shape", "dtype"}`` ready for ``json.dumps``.

    Raises:
        TensorError: the dtype is not one the API accepts.

    >>> encode_tensor(np.arange(3, dtype=np.uint8))
    {'data': 'AAEC', 'shape': [3], 'dtype': 'uint8'}
    """
    if not isinstance(arr, np.ndarray):
        raise TensorError(f"Cannot encode {type(arr).__name__}: must be a numpy array.")
    name = arr.dtype.name
    if name not in DTYPES:
        raise TensorError(f"Cannot encode dtype {name}: must be one of {', '.join(DTYPES)}.")
    little = np.ascontiguousarray(arr, dtype=DTYPES[name])
    return {
        "data": base64.b64encode(little.data).decode("ascii"),
        "shape": [int(n) for n in arr.shape],
        "dtype": name,
    }


def tensor_json_bytes(arr: np.ndarray) -> bytes:
    """``json.dumps(encode_tensor(arr)).encode()``, byte for byte, without a JSON encoder ever
    scanning the base64 (which holds nothing to escape): the upload path's hot spot."""
    if not isinstance(arr, np.ndarray) or arr.dtype.name not in DTYPES:
        encode_tensor(arr)  # raises the same TensorError
    name = arr.dtype.name
    little = np.ascontiguousarray(arr, dtype=DTYPES[name])
    shape = ", ".join(str(int(n)) for n in arr.shape)
    return b"".join((b'{"data": "', base64.b64encode(little.data), b'", "shape": [',
                     shape.encode(), b'], "dtype": "', name.encode(), b'"}'))


def decode_tensor(obj: Mapping[str, Any]) -> np.ndarray:
    """Parse tensor JSON back into the exact array it was made from.

    Raises:
        TensorError: missing keys, bad base64, an unknown dtype, a shape that is not a list of
            non-negative integers, or a byte length that is not ``prod(shape) * itemsize``.

    >>> decode_tensor({"data": "AAEC", "shape": [3], "dtype": "uint8"}).tolist()
    [0, 1, 2]
    """
    if not isinstance(obj, Mapping):
        raise TensorError(f"Invalid tensor {type(obj).__name__}: must be an object with data, shape, dtype.")
    missing = [k for k in ("data", "shape", "dtype") if k not in obj]
    if missing:
        raise TensorError(f"Invalid tensor: missing {', '.join(missing)}.")
    dtype_name = obj["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise TensorError(f"Invalid dtype {dtype_name!r}: must be one of {', '.join(DTYPES)}.")
    shape = obj["shape"]
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise TensorError(f"Invalid shape {shape!r}: must be a list of non-negative integers.")
    data = obj["data"]
    if not isinstance(data, str):
        raise TensorError(f"Invalid data of type {type(data).__name__}: must be a base64 string.")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TensorError(f"Invalid data: not standard base64 ({exc}).") from exc
    dtype = DTYPES[dtype_name]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise TensorError(
            f"Invalid tensor: shape {list(shape)} x {dtype.itemsize} bytes ({dtype_name}) "
            f"= {expected} bytes, but data holds {len(raw)}."
        )
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    # Native byte order, writable: callers treat it as an ordinary array.
    return arr.astype(dtype.newbyteorder("="), copy=True)
