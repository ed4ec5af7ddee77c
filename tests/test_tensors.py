"""Tensor JSON: bit-exact round trips and a clear refusal of every malformed input."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from seeknetic_prep.api.tensors import decode_tensor, encode_tensor
from seeknetic_prep.errors import SeekneticPrepError, TensorError


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_round_trip_is_bit_exact(dtype: str) -> None:
    rng = np.random.default_rng(7)
    arr = (rng.standard_normal((2, 3, 5)) * 100).astype(dtype)
    if dtype != "uint8":
        arr.flat[0] = np.nan
        arr.flat[1] = -0.0
    back = decode_tensor(encode_tensor(arr))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_big_endian_and_strided_inputs_are_written_little_endian_c_order() -> None:
    arr = np.arange(12, dtype=">f4").reshape(3, 4).T  # big-endian and not C-contiguous
    obj = encode_tensor(arr)
    raw = base64.b64decode(obj["data"])
    assert raw == np.ascontiguousarray(arr, dtype="<f4").tobytes()
    assert obj["shape"] == [4, 3] and obj["dtype"] == "float32"
    assert np.array_equal(decode_tensor(obj), arr)


def test_wire_format_matches_the_documented_example() -> None:
    assert encode_tensor(np.array([0, 1, 2], dtype=np.uint8)) == {
        "data": "AAEC",
        "shape": [3],
        "dtype": "uint8",
    }


def test_unsupported_dtype_is_refused_on_encode() -> None:
    with pytest.raises(TensorError, match="int64"):
        encode_tensor(np.zeros(3, dtype=np.int64))


GOOD = {"data": base64.b64encode(bytes(6)).decode(), "shape": [2, 3], "dtype": "uint8"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "!!!not base64"}, "base64"),
        ({"data": "AAE"}, "base64"),  # wrong padding
        ({"dtype": "int16"}, "dtype"),
        ({"dtype": None}, "dtype"),
        ({"shape": [2, -3]}, "shape"),
        ({"shape": [2, 1.5]}, "shape"),
        ({"shape": [True, 6]}, "shape"),
        ({"shape": "2,3"}, "shape"),
        ({"shape": [4, 3]}, "12 bytes"),
        ({"data": 17}, "base64"),
    ],
)
def test_malformed_tensors_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(TensorError, match=message) as info:
        decode_tensor({**GOOD, **change})
    assert isinstance(info.value, (SeekneticPrepError, ValueError))


def test_missing_keys_are_named() -> None:
    with pytest.raises(TensorError, match="missing shape, dtype"):
        decode_tensor({"data": ""})
